"""Atomic writes: readers and retries see either the old artifact or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as JSON next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def tmp_sibling(final: Path) -> Path:
    """A fresh temporary path beside ``final`` (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory ``tmp`` to ``final``, replacing what was there.

    ``os.rename`` cannot replace a non-empty directory, so the old one is renamed aside first and
    removed only after the new one is in place.
    """
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clear_stale_tmp(final: Path) -> None:
    """Remove temporary siblings a killed writer of ``final`` left behind (one writer per partition)."""
    if final.parent.exists():
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``final``, on error it is removed."""
    clear_stale_tmp(final)
    tmp = tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)
