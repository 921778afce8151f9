"""Atomic writes with concurrent writers and killed writers, as separate real processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ml_tasks.core.atomic import LOCK_NAME, atomic_dir, folder_lock

WRITER = """
import sys
from pathlib import Path
from ml_tasks.core.atomic import atomic_dir
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


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)  # a classic POSIX record lock on byte 0: what another NFS client's lock is to the server
print("held", flush=True)
sys.stdin.readline()
"""


def test_publishing_waits_for_a_record_lock_on_the_folder_s_lock_file_held_by_another_process(tmp_path):
    """On NFS every lock is a record lock on a file opened for writing (flock on a folder opened read-only is
    EBADF there, or node-local): the publish lock must be one, so that another process's (another node's)
    record lock on ``<folder>/.lock`` excludes it."""
    final = tmp_path / "features"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / LOCK_NAME)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    done = threading.Event()

    def write() -> None:
        with atomic_dir(final) as tmp:
            (tmp / "part-1").write_text("new")
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not done.wait(1.5), "published while another process held the folder's lock"
        assert not final.exists()
    finally:
        holder.communicate("go\n", timeout=30)
    writer.join(30)
    assert done.is_set() and [p.read_text() for p in final.iterdir()] == ["new"]


def test_two_threads_of_one_process_exclude_each_other(tmp_path):
    """Record locks are per process; these are per open file description, so threads exclude each other too."""
    order: list[str] = []
    with folder_lock(tmp_path):
        with folder_lock(tmp_path, blocking=False) as free:
            assert not free
        def take() -> None:
            with folder_lock(tmp_path):
                order.append("other")

        other = threading.Thread(target=take)
        other.start()
        time.sleep(0.3)
        order.append("first")
    other.join(10)
    assert order == ["first", "other"]


def test_a_live_writer_in_the_same_process_keeps_its_temporary(tmp_path):
    """Cleanup in one thread never takes a temporary another thread of the same process is writing."""
    final = tmp_path / "features"
    with atomic_dir(final) as outer:
        (outer / "part-1").write_text("outer")
        with atomic_dir(final) as inner:
            (inner / "part-1").write_text("inner")
        assert outer.exists()
    assert [p.read_text() for p in final.iterdir()] == ["outer"] and litter(final) == []


WRITER_SYNCED = """
import sys
from pathlib import Path
from ml_tasks.core.atomic import atomic_dir, write_json
final = Path(sys.argv[1])
with atomic_dir(final) as tmp:
    (tmp / "sub").mkdir()
    (tmp / "sub" / "part-0").write_text("a")
    (tmp / "part-1").write_text("b")
    print("tmp", tmp, flush=True)
write_json(final.parent / "state.json", {"v": 1})
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (scripts/system_deps.sh installs it)")
def test_files_and_their_folders_are_fsynced_before_the_rename_that_publishes_them(tmp_path):
    """The order of the writer's real system calls: every file and folder of a temporary fsynced, then the
    rename, then the parent folder fsynced; the same for a JSON file."""
    root = tmp_path.resolve()
    final, trace = root / "features", root / "trace.txt"
    out = subprocess.run(["strace", "-f", "-y", "-o", str(trace), "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                          sys.executable, "-c", WRITER_SYNCED, str(final)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tmp = out.stdout.split("tmp ", 1)[1].split()[0]
    calls: list[tuple[str, str]] = []  # (call, path) in order
    for line in trace.read_text().splitlines():
        if m := re.search(r"\b(f(?:data)?sync)\(\d+<([^>]*)>\)\s*=\s*0", line):
            calls.append(("fsync", m.group(2)))
        elif m := re.search(r"\brename(?:at2?)?\((?:AT_FDCWD(?:<[^>]*>)?, )?\"([^\"]+)\", (?:AT_FDCWD(?:<[^>]*>)?, )?\"([^\"]+)\"", line):
            calls.append(("rename", f"{m.group(1)} -> {m.group(2)}"))

    def index(call: tuple[str, str]) -> int:
        assert call in calls, f"{call} not among {calls}"
        return calls.index(call)

    publish = index(("rename", f"{tmp} -> {final}"))
    for path in (f"{tmp}/part-1", f"{tmp}/sub/part-0", f"{tmp}/sub", tmp):
        assert index(("fsync", path)) < publish, path
    assert ("fsync", str(root)) in calls[publish:]
    state = next(i for i, (call, what) in enumerate(calls) if call == "rename" and what.endswith(f" -> {root}/state.json"))
    written = calls[state][1].split(" -> ")[0]
    assert index(("fsync", written)) < state and ("fsync", str(root)) in calls[state:]
