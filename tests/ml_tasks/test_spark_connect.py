"""Spark stages as thin clients of a real, long-running Spark Connect server (scripts/spark_connect.sh)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # a real Spark Connect server (the session's spark_connect)

SLOW_QUERY = """
import sys
from ml_tasks.core.spark_session import get_spark
spark = get_spark("kiln-test-slow")
print("connected", flush=True)
# minutes of work for local[*] on 2 cores: only a cancellation ends it early
spark.range(0, 20_000_000_000, numPartitions=64).selectExpr("sum(id * id % 7)").collect()
"""


def stage(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "ml_tasks", "--log-level", "WARNING", *args], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def features(folder) -> dict[str, np.ndarray]:
    table = pq.read_table(folder).to_pandas().sort_values("entity_id")
    return {"entity_id": table.entity_id.to_numpy(), "label": table.label.to_numpy(), "features": np.stack(table.features)}


def test_preprocess_and_training_over_connect_equal_the_in_process_run(small_features, spark_connect):
    """The same partition through the server (CLI stages with SPARK_REMOTE, no JVM in the stage) and in-process."""
    layout = small_features["layout"]
    env = {**os.environ, "SPARK_REMOTE": spark_connect.url}
    partition = ["--data-root", str(layout.data_root), "--ds", layout.ds, "--run-id", "over-connect"]
    remote = type(layout).at(layout.data_root, layout.dataset, layout.ds, "over-connect")
    shutil.copytree(layout.raw_dir, remote.input_dir)  # this run's input: the partition the baseline preprocessed
    before = len(spark_connect.jobs())
    summary = stage(["preprocess", *partition, "--pca-k", "3"], env)
    assert summary["spark_connect"] == spark_connect.url
    assert len(spark_connect.jobs()) > before, "the stage's Spark jobs did not run on the server"
    for split in ("train", "test"):
        ours, baseline = features(remote.features.dir / split), features(layout.features.dir / split)
        assert (ours["entity_id"] == baseline["entity_id"]).all() and (ours["label"] == baseline["label"]).all()
        np.testing.assert_allclose(ours["features"], baseline["features"], rtol=0, atol=1e-9)
    trained = stage(["train-spark", "--model", "lr", *partition], env)
    assert trained["test_rows"] == small_features["summary"]["test_rows"] and 0.6 < trained["test_auc"] <= 1


def test_a_stopped_stage_takes_its_running_job_on_the_server_with_it(spark_connect, tmp_path):
    """SIGTERM (a task's timeout, on_kill) ends the client; its session's running job is cancelled on the server
    instead of running on for minutes with nobody waiting for it."""
    env = {**os.environ, "SPARK_REMOTE": spark_connect.url, "PYTHONPATH": str(PROJECT_ROOT)}
    client = subprocess.Popen([sys.executable, "-c", SLOW_QUERY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 120
        while not spark_connect.jobs("running"):
            assert client.poll() is None and time.monotonic() < deadline, "the slow job never started"
            time.sleep(0.5)
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while spark_connect.jobs("running"):
            assert time.monotonic() < deadline, f"still running 20 s after the client stopped: {spark_connect.jobs('running')}"
            time.sleep(0.5)
        slow = max(spark_connect.jobs(), key=lambda job: job["jobId"])  # nothing else runs on the server meanwhile
        assert slow["status"] == "FAILED", slow  # cancelled, not finished
    finally:
        client.kill()
