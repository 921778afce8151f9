"""Atomic writes: readers and retries see either the old artifact or the new one, never half of one.

Safe for concurrent writers of the same target (two runs of one partition, a retry racing a
zombie): each writer holds an exclusive ``flock`` on its own temporary folder while it writes, so
cleanup removes only temporaries whose writer is gone; the rename that publishes is serialised by a
lock on the parent folder, so the last writer wins whole and no ``.old-*`` folder is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


def write_json(path: Path, payload: Any, mode: int | None = None) -> Path:
    """Write ``payload`` as JSON next to ``path`` and rename it into place (``mode``: e.g. 0o600 for secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if mode is not None:
        os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def content_digest(files: Iterable[Path]) -> str:
    """SHA-256 over the files' bytes, in the order given, read in 1 MiB chunks (memory stays flat)."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tmp_sibling(final: Path) -> Path:
    """A fresh temporary path beside ``final`` (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".{final.name}{TMP_MARK}{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (a file or folder); yields False when non-blocking and taken."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear_stale_tmp(final: Path) -> list[Path]:
    """Remove what dead writers of ``final`` left behind; a live writer's temporary is never touched.

    A temporary whose lock can be taken has no writer any more (a killed process drops its locks).
    ``.old-*`` folders exist only inside the publish lock, so outside it they are always stale.
    """
    removed: list[Path] = []
    if not final.parent.exists():
        return removed
    with _flock(final.parent):
        for stale in final.parent.glob(f".{final.name}{TMP_MARK}*"):
            if stale.is_dir():
                with _flock(stale, blocking=False) as free:
                    if not free:
                        continue
            elif _younger_than(stale, 3600):
                continue  # a file temporary has no lock: leave young ones to their writer
            _remove(stale)
            removed.append(stale)
        for stale in final.parent.glob(f".{final.name}{OLD_MARK}*"):
            _remove(stale)
            removed.append(stale)
    return removed


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except FileNotFoundError:
        return True


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory ``tmp`` to ``final``, replacing what was there.

    ``os.rename`` cannot replace a non-empty directory, so the old one is renamed aside first; the
    parent's lock makes the two renames and the removal one step for every other writer.
    """
    with _flock(final.parent):
        old = None
        if final.exists():
            old = final.parent / f".{final.name}{OLD_MARK}{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            _remove(old)


def link_snapshot(source: Path, final: Path) -> Path:
    """Publish at ``final`` a snapshot of the folder ``source`` as hard links (no data copied).

    Taken under ``source``'s publish lock, so it is one whole version of ``source``; a later
    replacement of ``source`` leaves the snapshot's files (same inodes) untouched.
    """
    with atomic_dir(final) as tmp, _flock(source.parent):
        for path in sorted(source.rglob("*")):
            target = tmp / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another filesystem: copy instead
                shutil.copy2(path, target)
    return final


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``final``, on error it is removed."""
    clear_stale_tmp(final)
    tmp = tmp_sibling(final)
    with _flock(final.parent):  # cleanup holds this lock too: it never sees the folder unlocked
        tmp.mkdir()
        live = os.open(tmp, os.O_RDONLY)
        fcntl.flock(live, fcntl.LOCK_EX)  # marks the temporary as live for other writers' cleanup
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        os.close(live)
