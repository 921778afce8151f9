"""The trigger form: Airflow ``Param``s generated from ``ml_tasks.params.RUN_PARAMS``, the one place each setting's
default, bounds and description live."""

from __future__ import annotations

from airflow.sdk import Param

from ml_tasks.params import RUN_PARAMS


def form_params(*names: str) -> dict[str, Param]:
    """Form fields for ``names`` (all run parameters when none are named)."""
    return {
        name: Param(spec["default"], description=spec["description"],
                    **{k: v for k, v in spec.items() if k not in ("default", "description")})
        for name, spec in RUN_PARAMS.items() if not names or name in names
    }
