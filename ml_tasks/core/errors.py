"""Exceptions that name the problem, so a failed task's log says what to fix."""

from __future__ import annotations


class KilnError(Exception):
    """Base class for errors a user can act on (bad input, bad parameter, missing artifact)."""


class ValidationFailed(KilnError):
    """A data partition broke one or more validation rules; ``failures`` lists ``(column, rule, detail)``."""

    def __init__(self, partition: str, failures: list[tuple[str, str, str]]):
        self.partition = partition
        self.failures = failures
        lines = [f"  - column '{col}': rule '{rule}' failed: {detail}" for col, rule, detail in failures]
        super().__init__(f"validation failed for partition {partition}:\n" + "\n".join(lines))


class StageSkipped(KilnError):
    """A stage cannot run in this environment; the message says why. The CLI exits with SKIP_EXIT_CODE."""


SKIP_EXIT_CODE = 99
BAD_INPUT_EXIT_CODE = 2  # KilnError or ValueError: a retry would fail the same way


def failure_reason(output: str) -> str:
    """From a stage's last output lines: its ``ERROR:`` / ``SKIPPED:`` message (with the detail lines that
    follow it, e.g. every broken validation rule), else its last line."""
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    marked = [i for i, ln in enumerate(lines) if ln.startswith(("ERROR:", "SKIPPED:"))]
    if not marked:
        return lines[-1] if lines else ""
    first, *rest = lines[marked[-1]:]
    return "\n".join([first.removeprefix("ERROR: ").removeprefix("SKIPPED: "), *rest])
