"""The streaming path on real Kafka, Spark Structured Streaming and Ignite: what it writes, and the faults it survives.

The oracle is the batch path: the valid events, read back from Kafka and written as a raw partition, go through
``latest_features`` and the warm's own encoding; the stream must have written exactly those entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from ml_tasks.core.environment import ENV
from ml_tasks.core.spec import load_spec
from ml_tasks.features.feature_cache import cache_name, current_version, iter_source, stream_cache_name, warm
from ml_tasks.features.online_features import latest_features
from ml_tasks.features.streaming import batch_figures
from tests.conftest import PROJECT_ROOT


def stream_spec(tmp_path: Path, name: str):
    """The built-in transactions spec under another name: its own topics, feature alias and checkpoint."""
    folder = tmp_path / "specs"
    folder.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "datasets" / "transactions.yaml", folder / f"{name}.yaml")
    return load_spec(folder / f"{name}.yaml")


def stream_env(tmp_path: Path, kafka_broker, ignite_node) -> dict[str, str]:
    return {**os.environ, "KILN_DATASETS_DIR": str(tmp_path / "specs"), "KILN_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
            "KILN_IGNITE_HOST": ignite_node.hosts, "KILN_DATA_ROOT": str(tmp_path / "data"),
            "KILN_IVY_DIR": ENV["KILN_IVY_DIR"].default_text(),
            "KILN_STREAM_LEASE_SECONDS": "6",  # the killed driver's lease expires sooner: its restart waits less
            # What a worker that used Spark Connect passes on: the stream's driver must still be classic Spark.
            "SPARK_CONNECT_MODE_ENABLED": "1", "SPARK_REMOTE": "sc://127.0.0.1:1"}


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "ml_tasks", *args], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=PROJECT_ROOT)
    assert out.returncode == 0, f"{args[0]} failed ({out.returncode}):\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def read_topic(bootstrap: str, topic: str) -> list[tuple[str | None, str]]:
    """Every message of ``topic`` from the start: (key, value)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{time.time_ns()}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out, left = [], {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            out.append((msg.key().decode() if msg.key() else None, msg.value().decode()))
            if msg.offset() >= ends[msg.partition()] - 1:
                left.discard(msg.partition())
        assert not left, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def valid_events(spec, values: list[str]) -> list[dict]:
    """The test's own reading of which events are valid (JSON object, key, event time, numbers): the oracle."""
    rows = []
    for text in values:
        try:
            event = json.loads(text)
            when = datetime.fromisoformat(event[spec.timestamp].replace("Z", "+00:00"))
            numbers = {c: None if event.get(c) is None else float(event[c]) for c in spec.features.numeric}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if not event.get(spec.key):
            continue
        rows.append({spec.key: event[spec.key], spec.timestamp: when.astimezone(UTC).replace(tzinfo=None), **numbers,
                     **{c: event.get(c) for c in spec.features.categorical}})
    return rows


def raw_partition(spec, rows: list[dict], folder: Path) -> Path:
    """``rows`` as the ingest stage leaves a partition: the spec's columns and storage types, its schema beside."""
    schema = spec.schema
    folder.mkdir(parents=True, exist_ok=True)
    columns = [schema.key, schema.timestamp, *schema.features]
    arrow = pa.schema([(c, schema.storage_type(c)) for c in columns])
    pa.parquet.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=arrow),
                           folder / "part-0.parquet")
    schema.save(folder)
    return folder


def batch_path_entries(spec, rows: list[dict], folder: Path) -> dict[str, str]:
    """What the batch path (online-features stage + the warm's encoding) makes of ``rows``."""
    latest_features(raw_partition(spec, rows, folder / "raw"), folder / "online.parquet")
    return {k: v for batch in iter_source(folder / "online.parquet", spec.schema.key, 10_000) for k, v in batch.items()}


def cache_entries(client, name: str) -> dict[str, str]:
    with client.get_cache(name).scan() as cursor:
        return dict(cursor)


def produce(spec, broker, **kwargs) -> dict:
    from ml_tasks.features.events import produce_events

    return produce_events(spec, broker.bootstrap, spec.topic("events"), **kwargs)


@pytest.mark.slow
@pytest.mark.ignite
@pytest.mark.kafka
def test_stream_writes_what_the_batch_path_computes_and_never_an_older_event(tmp_path, kafka_broker, ignite_node):
    from ml_tasks.ingestion.ingest import ingest

    spec = stream_spec(tmp_path, "stream_parity")
    env = stream_env(tmp_path, kafka_broker, ignite_node)
    client = ignite_node.client()
    # A live batch version first (yesterday's partition, 1000 entities), as the daily pipeline leaves it.
    ds = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    ingest(spec, ds, tmp_path / "batch" / "raw", rows=4000)
    latest_features(tmp_path / "batch" / "raw", tmp_path / "batch" / "online.parquet")
    warm(client, spec.feature_cache, tmp_path / "batch" / "online.parquet", key=spec.key, version_prefix=ds + "-")
    version = current_version(client, spec.feature_cache)

    sent = produce(spec, kafka_broker, rate=3000, seconds=2, entities=1000, late_share=0.2, malformed_share=0.05)
    result = cli(["stream", "--dataset", spec.name], env)
    assert result["events"] == sent["produced"] == 6000 and result["dead_letters"] == sent["malformed"] > 0, result

    events = [v for _, v in read_topic(kafka_broker.bootstrap, spec.topic("events"))]
    valid = valid_events(spec, events)
    assert len(valid) == sent["produced"] - sent["malformed"]
    # The stream table holds exactly what the batch path computes for the same events.
    assert cache_entries(client, stream_cache_name(spec.feature_cache)) == batch_path_entries(spec, valid, tmp_path / "oracle1")
    # The live version holds, per entity, the newer of the batch row and the streamed events: the batch path over both.
    batch_rows = pa.parquet.read_table(tmp_path / "batch" / "raw").to_pylist()
    live = cache_entries(client, cache_name(spec.feature_cache, version))
    assert live == batch_path_entries(spec, batch_rows + valid, tmp_path / "oracle2")

    # Dead letters: each malformed event once per source offset, with a reason naming what is wrong.
    letters = read_topic(kafka_broker.bootstrap, spec.topic("dead-letters"))
    assert len({k for k, _ in letters}) == sent["malformed"]
    reasons = {json.loads(v)["reason"].split(":")[0] for _, v in letters}
    assert reasons == {"value is not a JSON object", spec.key, spec.timestamp, spec.features.numeric[0]}, reasons
    figures = batch_figures(client, spec.feature_cache)
    assert sum(f["events"] for f in figures) == 6000 and sum(f["dead_letters"] for f in figures) == sent["malformed"]

    # Late events only (up to 2 h old) for the same entities: an older event never replaces a newer entry.
    late = produce(spec, kafka_broker, rate=2000, seconds=1, entities=1000, late_share=1.0, start=10_000)
    again = cli(["stream", "--dataset", spec.name], env)
    assert again["events"] == late["produced"] and again["older"] > 0, again
    everything = valid_events(spec, [v for _, v in read_topic(kafka_broker.bootstrap, spec.topic("events"))])
    assert cache_entries(client, stream_cache_name(spec.feature_cache)) == batch_path_entries(spec, everything, tmp_path / "oracle3")
    assert cache_entries(client, cache_name(spec.feature_cache, version)) == batch_path_entries(
        spec, batch_rows + everything, tmp_path / "oracle4")


class Supervised:
    """``python -m ml_tasks stream --stream-mode continuous``: the supervisor and its driver child."""

    def __init__(self, spec, env: dict[str, str], log: Path, *extra: str):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ml_tasks", "stream", "--dataset", spec.name, "--stream-mode", "continuous",
             "--stream-trigger-seconds", "0.5", *extra], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
            stderr=log.open("w"), text=True, start_new_session=True)

    def driver_pid(self) -> int | None:
        import psutil

        drivers = [c.pid for c in psutil.Process(self.proc.pid).children() if "--driver" in c.cmdline()]
        return drivers[0] if drivers else None

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, self.log.read_text()[-4000:]
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for_events(client, spec, count: int, timeout: float, what: str, log: Path,
                    stream: Supervised | None = None) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (stream is None or stream.proc.poll() is None):
        figures = batch_figures(client, spec.feature_cache)
        if sum(f["events"] for f in figures) >= count:
            return figures
        time.sleep(0.5)
    raise AssertionError(f"{what}: the stream did not apply {count} events within {timeout:.0f}s; its log:\n"
                         + log.read_text()[-4000:])


@pytest.mark.slow
@pytest.mark.ignite
@pytest.mark.kafka
def test_stream_survives_driver_kill_ignite_restart_and_broker_outage(tmp_path, kafka_broker, ignite_node):
    """One continuous stream through three faults; at the end every event is counted once and the features
    equal a replay of all events through the batch path."""
    spec = stream_spec(tmp_path, "stream_faults")
    env = stream_env(tmp_path, kafka_broker, ignite_node)
    log = tmp_path / "stream.log"
    produced = malformed = 0

    def send(n_seconds: float, first: int, rate: float = 4000) -> None:
        nonlocal produced, malformed
        sent = produce(spec, kafka_broker, rate=rate, seconds=n_seconds, entities=2000, late_share=0.1,
                       malformed_share=0.02, start=first)
        produced += sent["produced"]
        malformed += sent["malformed"]

    send(2, 0, 20_000)  # a backlog of 40 000 events, read 4 000 per batch: the driver is killed with batches to go
    stream = Supervised(spec, env, log, "--stream-max-events-per-batch", "4000", "--stream-max-restarts", "5")
    try:
        client = ignite_node.client()
        wait_for_events(client, spec, 8000, 180, "before the kill", log)
        driver = stream.driver_pid()
        assert driver is not None, log.read_text()[-3000:]
        os.kill(driver, signal.SIGKILL)  # mid-batch: more batches of the backlog were queued
        wait_for_events(client, spec, produced, 180, "after the driver was killed", log)

        # An Ignite node killed and restarted (native persistence) while events keep coming: the batch in flight
        # retries until the node is back.
        sender = threading.Thread(target=send, args=(6, 100_000, 1000))
        sender.start()
        time.sleep(2)
        os.kill(ignite_node.pid, signal.SIGKILL)
        time.sleep(3)
        ignite_node.start()
        sender.join()
        client = ignite_node.client()
        wait_for_events(client, spec, produced, 180, "after the Ignite restart", log)

        # The broker stopped for 30 s: the query waits (or its driver is restarted) and resumes from its checkpoint.
        kafka_broker.stop()
        time.sleep(30)
        kafka_broker.start()
        send(2, 200_000, 2000)
        wait_for_events(client, spec, produced, 240, "after the broker outage", log)
        result = stream.stop()
    finally:
        stream.kill()

    assert result["driver_starts"] >= 2, result  # the killed driver was restarted by its supervisor
    figures = batch_figures(client, spec.feature_cache)
    assert sum(f["events"] for f in figures) == produced, "an event was lost or counted twice"
    assert sum(f["dead_letters"] for f in figures) == malformed
    assert len({k for k, _ in read_topic(kafka_broker.bootstrap, spec.topic("dead-letters"))}) == malformed
    events = [v for _, v in read_topic(kafka_broker.bootstrap, spec.topic("events"))]
    assert len(events) == produced
    assert cache_entries(client, stream_cache_name(spec.feature_cache)) == batch_path_entries(
        spec, valid_events(spec, events), tmp_path / "replay")


def test_the_supervisor_restarts_a_dying_driver_then_fails_loudly_with_its_last_words(tmp_path):
    from ml_tasks.features.streaming import StreamFailed, supervise

    driver = [sys.executable, "-c", "import sys; print('lost my partition leader'); sys.exit(3)"]
    began = time.monotonic()
    with pytest.raises(StreamFailed, match=r"died 3 times within 10 minutes \(stream_max_restarts=2\); last exit code 3") as failed:
        supervise(driver, max_restarts=2, log_file=tmp_path / "driver.log")
    assert "lost my partition leader" in str(failed.value)
    assert time.monotonic() - began >= 3  # backoff 1 s, then 2 s, between the three starts
    assert (tmp_path / "driver.log").read_text().count("--- driver start") == 3


@pytest.mark.slow
@pytest.mark.ignite
@pytest.mark.kafka
def test_the_stream_logs_in_with_the_ignite_connections_login_and_fails_clearly_without_it(
        tmp_path, kafka_broker, secured_ignite_node):
    """A cluster that asks for a login: the stream takes it from the Ignite connection its operator hands it (as
    AIRFLOW_CONN_IGNITE_DEFAULT, or a pod's Secret); without it the stage fails as bad input (exit 2), naming it."""
    spec = stream_spec(tmp_path, "stream_login")
    node = secured_ignite_node
    env = {k: v for k, v in stream_env(tmp_path, kafka_broker, node).items() if k != "KILN_IGNITE_HOST"}
    sent = produce(spec, kafka_broker, rate=1000, seconds=1, entities=200)

    env["AIRFLOW_CONN_IGNITE_DEFAULT"] = f"ignite://127.0.0.1:{node.port}"
    refused = subprocess.run([sys.executable, "-m", "ml_tasks", "stream", "--dataset", spec.name], env=env,
                             capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "refused a stream with no login" in refused.stderr

    env["AIRFLOW_CONN_IGNITE_DEFAULT"] = f"ignite://{node.username}:{node.password}@127.0.0.1:{node.port}"
    result = cli(["stream", "--dataset", spec.name], env)
    assert result["events"] == sent["produced"] == result["applied"] + result["older"], result
    assert len(cache_entries(node.client(), stream_cache_name(spec.feature_cache))) == result["entities"] > 0
