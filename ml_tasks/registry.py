"""A file-based model registry: one version per partition, a champion chosen against a baseline, rollback.

Layout under ``<registry_root>/<model_name>/``: ``versions/<ds>/`` (artifacts, metrics, lineage) and
``registry.json`` (every version's decision, the rolled-back list, the champion). The promotion rule
is order-independent so backfills and reruns agree: version ``ds`` is promoted when it is blessed and
beats the newest promoted version older than ``ds`` by ``margin`` in AUC (or there is none). The
champion is the newest promoted version that was not rolled back. Rerunning a day rewrites that day's
version and its decision only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_tasks.atomic import atomic_dir, read_json, write_json
from ml_tasks.errors import KilnError
from ml_tasks.layout import PROJECT_ROOT

log = logging.getLogger(__name__)
STATE_FILE = "registry.json"


@contextlib.contextmanager
def _locked(model_root: Path) -> Iterator[dict[str, Any]]:
    """Hold the registry lock; yield the state; write it back atomically on success."""
    model_root.mkdir(parents=True, exist_ok=True)
    with open(model_root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = model_root / STATE_FILE
        state = read_json(path) if path.exists() else {"versions": {}, "rolled_back": [], "champion": None}
        yield state
        state["champion"] = _champion(state)
        write_json(path, state)


def _champion(state: dict[str, Any]) -> str | None:
    promoted = [v for v, rec in state["versions"].items() if rec["promoted"] and v not in state["rolled_back"]]
    return max(promoted) if promoted else None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def register(
    evaluation_path: Path,
    registry_root: Path,
    model_name: str,
    ds: str,
    transform_dir: Path,
    margin: float = 0.0,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register the evaluation's best candidate as version ``ds`` and decide promotion."""
    verdict = read_json(evaluation_path)
    best = next(c for c in verdict["candidates"] if c["candidate"] == verdict["best"])
    model_root = registry_root / model_name
    with atomic_dir(model_root / "versions" / ds) as tmp:
        shutil.copytree(best["dir"], tmp / "model", ignore=shutil.ignore_patterns(".*"))
        shutil.copytree(transform_dir, tmp / "transform", ignore=shutil.ignore_patterns(".*"))
        write_json(tmp / "metrics.json", best["metrics"])
        write_json(tmp / "lineage.json", {
            "version": ds,
            "candidate": best["candidate"],
            "framework": best["framework"],
            "evaluation": str(evaluation_path),
            "git_commit": git_commit(),
            "registered_at": datetime.now(UTC).isoformat(),
            **(lineage or {}),
        })
    with _locked(model_root) as state:
        previous_champion = state["champion"]
        state["versions"].pop(ds, None)
        older = [v for v, rec in state["versions"].items() if rec["promoted"] and v < ds and v not in state["rolled_back"]]
        baseline = max(older) if older else None
        auc = best["metrics"]["auc"]
        reasons = list(best["reasons"])
        if baseline is not None:
            base_auc = state["versions"][baseline]["auc"]
            if not auc >= base_auc + margin:
                reasons.append(f"auc {auc:.4f} does not beat baseline {baseline} ({base_auc:.4f}) by margin {margin}")
        state["versions"][ds] = {
            "candidate": best["candidate"], "auc": auc, "promoted": not reasons, "baseline": baseline,
            "reasons": reasons, "path": str(model_root / "versions" / ds),
        }
        if ds in state["rolled_back"] and not reasons:
            state["rolled_back"].remove(ds)  # a fresh registration of the day supersedes its rollback
    champion = state["champion"]
    log.info("registered %s/%s (%s): promoted=%s champion=%s", model_name, ds, best["candidate"], not reasons, champion)
    return {"model_name": model_name, "version": ds, "candidate": best["candidate"], "auc": auc,
            "promoted": not reasons, "reasons": reasons, "champion": champion, "previous_champion": previous_champion,
            "version_dir": str(model_root / "versions" / ds)}


def rollback(registry_root: Path, model_name: str) -> dict[str, Any]:
    """Retire the current champion; the previous promoted version becomes champion."""
    with _locked(registry_root / model_name) as state:
        current = _champion(state)
        if current is None:
            raise KilnError(f"model {model_name!r} has no champion to roll back")
        state["rolled_back"].append(current)
    return {"rolled_back": current, "champion": state["champion"]}


def champion_dir(registry_root: Path, model_name: str) -> Path:
    """The champion's version folder, or a clear error when there is none."""
    path = registry_root / model_name / STATE_FILE
    champion = read_json(path)["champion"] if path.exists() else None
    if champion is None:
        raise KilnError(f"model {model_name!r} has no champion in {registry_root}")
    return registry_root / model_name / "versions" / champion
