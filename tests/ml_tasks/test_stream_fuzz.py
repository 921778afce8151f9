"""No message can stop the stream or poison an entity: a generated corpus of broken, hostile and valid messages on
the real broker, through the real stream (its driver killed halfway), and the same corpus through batch ingest.

Every message of the corpus carries the verdict it must get: valid, or the rules it may be dead-lettered under
(one rule where the message breaks one thing; a few where the message is not an object, whose exact reason is
Spark's parser's business). The oracle for the features is the batch path over the events the corpus says valid.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.layout import Layout
from ml_tasks.core.spec import parse_spec
from ml_tasks.features.events import make_events
from ml_tasks.features.feature_cache import stream_cache_name
from ml_tasks.features.online_features import latest_features
from ml_tasks.features.streaming import DEAD_LETTER_VALUE_BYTES, batch_figures
from ml_tasks.ingestion.event_rules import NOT_JSON, NOT_UTF8, rule_of
from ml_tasks.ingestion.ingest import ingest
from tests.ml_tasks.test_streaming import (
    Supervised,
    batch_path_entries,
    cache_entries,
    read_topic,
    stream_env,
    stream_spec,
    wait_for_events,
)

TOO_BIG = "value is over the size limit"


@dataclass
class Message:
    value: bytes | None
    verdict: frozenset[str]  # the rules it may be dead-lettered under; empty: valid
    event: dict | None = None  # a valid one's event (the oracle's row), or a typed row ingest sees too


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def corpus(spec, now: datetime, valid_count: int, seed: int) -> list[Message]:
    """Valid events for a few hundred entities (a fifth late), each followed now and then by a broken one."""
    rng = random.Random(seed)
    key, ts = spec.key, spec.timestamp
    amount, category = spec.features.numeric[0], spec.features.categorical[0]
    limits = spec.limits
    events = [json.loads(v) for _k, v, _kind, _late in make_events(spec, valid_count, 0, 300, 0.2, 0.0, seed, now)]

    def one(event: dict, verdict: frozenset[str] = frozenset(), typed: bool = True) -> Message:
        return Message(json.dumps(event, ensure_ascii=rng.random() < 0.5).encode(), verdict, event if typed else None)

    def broken(base: dict) -> Message:
        event = dict(base)
        kind = rng.randrange(24)
        if kind == 0:  # random bytes that are not UTF-8
            return Message(b"\xff\xfe" + rng.randbytes(rng.randrange(0, 300)), frozenset({NOT_UTF8}))
        if kind == 1:  # valid JSON but for one byte that is not UTF-8
            text = json.dumps({**event, category: "caf\u00e9"}, ensure_ascii=False).encode("utf-8")
            return Message(text.replace("é".encode(), b"\xe9"), frozenset({NOT_UTF8}))
        if kind == 2:  # truncated JSON
            text = json.dumps(event).encode()
            return Message(text[:rng.randrange(0, len(text) - 1)], frozenset({NOT_JSON, key}))
        if kind == 3:  # not an object
            return Message(rng.choice([b"[1, 2]", b"42", b'"text"', b"null", b"true"]), frozenset({NOT_JSON, key}))
        if kind == 4:  # no value at all (a tombstone)
            return Message(None, frozenset({NOT_JSON}))
        if kind == 5:
            return Message(b"{}", frozenset({key}))
        if kind == 6:  # a number of another type
            event[amount] = rng.choice(["twelve", True, {"a": 1}, [1], "NaN", "", "1e5x"])
            return one(event, frozenset({amount}), typed=False)
        if kind == 7:  # a number too large for a double
            event[amount] = "__huge__"
            return Message(json.dumps(event).replace('"__huge__"', "1e400").encode(), frozenset({amount}))
        if kind == 8:  # no key, or a blank one
            if rng.random() < 0.5:
                event.pop(key)
            else:
                event[key] = rng.choice(["", "   "])
            return one(event, frozenset({key}), typed=False)
        if kind == 9:  # a key over the limit, in letters of any script
            event[key] = "".join(rng.choice("kカ🙂é") for _ in range(limits.max_key_length + rng.randrange(1, 50)))
            return one(event, frozenset({key}))
        if kind == 10:  # the longest key allowed, in emoji (characters, not bytes, count)
            event[key] = "🙂" * (limits.max_key_length - 1) + str(rng.randrange(3))
            return one(event)
        if kind == 11:  # an event time too far ahead: 70 years, two days (past the day's end: batch refuses it
            ahead = rng.choice([timedelta(days=365 * 70), timedelta(days=2), timedelta(hours=1)])  # too), an hour
            event[ts] = iso(now + ahead)  # (maybe later today: the stream's alone to refuse)
            return one(event, frozenset({ts}), typed=ahead > timedelta(hours=1))
        if kind == 12:  # ahead, within the tolerance
            event[ts] = iso(now + timedelta(seconds=rng.randrange(1, limits.max_future_seconds // 3)))
            return one(event)
        if kind == 13:  # long ago (older than whatever the entity has, or its first event)
            event[ts] = rng.choice(["1900-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000Z", "1969-07-20T20:17:40.000Z"])
            return one(event)
        if kind == 14:  # an event time that is no time
            event[ts] = rng.choice(["yesterday-ish", "", "99999999999999999999", "2026-13-45T99:00:00Z", True])
            return one(event, frozenset({ts}), typed=False)
        if kind == 15:  # epoch milliseconds, now and far ahead
            ahead = rng.random() < 0.5
            event[ts] = int((now + (timedelta(days=3650) if ahead else timedelta(0))).timestamp() * 1000)
            return one(event, frozenset({ts}) if ahead else frozenset())
        if kind == 16:  # a text value over the limit, in a message within it
            event[category] = "x" * (limits.max_text_length + rng.randrange(1, 5000))
            return one(event, frozenset({category}))
        if kind == 17:  # a huge text value: a message over the size limit (the 900 KB a producer once sent)
            event[category] = "y" * rng.choice([limits.max_message_bytes, 900_000])
            return one(event, frozenset({TOO_BIG}), typed=False)
        if kind == 18:  # tiny and empty values are values
            event.update({category: "", amount: 0.0})
            return one(event)
        if kind == 19:  # missing features are allowed (imputed)
            event.pop(amount)
            event[category] = None
            return one(event)
        if kind == 20:  # numbers as text
            event[amount] = str(event[amount])
            valid = dict(event, **{amount: float(event[amount])})
            return Message(json.dumps(event).encode(), frozenset(), valid)
        if kind == 21:  # a key that is a number
            event[key] = rng.randrange(10**6)
            return Message(json.dumps(event).encode(), frozenset(), dict(event, **{key: str(event[key])}))
        if kind == 22:  # deeply nested JSON in a field Kiln does not read
            depth = rng.choice([10, 600, 5000])
            text = json.dumps(event)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
            return Message(text.encode(), frozenset({NOT_JSON, ""}), event)  # "": valid, if the parser takes it
        event[rng.choice(spec.features.numeric)] = rng.choice([1e308, -1e308, 5e-324])  # kind 23: extreme finite numbers
        return one(event)

    out: list[Message] = []
    for event in events:
        out.append(Message(json.dumps(event).encode(), frozenset(), event))
        if rng.random() < 0.7:
            out.append(broken(events[rng.randrange(len(events))]))
    return out


def typed_row(spec, event: dict) -> dict:
    """An event as a row of the day's source (and of the oracle): the event time a timestamp, numbers floats."""
    when = event[spec.timestamp]
    when = (datetime.fromtimestamp(when / 1000, UTC) if isinstance(when, int)
            else datetime.fromisoformat(when.replace("Z", "+00:00")))
    return {spec.key: event[spec.key], spec.timestamp: when.astimezone(UTC).replace(tzinfo=None),
            **{c: None if event.get(c) is None else float(event[c]) for c in spec.features.numeric},
            **{c: event.get(c) for c in spec.features.categorical}}


def produce_in_order(bootstrap: str, topic: str, messages: list[Message]) -> None:
    """Every message to partition 0 in corpus order, so a message's offset is its index."""
    from confluent_kafka import Producer

    from ml_tasks.features.events import ensure_topics

    ensure_topics(bootstrap, [topic], events_topic=topic)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    failed: list[str] = []
    for m in messages:
        producer.produce(topic, value=m.value, partition=0, on_delivery=lambda e, _m: e and failed.append(str(e)))
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]


@pytest.mark.slow
@pytest.mark.ignite
@pytest.mark.kafka
def test_no_message_stops_the_stream_or_poisons_an_entity_and_batch_ingest_agrees(tmp_path, kafka_broker, ignite_node):
    spec = stream_spec(tmp_path, "stream_fuzz")
    env = stream_env(tmp_path, kafka_broker, ignite_node)
    now = datetime.now(UTC)
    messages = corpus(spec, now, valid_count=2000, seed=11)
    assert len(messages) > 3000
    produce_in_order(kafka_broker.bootstrap, spec.topic("events"), messages)

    log = tmp_path / "stream.log"
    stream = Supervised(spec, env, log, "--stream-max-events-per-batch", "300", "--stream-max-restarts", "3")
    try:
        client = ignite_node.client()
        wait_for_events(client, spec, 900, 240, "before the kill", log, stream)
        driver = stream.driver_pid()
        assert driver is not None, log.read_text()[-3000:]
        os.kill(driver, signal.SIGKILL)  # batches of the corpus still to go
        wait_for_events(client, spec, len(messages), 300, "after the driver was killed", log, stream)
        result = stream.stop()
    finally:
        stream.kill()
    assert result["driver_starts"] >= 2, result

    # Every message counted once: applied, a dead letter or older; never twice, whatever the kill replayed.
    figures = batch_figures(client, spec.feature_cache)
    totals = {name: sum(f[name] for f in figures) for name in ("events", "applied", "dead_letters", "older")}
    assert totals["events"] == len(messages) == totals["applied"] + totals["dead_letters"] + totals["older"], totals

    # Each message got its verdict: the dead letters are exactly the broken messages, under a rule they break.
    letters = {int(k.rsplit("/", 1)[1]): json.loads(v) for k, v in read_topic(kafka_broker.bootstrap, spec.topic("dead-letters"))}
    assert totals["dead_letters"] == len(letters)
    wrong = [(i, m.verdict, letters.get(i, {}).get("reason")) for i, m in enumerate(messages)
             if (i in letters and rule_of(letters[i]["reason"]) not in m.verdict)
             or (i not in letters and m.verdict and "" not in m.verdict)]
    assert not wrong, f"{len(wrong)} wrong verdicts, e.g. {wrong[:5]}"
    # A dead letter carries what was sent: undecodable bytes as base64, a huge value cut, both with their size.
    for i, letter in letters.items():
        sent = messages[i].value or b""
        assert letter["value_bytes"] == len(sent) and letter["value_truncated"] == (len(sent) > DEAD_LETTER_VALUE_BYTES)
        if letter.get("value_base64") is not None:
            assert base64.b64decode(letter["value_base64"]) == sent[:DEAD_LETTER_VALUE_BYTES]
        elif messages[i].value is not None:
            assert sent.startswith(letter["value"].encode())

    # The features: exactly what the batch path computes over the valid events (no future event froze an entity).
    valid = [typed_row(spec, m.event) for i, m in enumerate(messages) if i not in letters]
    assert len(valid) == totals["applied"] + totals["older"]
    expected = batch_path_entries(spec, valid, tmp_path / "oracle")
    assert cache_entries(client, stream_cache_name(spec.feature_cache)) == expected

    # The same corpus as a day's file: ingest sets aside the rows the stream dead-lettered for the spec's limits,
    # with the same rules, keeps the rest, and the online features it leads to are the stream's.
    limit_rules = {spec.key, spec.timestamp, *spec.features.categorical}  # what a typed row can break
    rows = [(i, typed_row(spec, m.event)) for i, m in enumerate(messages)
            if m.event is not None and (i not in letters or rule_of(letters[i]["reason"]) in limit_rules)]
    columns = [spec.key, spec.timestamp, *spec.features.numeric, *spec.features.categorical]
    table = pa.Table.from_pylist([{**{c: r.get(c) for c in columns}, spec.label: 0} for _i, r in rows])
    pq.write_table(table, tmp_path / "day.parquet")
    spec_text = (Path(spec.folder) / f"{spec.name}.yaml").read_text().replace(
        "kind: synthetic\n  generator: transactions", f"kind: file\n  path: {tmp_path / 'day.parquet'}")
    file_spec = parse_spec(spec_text, "fuzz_day", "fuzz_day.yaml", tmp_path)
    layout = Layout(tmp_path / "batch", file_spec.name, now.date().isoformat())
    summary = ingest(file_spec, layout.ds, layout.raw_dir)
    set_aside = pq.read_table(layout.raw_dir / "_rejected.parquet", columns=[spec.key, "_reason"]).to_pylist()
    by_row = {i for i, _ in rows if i in letters}
    assert summary["rejected"] == len(by_row) == len(set_aside) and summary["rows"] == len(rows) - len(by_row)
    # the same events (by entity) under the same rules
    assert sorted((r[spec.key], rule_of(r["_reason"])) for r in set_aside) == sorted(
        (dict(rows)[i][spec.key], rule_of(letters[i]["reason"])) for i in by_row)
    latest_features(layout.raw_dir, tmp_path / "batch" / "online.parquet")
    assert pq.read_table(tmp_path / "batch" / "online.parquet").num_rows == len(expected)
    assert batch_path_entries(spec, pq.read_table(layout.raw_dir).to_pylist(), tmp_path / "ingested") == expected
