"""Stages added by later features (MXNet, Singa, serving); kept apart so the core CLI stays short."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_tasks.cli_types import CANDIDATE, layout

log = logging.getLogger("ml_tasks")



def _mlp_config(a: argparse.Namespace):
    from ml_tasks.train_mxnet import MLPConfig

    return MLPConfig(hidden=a.hidden, layers=a.layers, dropout=a.dropout, learning_rate=a.learning_rate,
                     epochs=a.epochs, batch_size=a.batch_size, seed=a.seed)


def run_train_mxnet(a: argparse.Namespace) -> dict[str, Any] | None:
    from ml_tasks.train_mxnet import train_mxnet

    lay = layout(a)
    result = train_mxnet(lay.features_dir, lay.candidate_dir(a.candidate), lay.checkpoint_dir(a.candidate),
                         lay.transform_dir, _mlp_config(a), kvstore=a.kvstore, candidate=a.candidate)
    if result["rank"] != 0:
        a.result_file = None  # only rank 0 reports for the whole run
    return result


def worker_command(a: argparse.Namespace) -> list[str]:
    """The ``train-mxnet`` command line every worker of a distributed run executes."""
    return [sys.executable, "-m", "ml_tasks", "train-mxnet", "--data-root", str(a.data_root), "--ds", a.ds, "--run-id", a.run_id,
            "--candidate", a.candidate, "--kvstore", "dist_sync", "--epochs", str(a.epochs), "--hidden", str(a.hidden),
            "--layers", str(a.layers), "--dropout", str(a.dropout), "--learning-rate", str(a.learning_rate),
            "--batch-size", str(a.batch_size), "--seed", str(a.seed)]


def run_train_mxnet_dist(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.atomic import read_json
    from ml_tasks.mxnet_cluster import run_cluster

    lay = layout(a)
    ckpt = lay.checkpoint_dir(a.candidate)
    run_cluster(worker_command(a), a.servers, a.workers, log=lambda line: print(line, file=sys.stderr, flush=True),
                timeout=a.timeout, pid_file=ckpt / "pids.json")
    digests = {r: read_json(ckpt / f"final-rank-{r}.json")["digest"] for r in range(a.workers)}
    return {"candidate": a.candidate, "workers": a.workers, "servers": a.servers,
            "params_identical": len(set(digests.values())) == 1, "candidate_dir": str(lay.candidate_dir(a.candidate))}


def run_train_singa(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.train_singa import train_singa

    lay = layout(a)
    return train_singa(lay.features_dir, lay.candidate_dir(a.candidate), lay.transform_dir, _mlp_config(a))


def run_serve(a: argparse.Namespace) -> dict[str, Any]:
    import os

    from ml_tasks.serving import serve

    os.environ["KILN_DATA_ROOT"] = str(Path(a.data_root).resolve())
    serve(a.host, a.port)
    return {"stopped": True}


def _mlp_args(p: argparse.ArgumentParser, candidate: str) -> None:
    p.add_argument("--candidate", default=candidate, type=CANDIDATE)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=7)


def add_stages(stage: Callable[..., argparse.ArgumentParser]) -> None:
    """Register extra stages on the CLI (``stage(name, func, help, partition=True)``)."""
    p = stage("train-mxnet", run_train_mxnet, "MXNet MLP in one process, or one worker of a dist_sync run")
    _mlp_args(p, "mxnet_mlp")
    p.add_argument("--kvstore", default="local", choices=["local", "dist_sync"])
    p = stage("train-mxnet-dist", run_train_mxnet_dist, "MXNet MLP on a local parameter-server cluster")
    _mlp_args(p, "mxnet_dist")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--servers", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800)
    p = stage("train-singa", run_train_singa, "Apache Singa MLP (runs in the Singa image; skips elsewhere)")
    _mlp_args(p, "singa_mlp")
    p = stage("serve", run_serve, "online prediction service (features from Ignite, the champion model)", partition=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
