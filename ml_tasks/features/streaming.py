"""Kafka events -> Spark Structured Streaming -> each entity's newest online features in Ignite.

The query reads the dataset's events topic with Spark's Kafka source (``spark-sql-kafka-0-10`` from Maven
Central), checks every event against the dataset's schema in Spark (``parse_events``: the first rule an
event breaks becomes its ``reason``), and hands each micro-batch to ``BatchWriter``:

- malformed events go to the dead-letter topic, keyed by their source coordinates (topic/partition/offset)
  with the reason and the raw value, and are counted; they never stop the query;
- the valid ones are reduced to each entity's newest (``ml_tasks.features.online_features``, the same definition the
  batch stage uses) and merged into the alias's stream table and live version only where newer
  (``ml_tasks.features.feature_cache.apply_stream_batch``): an older event never overwrites a newer one;
- the batch's figures go to ``kiln_stream_batches`` under the batch id (events, dead letters, freshness).

Exactly-once in effect: Spark's checkpoint replays an uncommitted batch with the same id and offsets after a
crash, and every write of a batch is idempotent (a newer-only merge, figures keyed by batch id); only the
dead-letter topic is at-least-once (a replay may repeat a message, recognisable by its key). One stream per
alias at a time: the driver holds a lease (``<alias>@stream``), renewed by a thread, expiring when it dies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.core.environment import env_float, env_int
from ml_tasks.core.errors import KilnError, StageSkipped
from ml_tasks.core.run_settings import ALERT_DEAD_LETTER_SHARE, SETTINGS
from ml_tasks.core.spark_session import streaming_session
from ml_tasks.features import ignite_fast  # noqa: F401
from ml_tasks.features.feature_cache import AliasLease, LeaseLost, apply_stream_batch, parse_addresses
from ml_tasks.ingestion import event_rules as rules
from ml_tasks.ingestion.schema import DatasetSchema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from ml_tasks.core.spec import EventLimits

log = logging.getLogger(__name__)
BATCHES_CACHE = "kiln_stream_batches"
LATENCY_BUCKET_MS = 10  # freshness histograms: 10 ms buckets
CORRUPT = "_kiln_not_json"
DEAD_LETTER_VALUE_BYTES = 4096  # of a rejected message's value: enough to see what is wrong; its offset finds the rest


class StreamFailed(RuntimeError):
    """The query, Kafka or Ignite failed in a way a later try may not (exit code 1: Airflow retries the task)."""


@dataclass(frozen=True)
class StreamConfig:
    dataset: str
    schema: DatasetSchema
    limits: EventLimits
    feature_cache: str
    bootstrap_servers: str
    topic: str
    dead_letter_topic: str
    alerts_topic: str
    checkpoint: Path
    ignite_hosts: str
    ignite_options: dict[str, Any] = field(default_factory=dict, repr=False)  # login and TLS (ml_tasks.features.ignite_connection)
    available_now: bool = True
    trigger_seconds: float = SETTINGS["stream_trigger_seconds"].default
    max_events_per_batch: int = SETTINGS["stream_max_events_per_batch"].default
    run_minutes: float = SETTINGS["stream_run_minutes"].default
    alert_dead_letter_share: float = ALERT_DEAD_LETTER_SHARE
    # A killed driver's lease expires after this; its restart waits that long (KILN_STREAM_LEASE_SECONDS).
    lease_seconds: float = field(default_factory=lambda: env_float("KILN_STREAM_LEASE_SECONDS"))
    ignite_retry_seconds: float = 60.0  # how long a batch retries Ignite (a node restarting) before the query fails

    @property
    def lease_name(self) -> str:
        return f"{self.feature_cache}@stream"


# --- Spark: session, parsing and validation ---------------------------------------------------------------------
def parse_events(raw: DataFrame, schema: DatasetSchema, limits: EventLimits) -> DataFrame:
    """Kafka records -> typed columns and ``reason`` (null for a valid event), with the source coordinates.

    No content can fail the query: the value's size and UTF-8 are checked before it is parsed, and every
    conversion is a ``try_`` one. Values are read as text first so a wrong type is named rather than silently
    nulled; a missing feature is allowed (the batch path imputes it), a missing key or event time is not. An
    event set aside keeps only its raw value's first ``DEAD_LETTER_VALUE_BYTES`` (for the dead letter) and
    no parsed field: a batch's size on the driver stays bounded by the limits whatever the messages carry.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    fields = (schema.key, schema.timestamp, *schema.features)
    as_text = StructType([StructField(c, StringType()) for c in (*fields, CORRUPT)])
    value = F.col("value")
    size = F.coalesce(F.octet_length(value), F.lit(0))
    is_utf8 = F.coalesce(F.is_valid_utf8(value.cast("string")), F.lit(False))
    readable = value.isNotNull() & (size <= limits.max_message_bytes) & is_utf8
    records = raw.select("topic", "partition", "offset", value.alias("raw_value"), size.alias("value_bytes"),
                         is_utf8.alias("utf8"), F.unix_millis("timestamp").alias("received_ms"),
                         F.when(readable, value.cast("string")).alias("value_text"))
    # A value that is not a JSON object lands whole in the CORRUPT field (and nothing else is set).
    parsed = records.withColumn("j", F.from_json("value_text", as_text, {"columnNameOfCorruptRecord": CORRUPT}))
    j = F.col("j")

    def field(c: str):
        return j.getField(c)

    def too_long(c: str, limit: int):
        return (F.char_length(field(c)) > limit,
                F.format_string(rules.TOO_LONG, F.lit(c), F.char_length(field(c)), F.lit(limit)))

    ts_text = field(schema.timestamp)
    # Epoch ms of at most 15 digits (31,000 years): timestamp_millis overflows, and fails the query, beyond that.
    event_time = (F.when(ts_text.rlike(r"^-?[0-9]{1,15}$"), F.timestamp_millis(ts_text.try_cast("long")))
                  .otherwise(ts_text.try_cast("timestamp")))
    # Whole seconds after the broker received the event, truncated as Arrow's integer division does in ingest.
    after_s = (F.try_subtract(F.unix_micros(event_time), F.col("received_ms") * 1000) / 1_000_000).cast("long")
    numbers = {c: field(c).try_cast("double") for c in schema.numeric}
    checks = [
        (F.col("raw_value").isNull(), F.lit(rules.NOT_JSON)),
        (F.col("value_bytes") > limits.max_message_bytes,
         F.format_string(rules.TOO_BIG, F.col("value_bytes"), F.lit(limits.max_message_bytes))),
        (~F.col("utf8"), F.lit(rules.NOT_UTF8)),
        (j.isNull() | j.getField(CORRUPT).isNotNull(), F.lit(rules.NOT_JSON)),
        (F.coalesce(F.trim(field(schema.key)), F.lit("")) == "", F.format_string(rules.MISSING, F.lit(schema.key))),
        too_long(schema.key, limits.max_key_length),
        (ts_text.isNull(), F.format_string(rules.MISSING, F.lit(schema.timestamp))),
        (event_time.isNull(), F.format_string(rules.NOT_A_TIMESTAMP, F.lit(schema.timestamp), ts_text)),
        (after_s > limits.max_future_seconds, F.format_string(rules.IN_THE_FUTURE, F.lit(schema.timestamp), ts_text,
                                                              after_s, F.lit(limits.max_future_seconds))),
    ]
    for c, number in numbers.items():
        checks.append((field(c).isNotNull() & number.isNull(), F.format_string(rules.NOT_A_NUMBER, F.lit(c), field(c))))
        checks.append((F.isnan(number) | (F.abs(number) == float("inf")), F.format_string(rules.NOT_FINITE, F.lit(c), field(c))))
    checks += [too_long(c, limits.max_text_length) for c in schema.categorical]
    reason = F.coalesce(*[F.when(bad, message) for bad, message in checks])
    valid = reason.isNull()
    return parsed.select(
        "topic", "partition", "offset", "received_ms", "value_bytes", "utf8", reason.alias("reason"),
        F.when(~valid, F.substring("raw_value", 1, DEAD_LETTER_VALUE_BYTES)).alias("raw_value"),
        F.when(valid, field(schema.key)).alias(schema.key), F.when(valid, event_time).alias(schema.timestamp),
        *[F.when(valid, n).alias(c) for c, n in numbers.items()],
        *[F.when(valid, field(c)).alias(c) for c in schema.categorical])


def batch_entries(table, schema: DatasetSchema) -> dict[str, str]:
    """Arrow rows of valid events -> ``{entity: entry}``, through the batch path's own functions."""
    import pyarrow as pa

    from ml_tasks.features.online_features import encode, newest_per_entity, online_columns

    if table.num_rows == 0:
        return {}
    target = pa.schema([(c, schema.storage_type(c)) for c in online_columns(schema)])
    table = table.select(online_columns(schema)).cast(target)
    frame = newest_per_entity(table, schema)
    return {str(r[schema.key]): encode(r) for r in pa.Table.from_pandas(frame, preserve_index=False).to_pylist()}


# --- Ignite: a client that reconnects, and the stream's lease ----------------------------------------------------
class IgniteSession:
    """One pyignite client for the driver, replaced after an error; ``run`` retries work for a while (a node
    restarting) — safe because every write of a batch is idempotent."""

    def __init__(self, hosts: str, retry_seconds: float, options: dict[str, Any]):
        self.addresses = parse_addresses(hosts, env_int("KILN_IGNITE_PORT"))
        self.retry_seconds = retry_seconds
        self.options = options
        self.client = None

    def connect(self):
        if self.client is None:
            from pyignite import Client

            client = Client(timeout=10.0, partition_aware=False, **self.options)
            client.connect(self.addresses)
            self.client = client
        return self.client

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def run(self, work, what: str):
        from ml_tasks.features.ignite_connection import ignite_errors, login_refused

        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                return work(self.connect())
            except login_refused() as exc:  # bad input, not a fault: a retry would be refused the same way
                self.drop()
                who = f"the login {self.options['username']!r}" if self.options.get("username") else "a stream with no login"
                raise KilnError(f"Ignite at {self.addresses} refused {who}: {exc}; give the Ignite connection "
                                "(ignite_default) the cluster's login") from exc
            except ignite_errors() as exc:
                self.drop()
                if time.monotonic() > deadline:
                    raise StreamFailed(f"Ignite at {self.addresses} failed {what} for {self.retry_seconds:.0f}s: "
                                    f"{type(exc).__name__}: {exc}") from exc
                log.warning("Ignite failed %s (%s: %s); retrying", what, type(exc).__name__, exc)
                time.sleep(1.0)


class StreamLease:
    """The alias's stream lease, renewed by a thread on its own client; ``check`` raises once it is lost."""

    def __init__(self, cfg: StreamConfig):
        self.cfg = cfg
        self.ignite = IgniteSession(cfg.ignite_hosts, cfg.lease_seconds, cfg.ignite_options)
        self.lease: AliasLease | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="kiln-stream-lease", daemon=True)

    def acquire(self, wait_seconds: float) -> bool:
        """Take the lease, waiting up to ``wait_seconds`` (a killed driver's lease expires within lease_seconds)."""
        def take(client) -> AliasLease | None:
            lease = AliasLease(client, self.cfg.lease_name, self.cfg.lease_seconds)
            return lease if lease.try_acquire() else None

        deadline = time.monotonic() + wait_seconds
        while True:
            lease = self.ignite.run(take, "taking the stream lease")
            if lease is not None:
                self.lease = lease
                self._thread.start()
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)

    def holder(self) -> str:
        lease = self.lease or self.ignite.run(lambda c: AliasLease(c, self.cfg.lease_name, self.cfg.lease_seconds), "reading the lease")
        return self.ignite.run(lambda _c: lease.holder(), "reading the lease")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.cfg.lease_seconds / 4):
            try:
                assert self.lease is not None
                self.lease.cache = self.ignite.connect().get_or_create_cache(self.lease.cache.name)
                if self.lease.cache.get(self.lease.name) is None:  # the cluster lost it (a full restart): take it again
                    self.lease.try_acquire()
                self.lease.renew(force=True)
            except LeaseLost as exc:
                self.lost = str(exc)
                return
            except Exception as exc:  # Ignite unreachable: keep trying; the batches' own retries decide the query's fate
                self.ignite.drop()
                log.warning("could not renew the stream lease: %s: %s", type(exc).__name__, exc)

    def check(self) -> None:
        if self.lost:
            raise StreamFailed(f"stream lease on {self.cfg.feature_cache} lost: {self.lost}")

    def release(self) -> None:
        self._stop.set()
        if self.lease is not None:
            with contextlib.suppress(Exception):
                self.lease.cache = self.ignite.connect().get_or_create_cache(self.lease.cache.name)
                self.lease.release()
        self.ignite.drop()


# --- one micro-batch ---------------------------------------------------------------------------------------------
def latency_histogram(received_ms, applied_ms: int) -> dict[str, int]:
    """Received by the broker -> servable latencies in ``LATENCY_BUCKET_MS`` buckets (bucket start ms -> events)."""
    import numpy as np

    buckets = np.maximum(applied_ms - np.asarray(received_ms, dtype="int64"), 0) // LATENCY_BUCKET_MS
    values, counts = np.unique(buckets, return_counts=True)
    return {str(int(v) * LATENCY_BUCKET_MS): int(n) for v, n in zip(values, counts, strict=True)}


def quantile(hist: dict[str, int], q: float) -> float | None:
    """The ``q`` quantile (ms, the bucket's upper edge) of one or more merged histograms."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for bucket, n in sorted(((int(b), n) for b, n in hist.items())):
        seen += n
        if seen >= q * total:
            return float(bucket + LATENCY_BUCKET_MS)
    return None


COUNTED = ("events", "applied", "dead_letters", "older", "entities", "written")


def dead_letter_value(raw: bytes | None, size: int, utf8: bool) -> dict[str, Any]:
    """A rejected message's value as a dead letter carries it: text when it was UTF-8 (cut at a character), else
    base64; at most ``DEAD_LETTER_VALUE_BYTES`` of it, with its whole size."""
    out: dict[str, Any] = {"value_bytes": size, "value_truncated": size > len(raw or b"")}
    if raw is None:
        return {**out, "value": None}
    if utf8:  # only a cut through the last character can fail to decode
        return {**out, "value": raw.decode("utf-8", errors="ignore" if out["value_truncated"] else "strict")}
    return {**out, "value": None, "value_base64": base64.b64encode(raw).decode("ascii")}


@dataclass
class BatchWriter:
    """``foreachBatch``: dead letters to Kafka, the newest valid events to Ignite, the batch's figures."""

    cfg: StreamConfig
    lease: StreamLease
    ignite: IgniteSession
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("batches", *COUNTED), 0))
    last_batch_id: int | None = None
    _producer: Any = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        import pyarrow.compute as pc

        self.lease.check()
        started = time.time()
        # One Spark job per batch: the parsed batch comes to the driver as Arrow, where the dead letters are sent
        # and the newest per entity is picked by the batch path's own function (a Spark-side reduction cost more
        # in shuffles than it saved in rows, measured at these batch sizes).
        table = batch.toArrow()
        events = table.num_rows
        if events == 0:
            return
        steps = {"read": time.time() - started}
        is_bad = pc.is_valid(table.column("reason"))
        bad, valid = table.filter(is_bad), table.filter(pc.invert(is_bad))
        if bad.num_rows:
            self.send_dead_letters(bad, batch_id)
        steps["dead letters"] = time.time() - started - sum(steps.values())
        entries = batch_entries(valid, self.cfg.schema)
        steps["newest"] = time.time() - started - sum(steps.values())
        merged = self.ignite.run(lambda c: apply_stream_batch(c, self.cfg.feature_cache, entries), f"batch {batch_id}")
        applied_ms = int(time.time() * 1000)
        steps["ignite"] = time.time() - started - sum(steps.values())
        # Every event is counted once: applied (now its entity's newest), a dead letter, or older (its entity has a
        # newer event, in this batch or applied before). A replayed batch counts the same (equal is not older).
        applied = len(entries) - merged["stale"]
        figures = {"batch_id": batch_id, "events": events, "dead_letters": bad.num_rows, "applied": applied,
                   "older": valid.num_rows - applied, "entities": len(entries), "written": merged["written"],
                   "republished": merged["republished"], "version": merged["version"], "applied_ms": applied_ms,
                   "seconds": round(time.time() - started, 3),
                   "latency_ms": latency_histogram(valid.column("received_ms").to_numpy(), applied_ms)}
        self.ignite.run(lambda c: c.get_or_create_cache(BATCHES_CACHE).put(
            f"{self.cfg.feature_cache}|{batch_id:012d}", json.dumps(figures)), f"recording batch {batch_id}")
        for name in COUNTED:
            self.totals[name] += figures[name]
        self.totals["batches"] += 1
        self.last_batch_id = batch_id
        log.info("batch %d: %d events = %d applied + %d dead letters + %d older; %d entities written to %s, %.2fs (%s)",
                 batch_id, events, applied, bad.num_rows, figures["older"], merged["written"], merged["version"],
                 figures["seconds"], ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))
        if bad.num_rows / events > self.cfg.alert_dead_letter_share:
            self.alert({"kind": "dead_letters", "dataset": self.cfg.dataset, "batch_id": batch_id,
                        "events": events, "dead_letters": bad.num_rows, "share": round(bad.num_rows / events, 4)})

    def producer(self):
        if self._producer is None:
            from confluent_kafka import Producer

            from ml_tasks.features.events import kafka_config

            self._producer = Producer(kafka_config(self.cfg.bootstrap_servers, **{"linger.ms": 5, "acks": "all"}))
        return self._producer

    def send_dead_letters(self, bad, batch_id: int) -> None:
        """Each to the dead-letter topic keyed by where it came from, delivered before the batch counts as done."""
        producer, failed = self.producer(), []
        for row in bad.select(["topic", "partition", "offset", "reason", "raw_value", "value_bytes", "utf8"]).to_pylist():
            key = f"{row['topic']}/{row['partition']}/{row['offset']}"
            value = {"reason": row["reason"], **dead_letter_value(row["raw_value"], row["value_bytes"], row["utf8"]),
                     "topic": row["topic"], "partition": row["partition"], "offset": row["offset"], "batch_id": batch_id}
            producer.produce(self.cfg.dead_letter_topic, key=key.encode(), value=json.dumps(value).encode(),
                             on_delivery=lambda err, _m: err is not None and failed.append(str(err)))
            producer.poll(0)
        if producer.flush(30) or failed:
            raise StreamFailed(f"dead letters of batch {batch_id} not delivered to {self.cfg.dead_letter_topic}: "
                               f"{failed[:1] or 'timed out'}")

    def alert(self, message: dict[str, Any]) -> None:
        """Tell whoever listens (Airflow's AssetWatcher on the alerts topic); a failed alert is logged, not fatal."""
        try:
            producer = self.producer()
            producer.produce(self.cfg.alerts_topic, key=self.cfg.dataset.encode(), value=json.dumps(message).encode())
            producer.flush(10)
            log.warning("alert on %s: %s", self.cfg.alerts_topic, message)
        except Exception as exc:
            log.error("could not send the alert %s: %s", message, exc)


# --- the query ---------------------------------------------------------------------------------------------------
def log_spark_progress(spark) -> None:
    """Log where Spark spent each micro-batch (offsets, planning, our batch function, commit): the part of the
    freshness the batch function's own timing does not show. Delivered off the query thread, so it costs none."""
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressLog(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:
            pass

        def onQueryProgress(self, event) -> None:
            p = event.progress
            if p.numInputRows:
                log.info("spark batch %d: %d rows, %s", p.batchId, p.numInputRows,
                         ", ".join(f"{k} {v} ms" for k, v in sorted(p.durationMs.items())))

        def onQueryIdle(self, event) -> None:
            pass

        def onQueryTerminated(self, event) -> None:
            pass

    spark.streams.addListener(ProgressLog())


def run_stream(cfg: StreamConfig) -> dict[str, Any]:
    """Run the query: until the events waiting now are processed (available_now), or until ``run_minutes`` pass
    or SIGTERM (continuous). Raises ``KilnError`` naming the cause when the query fails."""
    from ml_tasks.features.events import ensure_topics

    if cfg.schema.timestamp is None:
        raise KilnError(f"dataset {cfg.dataset!r} has no timestamp column; streaming needs event times")
    ensure_topics(cfg.bootstrap_servers, [cfg.topic, cfg.dead_letter_topic, cfg.alerts_topic], events_topic=cfg.topic)
    lease = StreamLease(cfg)
    if not lease.acquire(wait_seconds=cfg.lease_seconds + 5):
        message = f"a stream of {cfg.feature_cache} is running already ({lease.holder()})"
        lease.release()
        if cfg.available_now:  # the schedule's run while a continuous stream keeps the features fresh: nothing to do
            raise StageSkipped(message)
        raise StreamFailed(message)
    ignite = IgniteSession(cfg.ignite_hosts, cfg.ignite_retry_seconds, cfg.ignite_options)
    writer = BatchWriter(cfg, lease, ignite)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop between batches, the checkpoint intact
    began = time.monotonic()
    spark = None
    try:
        spark = streaming_session(f"kiln-stream-{cfg.dataset}")
        log_spark_progress(spark)
        raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", cfg.bootstrap_servers)
               .option("subscribe", cfg.topic).option("startingOffsets", "earliest")
               .option("maxOffsetsPerTrigger", cfg.max_events_per_batch).load())
        stream = (parse_events(raw, cfg.schema, cfg.limits).writeStream.queryName(f"kiln_stream_{cfg.dataset}")
                  .foreachBatch(writer).option("checkpointLocation", str(cfg.checkpoint)))
        stream = stream.trigger(availableNow=True) if cfg.available_now else stream.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
        query = stream.start()
        deadline = began + cfg.run_minutes * 60 if cfg.run_minutes and not cfg.available_now else None
        while query.isActive and not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            query.awaitTermination(1.0)
        if query.isActive:
            query.stop()
        if query.exception() is not None:
            raise StreamFailed(f"streaming query of {cfg.dataset} failed: {query.exception()}")
        # A warm that switched the alias after the last batch: carry the stream table into the new version now.
        catch_up = ignite.run(lambda c: apply_stream_batch(c, cfg.feature_cache, {}), "the final catch-up")
    finally:
        lease.release()
        ignite.drop()
        if spark is not None:
            with contextlib.suppress(Exception):
                spark.stop()
    return {"dataset": cfg.dataset, "mode": "available_now" if cfg.available_now else "continuous",
            "topic": cfg.topic, "dead_letter_topic": cfg.dead_letter_topic, "checkpoint": str(cfg.checkpoint),
            **writer.totals, "last_batch_id": writer.last_batch_id, "republished_at_end": catch_up["republished"],
            "live_version": catch_up["version"], "seconds": round(time.monotonic() - began, 1)}


def batch_figures(client, feature_cache: str) -> list[dict[str, Any]]:
    """Every recorded batch of an alias's stream, oldest first (tests and the benchmark read these)."""
    prefix = f"{feature_cache}|"
    with client.get_or_create_cache(BATCHES_CACHE).scan() as cursor:
        rows = [json.loads(v) for k, v in cursor if k.startswith(prefix)]
    return sorted(rows, key=lambda r: r["batch_id"])


def supervise(command: list[str], max_restarts: int, log_file: Path, window_seconds: float = 600.0) -> dict[str, Any]:
    """Run the streaming driver ``command`` and restart it when it dies; more than ``max_restarts`` deaths within
    ``window_seconds`` fail loudly with its last output. SIGTERM stops the driver (between batches) and returns."""
    import collections
    import subprocess
    import sys

    from ml_tasks.core.processes import die_with_parent

    log_file.parent.mkdir(parents=True, exist_ok=True)
    deaths: collections.deque[float] = collections.deque()
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def on_sigterm(*_: Any) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.terminate()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    starts = 0
    while True:
        starts += 1
        tail: collections.deque[str] = collections.deque(maxlen=30)
        with log_file.open("a") as out:
            out.write(f"--- driver start {starts} at {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(command)}\n")
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=die_with_parent)
            assert child.stdout is not None
            for line in child.stdout:  # the driver's log, into the task's log and the stream's own
                sys.stderr.write(line)
                out.write(line)
                tail.append(line.rstrip())
            code = child.wait()
        if stopping.is_set() or code == 0:
            result = next((json.loads(t) for t in reversed(tail) if t.startswith("{")), {})
            return {**result, "driver_starts": starts, "stopped_by": "SIGTERM" if stopping.is_set() else "run_minutes"}
        now = time.monotonic()
        deaths.append(now)
        while deaths and deaths[0] < now - window_seconds:
            deaths.popleft()
        if len(deaths) > max_restarts:
            raise StreamFailed(f"the streaming driver died {len(deaths)} times within {window_seconds / 60:.0f} minutes "
                               f"(stream_max_restarts={max_restarts}); last exit code {code}; its last lines:\n"
                               + "\n".join(tail))
        backoff = min(2 ** (len(deaths) - 1), 30)
        log.warning("streaming driver exited with code %s; restart %d of %d in %ds (log %s)", code, len(deaths),
                    max_restarts, backoff, log_file)
        if stopping.wait(backoff):
            return {"driver_starts": starts, "stopped_by": "SIGTERM"}
