"""The distributed MXNet operator with real scheduler, server and worker processes (kvstore dist_sync)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from ml_tasks.core.layout import CandidateFiles

pytestmark = pytest.mark.slow


def operator(small_features, tmp_path: Path, epochs: int, batch_size: int = 128):
    from kiln.operators.mxnet import MXNetDistributedOperator

    lay = small_features["layout"]
    return MXNetDistributedOperator(
        task_id="train_mxnet_dist",
        worker_args=["--dataset", lay.dataset, "--data-root", str(lay.data_root), "--ds", lay.ds, "--candidate",
                     f"dist_{tmp_path.name}", "--mlp-epochs", str(epochs), "--mlp-batch-size", str(batch_size)],
        result_path=str(tmp_path / "result.json"),
        checkpoint_dir=str(lay.run_dir / "checkpoints" / f"dist_{tmp_path.name}"),
        num_servers=1, num_workers=2, cluster_timeout=300, execution="local",
    )


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent (or init) to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_two_workers_agree_and_match_single_process_quality(small_features, tmp_path):
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS
    from ml_tasks.training.mlp import MLPConfig

    op = operator(small_features, tmp_path, epochs=3)
    result = op.execute(context={})
    ckpt = Path(op.checkpoint_dir)
    digests = {json.loads((ckpt / f"final-rank-{r}.json").read_text())["digest"] for r in (0, 1)}
    assert len(digests) == 1, "workers ended with different parameters"
    assert result["num_workers"] == 2 and result["kvstore"] == "dist_sync"
    lay = small_features["layout"]
    single = train_candidate(BUILTIN_TRAINERS["mxnet_mlp"], MLPConfig(epochs=3, batch_size=128).as_settings(), task="binary",
                             features=lay.features, candidate=CandidateFiles(tmp_path / "single"),
                             checkpoint_dir=tmp_path / "single-ckpt")
    assert abs(result["test_auc"] - single["test_auc"]) <= 0.02
    pids = json.loads((ckpt / "pids.json").read_text())
    assert set(pids) == {"scheduler", "server-0", "worker-0", "worker-1"}
    assert not any(alive(p) for p in pids.values())


def test_killed_worker_fails_the_task_naming_it_and_the_retry_resumes(small_features, tmp_path):
    from ml_tasks.training.mxnet_cluster import ClusterFailed

    op = operator(small_features, tmp_path, epochs=40, batch_size=32)
    ckpt = Path(op.checkpoint_dir)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context={})
        except BaseException as exc:  # the thread hands the failure to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not list(ckpt.glob("epoch-0002/rank-*/done.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(ckpt.glob("epoch-0002/rank-*/done.json")), "training never reached epoch 2"
    pids = json.loads((ckpt / "pids.json").read_text())
    os.kill(pids["worker-1"], signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ClusterFailed)
    assert "MXNet role worker-1 was killed by signal SIGKILL" in str(errors[0])
    time.sleep(0.5)
    assert [name for name, pid in pids.items() if alive(pid)] == []

    retry = operator(small_features, tmp_path, epochs=40, batch_size=32)
    logs: list[str] = []
    retry.log.info = lambda msg, *a: logs.append(msg % a if a else msg)  # capture the streamed role output
    result = retry.execute(context={})
    resumed = [line for line in logs if "resuming after epoch" in line]
    assert len(resumed) == 2, logs[-20:]
    assert result["rank"] == 0 and result["test_auc"] > 0.7


def test_sigkill_of_the_launcher_leaves_no_role_running(small_features, tmp_path):
    """The task process dies hard (OOM killer, kill -9): scheduler, server and workers must die with it."""
    import subprocess
    import sys

    lay = small_features["layout"]
    candidate = f"orphan_{tmp_path.name}"[:60]
    launcher = subprocess.Popen([sys.executable, "-m", "ml_tasks", "train-mxnet-dist", "--data-root", str(lay.data_root),
                                 "--ds", lay.ds, "--candidate", candidate, "--mlp-epochs", "40", "--mlp-batch-size", "32"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = lay.checkpoint_dir(candidate) / "pids.json"
    deadline = time.monotonic() + 120
    while not list(lay.checkpoint_dir(candidate).glob("epoch-0001/rank-*/done.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = json.loads(pid_file.read_text())
    assert all(alive(p) for p in pids.values()), "the cluster should be training"
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [name for name, pid in pids.items() if alive(pid)] == []


def test_dist_sync_regression_workers_agree_and_learn_the_value(diabetes_features, tmp_path):
    """The L2-loss MLP on a real parameter-server cluster: identical workers, predictions in the label's unit."""
    import pandas as pd
    from sklearn.metrics import r2_score

    op = operator(diabetes_features, tmp_path, epochs=30, batch_size=16)
    result = op.execute(context={})
    assert result["task"] == "regression" and result["num_workers"] == 2
    ckpt = Path(op.checkpoint_dir)
    assert len({json.loads((ckpt / f"final-rank-{r}.json").read_text())["digest"] for r in (0, 1)}) == 1
    preds = pd.read_parquet(CandidateFiles(Path(result["candidate_dir"])).predictions)
    assert r2_score(preds.label, preds.score) > 0.2 and result["test_rmse"] < preds.label.std()
