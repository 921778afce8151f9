"""Atomic writes: readers and retries see either the old artifact or the new one, never half of one.

Safe for concurrent writers of the same target (two runs of one partition, a retry racing a
zombie), also from pods on other nodes sharing a ``ReadWriteMany`` (NFS) volume: the rename that
publishes is serialised by a lock on the parent folder, so the last writer wins whole and no ``.old-*``
folder is left behind; each writer holds a lock naming its own temporary folder while it writes, so
cleanup removes only temporaries whose writer is gone.

Locks are fcntl record locks on a regular file, ``<folder>/.lock``, opened for writing: NFS v4 carries
them to the server, across clients (``flock`` there is a POSIX lock that needs a writable file, or a
node-local one with ``local_lock=flock``). They are open-file-description locks (``F_OFD_SETLKW``), so
two threads or two opens in one process exclude each other as they would in two processes, and closing
one descriptor never drops another's lock. Byte 0 is the folder's publish lock; a temporary's writer
holds one byte chosen by the temporary's name. Readers never see the lock file: it is a dot file, as
are the temporaries, and no reader lists dot files.

Files and folders are fsynced before the rename that publishes them, and the folder after it, so a
crash of the node never publishes a name whose contents were still in its page cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"
LOCK_NAME = ".lock"  # in every folder something is published into (and the registry's model folder)
_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)


def write_json(path: Path, payload: Any, mode: int | None = None) -> Path:
    """Write ``payload`` as JSON next to ``path`` and rename it into place (``mode``: e.g. 0o600 for secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if mode is not None:
        os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
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


def _record_lock(fd: int, kind: int, byte: int, blocking: bool = True) -> bool:
    """Set an open-file-description record lock (``F_WRLCK``/``F_UNLCK``) on one byte of ``fd``'s file;
    False when non-blocking and another description holds it."""
    cmd = fcntl.F_OFD_SETLKW if blocking else fcntl.F_OFD_SETLK
    try:
        fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, byte, 1, 0))
    except OSError as exc:
        if not blocking and exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _open_lock_file(folder: Path) -> int:
    return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)


@contextlib.contextmanager
def _publish_lock(folder: Path) -> Iterator[int]:
    """``folder_lock``, yielding the lock file's descriptor (to probe writers' bytes with)."""
    fd = _open_lock_file(folder)
    try:
        _record_lock(fd, fcntl.F_WRLCK, 0)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold ``folder``'s exclusive lock (byte 0 of ``<folder>/.lock``); yields False when non-blocking and taken.

    Excludes every other holder: another process, another node on the same NFS volume, another thread.
    """
    fd = _open_lock_file(folder)
    try:
        yield _record_lock(fd, fcntl.F_WRLCK, 0, blocking)
    finally:
        os.close(fd)  # releases this description's locks, and only them


def _live_byte(tmp: Path) -> int:
    """The byte of the parent's lock file that ``tmp``'s writer holds while it writes (never 0)."""
    return 1 + int.from_bytes(hashlib.sha256(tmp.name.encode()).digest()[:6], "big")


def fsync_dir(folder: Path) -> None:
    """Make the names in ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(top: Path) -> None:
    """fsync every file and folder under ``top`` (deepest first), then ``top``: all of it is on disk before it is published."""
    for folder, _, files in os.walk(top, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear_stale_tmp(final: Path) -> list[Path]:
    """Remove what dead writers of ``final`` left behind; a live writer's temporary is never touched.

    A temporary whose writer's byte can be locked has no writer any more (a killed process drops its
    locks). ``.old-*`` folders exist only inside the publish lock, so outside it they are always stale.
    """
    removed: list[Path] = []
    if not final.parent.exists():
        return removed
    with _publish_lock(final.parent) as fd:
        for stale in final.parent.glob(f".{final.name}{TMP_MARK}*"):
            if stale.is_dir():
                byte = _live_byte(stale)
                if not _record_lock(fd, fcntl.F_WRLCK, byte, blocking=False):
                    continue  # its writer is alive
                _record_lock(fd, fcntl.F_UNLCK, byte)
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
    parent's lock makes the two renames and the removal one step for every other writer. Everything
    in ``tmp`` is fsynced first, the parent after the renames.
    """
    _fsync_tree(tmp)
    with folder_lock(final.parent):
        old = None
        if final.exists():
            old = final.parent / f".{final.name}{OLD_MARK}{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            _remove(old)


def link_snapshot(source: Path, final: Path) -> Path:
    """Publish at ``final`` a snapshot of the folder ``source`` as hard links (no data copied).

    Taken under ``source``'s publish lock, so it is one whole version of ``source``; a later
    replacement of ``source`` leaves the snapshot's files (same inodes) untouched.
    """
    with atomic_dir(final) as tmp, folder_lock(source.parent):
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
    live = _open_lock_file(final.parent)  # held open until the end: this writer's mark on its temporary
    try:
        with folder_lock(final.parent):  # cleanup holds this lock too: it never sees the folder unmarked
            _record_lock(live, fcntl.F_WRLCK, _live_byte(tmp))
            tmp.mkdir()
        try:
            yield tmp
            replace_dir(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
    finally:
        os.close(live)
