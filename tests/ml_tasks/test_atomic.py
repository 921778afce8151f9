"""Atomic writes with concurrent writers and killed writers, as separate real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ml_tasks.atomic import atomic_dir

WRITER = """
import sys
from pathlib import Path
from ml_tasks.atomic import atomic_dir
final, tag = Path(sys.argv[1]), sys.argv[2]
with atomic_dir(final) as tmp:
    (tmp / "part-1").write_text(tag)
    print("half", flush=True)
    sys.stdin.readline()  # the test decides when this writer goes on
    (tmp / "part-2").write_text(tag)
print("done", flush=True)
"""


def start_writer(final: Path, tag: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), tag], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "half"
    return proc


def litter(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir() if p.name.startswith(f".{final.name}."))


def test_a_second_writer_never_deletes_a_live_writers_temporary_and_the_last_wins_whole(tmp_path):
    final = tmp_path / "features"
    slow = start_writer(final, "slow")
    with atomic_dir(final) as tmp:  # the other run of the same partition, start to finish meanwhile
        (tmp / "part-1").write_text("fast")
        (tmp / "part-2").write_text("fast")
    assert len(litter(final)) == 1, "the live writer's temporary must survive the other writer's cleanup"
    assert [p.read_text() for p in sorted(final.iterdir())] == ["fast", "fast"]
    slow.communicate("go\n", timeout=30)
    assert slow.returncode == 0
    assert [p.read_text() for p in sorted(final.iterdir())] == ["slow", "slow"]  # one writer whole, never a mix
    assert litter(final) == []


def test_a_killed_writers_leftovers_are_removed_by_the_next_writer(tmp_path):
    final = tmp_path / "features"
    with atomic_dir(final) as tmp:
        (tmp / "part-1").write_text("old")
    killed = start_writer(final, "killed")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert len(litter(final)) == 1  # what a SIGKILL leaves
    assert [p.read_text() for p in final.iterdir()] == ["old"]  # readers still see the old version whole
    with atomic_dir(final) as tmp:
        (tmp / "part-1").write_text("new")
    assert litter(final) == [] and [p.read_text() for p in final.iterdir()] == ["new"]
