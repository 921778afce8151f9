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
