"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies, so a SIGKILLed task orphans nothing.

    Children run in sessions of their own (so a whole role or stage can be signalled as a group),
    which is exactly what hides them from a kill of the parent's group: this closes that gap.
    """
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_recorded(pids: dict[str, int], marker: str) -> list[str]:
    """SIGKILL the process groups of recorded pids still running a command containing ``marker``.

    The check of the command line keeps a recycled pid (another program now) from being killed.
    """
    killed = []
    for name, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(name)
            except ProcessLookupError:
                pass
    return killed
