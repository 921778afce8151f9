"""Transactions-shaped events into Kafka, for the demo, the tests and the benchmarks (``produce-events``).

Each event is one row of the synthetic transactions generator as a JSON object keyed by its entity, its
event time now (ISO-8601, UTC) unless it is one of the ``late_share`` that happened up to two hours earlier
(so events arrive out of order), and ``malformed_share`` of them broken in one of the ways a real feed
breaks: not JSON, no entity id, an unreadable event time, a non-numeric amount. Kafka's message timestamp
is the produce time, which the streaming job's freshness figures start from.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ml_tasks.core.errors import KilnError
from ml_tasks.core.spec import DatasetSpec, SyntheticSource

log = logging.getLogger(__name__)
MALFORMED_KINDS = ("not_json", "no_key", "bad_timestamp", "bad_number")
LATE_BY = timedelta(hours=2)


def kafka_config(bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers, "client.id": "kiln", **extra}


# The broker stamps each event with the time it received it: the stream checks event times against that stamp,
# which no producer can set (under CreateTime, the default, the producer's own clock would be the reference).
EVENTS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def ensure_topics(bootstrap_servers: str, topics: list[str], partitions: int = 4, timeout: float = 30.0,
                  events_topic: str | None = None) -> None:
    """Create the topics that do not exist yet (one broker here: replication factor 1); ``events_topic`` with
    the broker's receive time as its messages' timestamps (``EVENTS_TOPIC_CONFIG``)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    admin = AdminClient(kafka_config(bootstrap_servers))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except Exception as exc:  # confluent_kafka.KafkaException: broker unreachable
        raise KilnError(f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f}s: {exc}") from exc
    if events_topic in existing:
        resource = ConfigResource(ConfigResource.Type.TOPIC, events_topic)
        stamp = admin.describe_configs([resource])[resource].result(timeout)["message.timestamp.type"].value
        if stamp != EVENTS_TOPIC_CONFIG["message.timestamp.type"]:
            log.warning("topic %s stamps messages with %s: event times are checked against the producers' clocks; "
                        "set message.timestamp.type=LogAppendTime on it (docs/streaming.md)", events_topic, stamp)
    missing = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                        config=EVENTS_TOPIC_CONFIG if t == events_topic else {})
               for t in topics if t not in existing]
    for topic, future in (admin.create_topics(missing) if missing else {}).items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another process created it meanwhile
                raise KilnError(f"could not create Kafka topic {topic}: {exc}") from exc


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def make_events(spec: DatasetSpec, count: int, start: int, entities: int, late_share: float, malformed_share: float,
                seed: int, now: datetime) -> list[tuple[str | None, bytes, str | None, bool]]:
    """``count`` events as (key, value, malformed kind or None, late); deterministic for (seed, start, now)."""
    from ml_tasks.ingestion.synthetic import generate_chunk

    if not isinstance(spec.source, SyntheticSource):
        raise KilnError(f"produce-events generates transactions-shaped events; dataset {spec.name!r} has a "
                        f"{spec.source.kind} source, whose events come from its own producers")
    rng = np.random.default_rng([seed, start])
    rows = generate_chunk(now.date().isoformat(), start, count, entities, seed).to_pylist()
    late = rng.random(count) < late_share
    broken = rng.random(count) < malformed_share
    out = []
    for i, row in enumerate(rows):
        event_time = now - timedelta(seconds=float(rng.uniform(60, LATE_BY.total_seconds()))) if late[i] else now
        event = {c: _clean(row[c]) for c in spec.columns if c in row and c != spec.label}
        event[spec.timestamp] = _iso(event_time)
        key = event[spec.key]
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)] if broken[i] else None
        if kind == "not_json":
            out.append((key, b"{not json: " + str(key).encode() + b"}", kind, bool(late[i])))
            continue
        if kind == "no_key":
            event.pop(spec.key)
        elif kind == "bad_timestamp":
            event[spec.timestamp] = "yesterday-ish"
        elif kind == "bad_number":
            event[spec.features.numeric[0]] = "twelve"
        out.append((key, json.dumps(event).encode(), kind, bool(late[i])))
    return out


def produce_events(spec: DatasetSpec, bootstrap_servers: str, topic: str, rate: float, seconds: float,
                   entities: int = 5000, late_share: float = 0.05, malformed_share: float = 0.0, seed: int = 7,
                   start: int = 0) -> dict[str, Any]:
    """Send ``rate`` events/s for ``seconds`` (``rate`` 0: as fast as possible), paced in 10 ms ticks."""
    from confluent_kafka import Producer

    if rate < 0 or seconds <= 0 or entities < 1 or not (0 <= late_share <= 1) or not (0 <= malformed_share <= 1):
        raise KilnError("produce-events: --rate >= 0, --seconds > 0, --entities >= 1, shares within [0, 1]")
    ensure_topics(bootstrap_servers, [topic], events_topic=topic)
    producer = Producer(kafka_config(bootstrap_servers, **{"linger.ms": 5, "acks": "all", "enable.idempotence": True}))
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    total = int(rate * seconds) if rate else None
    sent = malformed = late = 0
    began = time.monotonic()
    chunk = max(1, int(rate / 100)) if rate else 5000
    while (total is None and time.monotonic() - began < seconds) or (total is not None and sent < total):
        n = chunk if total is None else min(chunk, total - sent)
        now = datetime.now(UTC)
        for key, value, kind, is_late in make_events(spec, n, start + sent, entities, late_share, malformed_share, seed, now):
            while True:
                try:
                    producer.produce(topic, value=value, key=None if key is None else str(key).encode(), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let the broker catch up
                    producer.poll(0.05)
            malformed += kind is not None
            late += is_late
        sent += n
        producer.poll(0)
        if rate:
            ahead = began + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    remaining = producer.flush(60)
    if remaining or errors:
        raise KilnError(f"Kafka did not take {remaining} events ({len(errors)} delivery errors, first: {errors[:1]})")
    elapsed = time.monotonic() - began
    return {"topic": topic, "produced": sent, "malformed": malformed, "late": late, "seconds": round(elapsed, 2),
            "events_per_s": round(sent / max(elapsed, 1e-9)), "first_index": start, "seed": seed}


def alert_of(message) -> dict[str, Any] | None:
    """Airflow's Kafka trigger calls this on each message of an alerts topic: the alert, or None to keep waiting."""
    try:
        alert = json.loads(message.value())
    except (TypeError, ValueError):
        return None
    return alert if isinstance(alert, dict) and "kind" in alert else None


def dead_letter_summary(bootstrap_servers: str, topic: str, batch_id: int | None = None, last: int = 10_000,
                        timeout: float = 30.0) -> dict[str, Any]:
    """What the stream rejected, re-read from its dead-letter topic: counts per rule (the field before ':'), with
    an example of each; only ``batch_id``'s when given, from the last ``last`` messages of every partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka_config(bootstrap_servers, **{"group.id": f"kiln-dead-letters-{time.time_ns()}",
                                                           "enable.auto.commit": False}))
    reasons: dict[str, int] = {}
    examples: dict[str, dict[str, Any]] = {}
    read = 0
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}
        consumer.assign([TopicPartition(topic, p, max(low, high - last)) for p, (low, high) in ends.items()])
        remaining = {p for p, (low, high) in ends.items() if high > low}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.offset() >= ends[msg.partition()][1] - 1:
                remaining.discard(msg.partition())
            letter = json.loads(msg.value())
            if batch_id is not None and letter.get("batch_id") != batch_id:
                continue
            read += 1
            rule = str(letter.get("reason", "")).split(":")[0]
            reasons[rule] = reasons.get(rule, 0) + 1
            examples.setdefault(rule, letter)
    finally:
        consumer.close()
    return {"topic": topic, "batch_id": batch_id, "dead_letters": read,
            "by_rule": dict(sorted(reasons.items(), key=lambda kv: -kv[1])), "examples": examples}
