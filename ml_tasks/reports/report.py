"""A human summary of one partition's run: headline metrics and where everything was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_tasks.core.atomic import read_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import Layout, VersionFiles, model_files
from ml_tasks.evaluation.evaluate import format_table
from ml_tasks.evaluation.registry import read_state


def _evaluation_of(layout: Layout, model_name: str, registered: dict[str, Any]) -> Path:
    """The evaluation behind the day's registration, else the newest run of the day that has one."""
    if registered:
        lineage = read_json(VersionFiles(model_files(layout.registry_root, model_name).recorded(registered["path"])).lineage)
        return Path(lineage["evaluation"])
    runs = sorted(layout.evaluations_of_partition(), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise KilnError(f"no evaluation for {layout.ds} under {layout.run_dir.parent}; has the pipeline run?")
    return runs[-1]


def report(layout: Layout, model_name: str) -> dict[str, Any]:
    state = read_state(layout.registry_root, model_name)
    registered = state["versions"].get(layout.ds, {})
    evaluation = _evaluation_of(layout, model_name, registered)
    verdict = read_json(evaluation)
    version_dir = model_files(layout.registry_root, model_name).recorded(registered["path"]) if registered else None
    print(f"\nKiln run for {layout.dataset} partition {layout.ds}")
    print(format_table(verdict.get("task", "binary"), verdict["candidates"]))
    for failed in verdict.get("failed", []):
        print(f"{failed['candidate']:<22}  left out: {failed['reason']}")
    print(f"\nbest candidate : {verdict['best']} (blessed: {verdict['blessed']})")
    reasons = "; ".join(registered.get("reasons", []))
    print(f"this version   : {model_name}/{layout.ds} promoted={registered.get('promoted')}" + (f" {reasons}" if reasons else ""))
    print(f"champion       : {model_name}/{state['champion']}")
    if version_dir is not None:
        print(f"model          : {VersionFiles(version_dir).model.dir}")
        print(f"lineage        : {VersionFiles(version_dir).lineage}")
    print(f"metrics        : {evaluation}")
    print(f"registry state : {model_files(layout.registry_root, model_name).state}\n")
    return {"ds": layout.ds, "best": verdict["best"], "champion": state["champion"]}
