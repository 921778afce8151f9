"""A file-based model registry: one version per partition, decisions that depend only on what is registered.

Layout under ``<registry_root>/<model_name>/``: ``versions/<ds>/<registration>/`` (the model, its
transform, online features, metrics, lineage: written once, never changed) and ``registry.json`` (for
every version the registration that stands for it, its facts, the decision, and the champion).

Decisions are re-derived from the whole set on every change (``decide``): walking the versions in date
order, a version is promoted when it is blessed, servable and beats the last promoted older version by
its margin on the primary metric (in the metric's direction: higher AUC, lower RMSE). Rolled-back versions are out of the contest. The champion is the
newest promoted version. So the champion is a function of the registered versions, whatever order
backfills, reruns and retries registered them in. A rerun of a day writes a new registration folder and
only the locked state write points at it: serving moves only with a decision, atomically.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_tasks.core.atomic import atomic_dir, folder_lock, read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import PROJECT_ROOT, ModelFiles, VersionFiles, check_ds, model_files
from ml_tasks.core.run_settings import SETTINGS

log = logging.getLogger(__name__)
ORPHAN_AGE_S = 3600  # a registration folder no state names, older than this, was left by a killed register


@contextlib.contextmanager
def _locked(model: ModelFiles) -> Iterator[dict[str, Any]]:
    """Hold the registry lock; yield the state; re-decide and write it back atomically on success."""
    model.dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(model.dir):  # <model>/.lock, a record lock: it holds across the nodes sharing an NFS volume
        path = model.state
        state = read_json(path) if path.exists() else _empty_state()
        _upgrade(state)
        yield state
        decide(state)
        write_json(path, state)


def _empty_state() -> dict[str, Any]:
    return {"versions": {}, "rolled_back": [], "champion": None, "primary_metric": None, "higher_is_better": None}


def _upgrade(state: dict[str, Any]) -> None:
    """Read a registry written before decisions were re-derived (version folders held the model directly)
    or before models had a primary metric other than AUC."""
    if state["versions"]:
        state.setdefault("primary_metric", "auc")
        state.setdefault("higher_is_better", True)
    for ds, rec in state["versions"].items():
        if "bless_reasons" not in rec:
            rec["bless_reasons"] = [r for r in rec.get("reasons", []) if "does not beat baseline" not in r]
            rec.setdefault("margin", 0.0)
            rec.setdefault("registration", ds)


def _check_metric(state: dict[str, Any], model_name: str, metric: str) -> None:
    current = state.get("primary_metric")
    if current not in (None, metric):
        raise KilnError(f"model {model_name!r} is ranked on {current}, this evaluation on {metric}: "
                        "register it under another model name")


def _beats(score: float, baseline: float, margin: float, higher_is_better: bool) -> bool:
    if not math.isfinite(score):
        return False
    return score >= baseline + margin if higher_is_better else score <= baseline - margin


def decide(state: dict[str, Any]) -> dict[str, Any]:
    """Re-derive every version's decision and the champion from the versions' facts (in place)."""
    retired = set(state["rolled_back"])
    metric, higher = state.get("primary_metric"), state.get("higher_is_better")
    baseline: str | None = None
    for ds in sorted(state["versions"]):
        rec = state["versions"][ds]
        reasons = list(rec["bless_reasons"])
        if ds in retired:
            reasons.append("rolled back")
        elif baseline is not None and not reasons:
            base = state["versions"][baseline][metric]
            if not _beats(rec[metric], base, rec["margin"], higher):
                reasons.append(f"{metric} {rec[metric]:.4f} does not beat baseline {baseline} "
                               f"({base:.4f}) by margin {rec['margin']} ({'higher' if higher else 'lower'} is better)")
        # A person's say comes last: only a version that would be promoted waits for it or is held back by it.
        approval = rec.get("approval")
        if not reasons and approval is not None and approval["state"] != "approved":
            reasons.append("awaiting approval" if approval["state"] == "pending" else f"not approved: {approval['reason']}")
        rec.update(promoted=not reasons, reasons=reasons, baseline=baseline)
        if not reasons:
            baseline = ds
    state["champion"] = baseline
    return state


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _new_registration_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def register(
    evaluation_path: Path,
    registry_root: Path,
    model_name: str,
    ds: str,
    transform_dir: Path,
    margin: float = SETTINGS["promote_margin"].default,
    lineage: dict[str, Any] | None = None,
    online_features: Path | None = None,
    test_features_dir: Path | None = None,
    require_approval: bool = SETTINGS["require_approval"].default,
) -> dict[str, Any]:
    """Register the evaluation's best candidate as version ``ds`` and re-decide promotions. With
    ``require_approval`` the version is not promoted before ``record_approval`` says a person approved it.

    The artifact goes into a fresh folder first; it is checked for servability (loaded as serving
    loads it and scored against its offline scores, when ``test_features_dir`` is given); only then
    does the locked state write make it the day's registration.
    """
    from ml_tasks.serving.model_bundle import check_servable

    check_ds(ds)
    verdict = read_json(evaluation_path)
    metric, higher = verdict.get("primary_metric", "auc"), verdict.get("higher_is_better", True)
    best = next(c for c in verdict["candidates"] if c["candidate"] == verdict["best"])
    model = model_files(registry_root, model_name)
    _check_metric(read_state(registry_root, model_name), model_name, metric)  # fail fast; again under the lock
    registration = _new_registration_id()
    artifact = model.version(ds, registration).dir
    with atomic_dir(artifact) as tmp:
        files = VersionFiles(tmp)
        shutil.copytree(best["dir"], files.model.dir, ignore=shutil.ignore_patterns(".*"))
        shutil.copytree(transform_dir, files.transform.dir, ignore=shutil.ignore_patterns(".*"))
        if online_features is not None:
            shutil.copy2(online_features, files.online_features)
        write_json(files.metrics, best["metrics"])
        write_json(files.lineage, {
            "version": ds, "registration": registration, "candidate": best["candidate"],
            "framework": best["framework"], "evaluation": str(evaluation_path), "git_commit": git_commit(),
            "registered_at": datetime.now(UTC).isoformat(), **(lineage or {}),
        })
    bless_reasons = list(best["reasons"])
    servability: dict[str, Any] = {"servable": None}
    if test_features_dir is not None:
        try:
            servability = check_servable(artifact, test_features_dir)
        except (KilnError, OSError, ValueError) as exc:
            servability = {"servable": False, "reason": str(exc)}
            bless_reasons.append(f"not servable: {exc}")
    score = float(best["metrics"][metric])
    with _locked(model) as state:
        # Again where it is set: two first registrations with different metrics both passed the check above.
        # The loser's artifact is named by no state; _remove_orphans takes it later, as a killed register's.
        _check_metric(state, model_name, metric)
        state["primary_metric"], state["higher_is_better"] = metric, higher
        previous_champion = champion_registration(state)
        replaced = state["versions"].get(ds, {}).get("registration")
        if ds in state["rolled_back"]:
            state["rolled_back"].remove(ds)  # a new registration of the day is a new model; its rollback was of the old one
        state["versions"][ds] = {
            "candidate": best["candidate"], "framework": best["framework"], metric: score,
            "margin": margin, "bless_reasons": bless_reasons, "servability": servability,
            "registration": registration, "path": model.record(VersionFiles(artifact)),
            "registered_at": datetime.now(UTC).isoformat(),
            "run_id": (lineage or {}).get("dag_run_id"),
            "approval": {"state": "pending", "requested_at": datetime.now(UTC).isoformat()} if require_approval else None,
        }
    rec = state["versions"][ds]
    if replaced and replaced != registration:
        shutil.rmtree(model.version(ds, replaced).dir, ignore_errors=True)  # no state names it any more
    _remove_orphans(model, state)
    log.info("registered %s/%s (%s, %s): promoted=%s champion=%s", model_name, ds, best["candidate"], registration,
             rec["promoted"], state["champion"])
    return {**_decision(state, model, model_name, ds, previous_champion), "candidate": best["candidate"], metric: score,
            "version_dir": str(artifact), "awaiting_approval": rec["reasons"] == ["awaiting approval"],
            "approval_request": approval_request(state, model, model_name, ds) if require_approval else None}


def champion_registration(state: dict[str, Any]) -> tuple[str, str] | None:
    """The champion as what serving loads: its version and that version's registration (a rerun of the champion's
    day replaces the registration, so the model and its features, under the same version)."""
    champion = state["champion"]
    return (champion, state["versions"][champion]["registration"]) if champion else None


def _decision(state: dict[str, Any], model: ModelFiles, model_name: str, ds: str,
              previous: tuple[str, str] | None) -> dict[str, Any]:
    rec = state["versions"][ds]
    current = champion_registration(state)
    return {"model_name": model_name, "version": ds, "registration": rec["registration"],
            "primary_metric": state["primary_metric"], "promoted": rec["promoted"], "reasons": rec["reasons"],
            "approval": rec.get("approval"), "champion": state["champion"],
            "previous_champion": previous[0] if previous else None,
            # a new champion to announce and warm, or the champion's day registered anew (another model and features
            # under the same version); none, after a rollback of the last one, is nothing to serve
            "champion_changed": current is not None and current != previous,
            "champion_features": _features_of(state, model)}


def approval_request(state: dict[str, Any], model: ModelFiles, model_name: str, ds: str) -> str:
    """What a person approving version ``ds`` sees (Markdown): its held-out metrics against the champion's."""
    rec, champion = state["versions"][ds], state["champion"]
    mine = read_json(VersionFiles(model.recorded(rec["path"])).metrics)
    theirs = read_json(VersionFiles(model.recorded(state["versions"][champion]["path"])).metrics) if champion else {}
    higher = state["higher_is_better"]
    lines = [f"Promote **{model_name}/{ds}** ({rec['candidate']}, {rec['framework']}) to champion?", "",
             f"Current champion: **{model_name}/{champion}** ({state['versions'][champion]['candidate']})" if champion
             else "There is no champion yet: approving makes this version the first one.", "",
             f"| held-out metric | this version | champion {champion or '-'} | difference |", "|---|---:|---:|---:|"]
    for name, value in mine.items():
        if name == "rows" or not isinstance(value, (int, float)):
            continue
        other = theirs.get(name)
        diff = f"{value - other:+.4f}" if isinstance(other, (int, float)) else "-"
        lines.append(f"| {name}{' (ranks)' if name == state['primary_metric'] else ''} | {value:.4f} | "
                     f"{f'{other:.4f}' if isinstance(other, (int, float)) else '-'} | {diff} |")
    lines += ["", f"The registry ranks on {state['primary_metric']} ({'higher' if higher else 'lower'} is better). "
                  "Reject (or no answer before the timeout) keeps the version registered, not promoted; give a reason."]
    return "\n".join(lines)


def approval_outcome(answer: dict[str, Any], timeout_minutes: float) -> tuple[bool, str | None, str]:
    """(approved, by whom, why) from Airflow's human-in-the-loop result: a person's chosen option and reason, or the
    scheduler's default (Reject, no person) when nobody answered in time."""
    approved = answer["chosen_options"] == ["Approve"]
    person = answer.get("responded_by_user")
    if person is None:
        return False, None, f"no answer within {timeout_minutes:g} minute{'' if timeout_minutes == 1 else 's'}"
    reason = (answer.get("params_input") or {}).get("reason") or ("approved" if approved else "rejected without a reason")
    return approved, person.get("name") or person.get("id"), reason


def record_approval(registry_root: Path, model_name: str, ds: str, registration: str, approved: bool,
                    by: str | None, reason: str) -> dict[str, Any]:
    """Record a person's answer (or the timeout) for registration ``registration`` of version ``ds``, re-decide.
    An answer about a registration the day no longer has (a rerun replaced it) changes nothing."""
    check_ds(ds)
    model = model_files(registry_root, model_name)
    with _locked(model) as state:
        previous_champion = champion_registration(state)
        rec = state["versions"].get(ds)
        if rec is None or rec["registration"] != registration:
            raise KilnError(f"{model_name}/{ds} registration {registration} is not the day's registration any more "
                            f"({rec['registration'] if rec else 'none'}); its approval is not recorded")
        rec["approval"] = {**(rec.get("approval") or {}), "state": "approved" if approved else "rejected",
                           "by": by, "reason": reason, "answered_at": datetime.now(UTC).isoformat()}
    log.info("%s/%s %s by %s: %s", model_name, ds, rec["approval"]["state"], by, reason)
    return _decision(state, model, model_name, ds, previous_champion)


def _features_of(state: dict[str, Any], model: ModelFiles) -> str | None:
    champion = state["champion"]
    path = VersionFiles(model.recorded(state["versions"][champion]["path"])).online_features if champion else None
    return str(path) if path and path.exists() else None


def _remove_orphans(model: ModelFiles, state: dict[str, Any]) -> None:
    """Remove registration folders that no state names and that are old enough to have no live writer."""
    named = {model.recorded(rec["path"]) for rec in state["versions"].values()}
    now = time.time()
    for folder in model.registrations():
        if folder not in named and now - folder.stat().st_mtime > ORPHAN_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)


def rollback(registry_root: Path, model_name: str) -> dict[str, Any]:
    """Retire the current champion: it leaves the contest and the registry re-decides without it."""
    with _locked(model_files(registry_root, model_name)) as state:
        current = state["champion"]
        if current is None:
            raise KilnError(f"model {model_name!r} has no champion to roll back")
        state["rolled_back"].append(current)
    return {"rolled_back": current, "champion": state["champion"]}


def read_state(registry_root: Path, model_name: str) -> dict[str, Any]:
    path = model_files(registry_root, model_name).state
    return read_json(path) if path.exists() else _empty_state()


def champion_dir(registry_root: Path, model_name: str) -> Path:
    """The champion's registration folder, or a clear error when there is none."""
    state = read_state(registry_root, model_name)
    if state["champion"] is None:
        raise KilnError(f"model {model_name!r} has no champion in {registry_root}")
    return model_files(registry_root, model_name).recorded(state["versions"][state["champion"]]["path"])


def champion_features(registry_root: Path, model_name: str) -> dict[str, str]:
    """The champion's online features (what the online cache must hold) and its version."""
    state = read_state(registry_root, model_name)
    if state["champion"] is None:
        raise KilnError(f"model {model_name!r} has no champion in {registry_root}; nothing to warm")
    source = _features_of(state, model_files(registry_root, model_name))
    if source is None:
        raise KilnError(f"champion {model_name}/{state['champion']} was registered without online features")
    return {"version": state["champion"], "source": source}
