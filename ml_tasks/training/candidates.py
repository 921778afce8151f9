"""Kiln's built-in candidates, declared through the same trainer contract (``ml_tasks.trainer``) a dataset
spec's own trainers use: an entry point, a scorer, and the run settings each takes. A spec's ``trainers:``
add to these (``DatasetSpec.trainer_refs``); both run through ``run_trainer`` and serve through their scorer.

Each declares here, once, how its Airflow task runs (its stage, runner, pod size and image): the DAG factory
and the operators read these declarations and know no candidate by name.
"""

from __future__ import annotations

import ast
import importlib.machinery
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ml_tasks.core.errors import KilnError


@dataclass(frozen=True)
class TrainerRef:
    """One candidate's trainer and scorer by import path, the run settings it takes, and its parity tolerance.

    ``params`` maps a run setting to the key the trainer sees in ``inp.params``; ``seed`` names the
    run setting that seeds it (``None``: the fixed ``default_seed``).
    """

    name: str
    entry: str
    scorer: str
    params: Mapping[str, str] = field(default_factory=dict)
    seed: str | None = None
    default_seed: int = 7
    tolerance: float = 1e-4
    python_path: tuple[str, ...] = ()
    resources: str = "medium"  # the pod's resource preset in Kubernetes mode
    task_id: str = ""  # its Airflow task; default train_<name>
    # How its Airflow task trains it: the stage and its own options (a spec's trainers: ``train``, built by the DAG
    # factory with their settings), and the runner: ``process`` (a process or a pod), ``spark`` (a Spark stage, over
    # Spark Connect or spark-submit), ``mxnet_cluster`` (a parameter-server cluster of processes or pods).
    stage: str = "train"
    stage_options: tuple[str, ...] = ()
    runner: str = "process"
    image: str = ""  # the pod image it needs ("": Kiln's, which has Spark, MXNet and Singa built in)
    searchable: bool = True  # whether a hyper-parameter search may tune it
    preflight: str = ""  # ``module:function`` called before training: skips (exit 99) where its framework is missing

    @property
    def airflow_task_id(self) -> str:
        return self.task_id or f"train_{self.name}"

    @property
    def settings(self) -> tuple[str, ...]:
        return (*self.params, *([self.seed] if self.seed else []))


def split_path(path: str) -> tuple[str, str]:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise KilnError(f"import path {path!r} is not 'module.sub:function'")
    return module, attr


def locate(path: str, search: Sequence[str | Path] = ()) -> None:
    """Check that ``path`` (``module:function``) can be imported, without importing anything (DAG parsing must
    stay light): its module in the ``search`` folders first, then on ``sys.path``, defining that name at its top
    level. Raises naming what is missing."""
    module, attr = split_path(path)
    parts = module.split(".")
    where = [str(p) for p in search] + sys.path
    found = None
    for depth in range(1, len(parts) + 1):
        found = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), where)
        if found is None:
            place = ", ".join(map(str, search)) if search else "sys.path"
            raise KilnError(f"import path {path!r}: no module {'.'.join(parts[:depth])!r} in {place}"
                            + (" or on sys.path" if search else ""))
        where = list(found.submodule_search_locations or [])
    assert found is not None
    if not found.origin or not found.origin.endswith(".py"):
        return  # compiled or a namespace package: importing it will tell
    source = Path(found.origin)
    if attr not in top_level_names(source.read_text()):
        raise KilnError(f"import path {path!r}: {source} defines no {attr!r} at its top level")


def top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names



MLP_PARAMS = ("mlp_epochs", "mlp_hidden", "mlp_layers", "mlp_dropout", "mlp_learning_rate", "mlp_batch_size")
MLP_SETTINGS = (*MLP_PARAMS, "mlp_seed")


def _mlp(name: str, entry: str, scorer: str, tolerance: float, task_id: str, stage: str, **how: object) -> TrainerRef:
    return TrainerRef(name, entry, scorer, params={p: p for p in MLP_PARAMS}, seed="mlp_seed", tolerance=tolerance,
                      task_id=task_id, stage=stage, stage_options=("--candidate", name), **how)  # type: ignore[arg-type]


def _spark(name: str, entry: str, params: tuple[str, ...], model: str) -> TrainerRef:
    # Spark's own scores vs the numpy export: the same float64 arithmetic
    return TrainerRef(name, entry, "ml_tasks.serving.portable:load", params={p: p for p in params}, tolerance=1e-6,
                      stage="train-spark", stage_options=("--model", model), runner="spark")


BUILTIN_TRAINERS: dict[str, TrainerRef] = {r.name: r for r in [
    _spark("spark_lr", "ml_tasks.training.train_spark:train_lr", ("lr_reg",), "lr"),
    _spark("spark_gbt", "ml_tasks.training.train_spark:train_gbt", ("gbt_max_iter", "gbt_max_depth"), "gbt"),
    _mlp("mxnet_mlp", "ml_tasks.training.train_mxnet:train", "ml_tasks.training.train_mxnet:load", 1e-5, "train_mxnet", "train-mxnet"),
    _mlp("mxnet_dist", "ml_tasks.training.train_mxnet:train", "ml_tasks.training.train_mxnet:load", 1e-5, "train_mxnet_dist", "train-mxnet",
         runner="mxnet_cluster", searchable=False),
    # Singa scores in float32, its exported MLP in float64
    _mlp("singa_mlp", "ml_tasks.training.train_singa:train", "ml_tasks.serving.portable:load", 1e-4, "train_singa", "train-singa",
         preflight="ml_tasks.training.train_singa:import_singa"),
]}
BUILTIN_CANDIDATES = tuple(BUILTIN_TRAINERS)
SEARCHABLE = tuple(name for name, ref in BUILTIN_TRAINERS.items() if ref.searchable)
BUILTIN_TASK_IDS = frozenset(r.airflow_task_id for r in BUILTIN_TRAINERS.values())

# Registered versions written before candidates recorded their scorer.
LEGACY_SCORERS = {"spark_mllib": "ml_tasks.serving.portable:load", "singa": "ml_tasks.serving.portable:load",
                  "mxnet": "ml_tasks.training.train_mxnet:load"}
