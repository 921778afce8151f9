"""A human summary of one partition's run: headline metrics and where everything was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_tasks.atomic import read_json
from ml_tasks.errors import KilnError
from ml_tasks.evaluate import format_table
from ml_tasks.layout import Layout
from ml_tasks.registry import STATE_FILE


def report(layout: Layout, model_name: str) -> dict[str, Any]:
    if not layout.evaluation.exists():
        raise KilnError(f"no evaluation for {layout.ds} at {layout.evaluation}; has the pipeline run?")
    verdict = read_json(layout.evaluation)
    state_path: Path = layout.registry_root / model_name / STATE_FILE
    state = read_json(state_path) if state_path.exists() else {"versions": {}, "champion": None}
    version = state["versions"].get(layout.ds, {})
    print(f"\nKiln run for partition {layout.ds}")
    print(format_table(verdict["candidates"]))
    print(f"\nbest candidate : {verdict['best']} (blessed: {verdict['blessed']})")
    print(f"this version   : {model_name}/{layout.ds} promoted={version.get('promoted')} {'; '.join(version.get('reasons', []))}")
    print(f"champion       : {model_name}/{state['champion']}")
    print(f"model          : {layout.registry_root / model_name / 'versions' / layout.ds / 'model'}")
    print(f"metrics        : {layout.evaluation}")
    print(f"lineage        : {layout.registry_root / model_name / 'versions' / layout.ds / 'lineage.json'}")
    print(f"registry state : {state_path}\n")
    return {"ds": layout.ds, "best": verdict["best"], "champion": state["champion"]}
