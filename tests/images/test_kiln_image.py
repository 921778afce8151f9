"""Kiln's image (make images, built with podman) runs what a pod runs: the stage CLI from ingestion to
registration with Spark and Apache Singa inside it, on a read-only root file system as the image's non-root
user, and the prediction service answering from the model those containers registered."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DS = "2026-12-01"
RUN_ID = "image-test"
pytestmark = [pytest.mark.slow, pytest.mark.containers]


def kiln_image() -> str:
    tag = subprocess.run([str(ROOT / "scripts" / "images.sh"), "--print-tag", "kiln"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert subprocess.run(["podman", "image", "exists", tag], env=podman_env()).returncode == 0, \
        f"{tag} is not built: make images"
    return tag


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(ROOT / "containers" / "containers.conf")}


def container_args(image: str, data_root: Path, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """As a pod runs it: non-root (uid 50000, gid 0), read-only root file system, /tmp writable, the data root
    mounted at the same path, no capabilities; host network for the test's loopback Ignite."""
    return ["podman", "run", "--rm", "--network", "host", "--user", "50000:0", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "-e", "HOME=/tmp",
            *[a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")],
            "-v", f"{data_root}:{data_root}", image, *command]


def stage(image: str, data_root: Path, name: str, *args: str, env: dict[str, str] | None = None) -> dict:
    command = ["python", "-m", "ml_tasks", name, "--dataset", "transactions", "--data-root", str(data_root),
               "--ds", DS, "--run-id", RUN_ID, *args]
    out = subprocess.run(container_args(image, data_root, *command, env=env), capture_output=True, text=True,
                         timeout=600, env=podman_env())
    assert out.returncode == 0, f"{name} in the image failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def serving_container(image: str, data_root: Path, ignite_port: int):
    port = free_port()
    name = f"kiln-image-test-serving-{port}"
    started = subprocess.run(
        ["podman", "run", "-d", "--name", name, "--network", "host", "--user", "50000:0", "--read-only",
         "--tmpfs", "/tmp", "--cap-drop", "ALL", "-e", "HOME=/tmp", "-e", "KILN_IGNITE_HOST=127.0.0.1",
         "-e", f"KILN_IGNITE_PORT={ignite_port}", "-v", f"{data_root}:{data_root}:ro", image,
         "python", "-m", "ml_tasks", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-root", str(data_root)],
        capture_output=True, text=True, env=podman_env())
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, env=podman_env())
            raise AssertionError(f"the serving container never answered:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True, env=podman_env())


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """ingest -> validate -> preprocess (Spark) -> train-singa -> evaluate -> register -> online-features, each
    in its own container of the Kiln image, as its own pod would run it."""
    image = kiln_image()
    data_root = tmp_path_factory.mktemp("image") / "data"
    data_root.mkdir()
    os.chown(data_root, 50000, 0)  # the image's user, as the artifact volume is on a cluster
    results = {"ingest": stage(image, data_root, "ingest", "--rows", "3000")}
    results["validate"] = stage(image, data_root, "validate")
    results["preprocess"] = stage(image, data_root, "preprocess")
    results["train-singa"] = stage(image, data_root, "train-singa", "--candidate", "singa_mlp", "--mlp-epochs", "2")
    results["evaluate"] = stage(image, data_root, "evaluate", "--candidates", "singa_mlp")
    results["register"] = stage(image, data_root, "register")
    results["online-features"] = stage(image, data_root, "online-features")
    return image, data_root, results


def test_the_stage_cli_trains_and_registers_a_singa_model_inside_the_image(image_run):
    _, data_root, results = image_run
    assert results["preprocess"]["spark_master"] == "local[*]" and results["preprocess"]["train_rows"] > 0
    singa = results["train-singa"]
    assert singa["framework"] == "singa" and len(singa["history"]) == 2 and singa["test_auc"] > 0.6  # Singa trained
    assert results["evaluate"]["best"] == "singa_mlp" and results["evaluate"]["blessed"]
    assert results["register"]["promoted"] and results["register"]["candidate"] == "singa_mlp"
    registry = json.loads((data_root / "registry" / "transactions" / "registry.json").read_text())
    assert registry["champion"] == DS
    # Written by the image's user: the containers ran as uid 50000, not as root.
    assert {p.stat().st_uid for p in (data_root / "registry").rglob("*")} == {50000}


def test_the_image_serves_the_model_its_containers_registered(image_run, ignite_node):
    from ml_tasks.features.feature_cache import warm

    image, data_root, results = image_run
    source = Path(results["online-features"]["online_features"])
    client = ignite_node.client()
    try:  # what the DAG's warm task does, from the Airflow worker
        warm(client, "kiln_features_transactions", source, key="entity_id", version_prefix=DS)
    finally:
        client.close()
    entities = pd.read_parquet(source, columns=["entity_id"]).entity_id.head(5).tolist()
    with serving_container(image, data_root, ignite_node.port) as url:
        answer = httpx.post(f"{url}/datasets/transactions/predict", json={"entity_ids": [*entities, "nobody"]},
                            timeout=30).json()
    assert [p["entity_id"] for p in answer["predictions"]] == entities and answer["unknown"] == ["nobody"]
    assert all(0.0 <= p["score"] <= 1.0 for p in answer["predictions"])
    assert {p["model_version"] for p in answer["predictions"]} == {DS}


def test_the_image_runs_as_a_non_root_user_with_a_read_only_root(image_run):
    image, data_root, _ = image_run
    out = subprocess.run(container_args(image, data_root, "sh", "-c", "id -u; touch /opt/kiln/x 2>&1; touch /tmp/x && echo tmp-ok"),
                         capture_output=True, text=True, env=podman_env(), timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0] == "50000" and "Read-only file system" in lines[1] and lines[2] == "tmp-ok"
    user = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", image], capture_output=True,
                          text=True, env=podman_env()).stdout.strip()
    assert user == "50000"  # a pod without runAsUser runs non-root too
