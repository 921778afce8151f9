"""Cache warming against a real Ignite node: switch, crash and retry, bad source, dead node."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from ml_tasks.core.errors import KilnError
from ml_tasks.features.feature_cache import (
    ALIAS_CACHE,
    WarmOptions,
    cache_name,
    current_version,
    get_many,
    versions,
    warm,
)

pytestmark = pytest.mark.ignite


def source(tmp_path: Path, n: int, tag: str, drop_key: bool = False) -> Path:
    frame = pd.DataFrame({"entity_id": [f"e{i:07d}" for i in range(n)], "amount": [float(i) for i in range(n)],
                          "tag": [tag] * n})
    if drop_key:
        frame = frame.drop(columns=["entity_id"])
    path = tmp_path / f"{tag}.parquet"
    frame.to_parquet(path, index=False)
    return path


def warm_operator(src: Path, name: str, **kwargs):
    from kiln.operators.ignite import IgniteCacheWarmOperator

    return IgniteCacheWarmOperator(task_id="warm", source=str(src), cache_name=name, version_prefix="2026-01-01-", **kwargs)


@pytest.mark.slow  # a real Ignite node
def test_warm_verifies_then_switches_the_alias(ignite_node, tmp_path):
    result = warm_operator(source(tmp_path, 5_000, "v1"), "t_switch", batch_size=700).execute(context={})
    client = ignite_node.client()
    assert result["switched"] and result["entries"] == 5_000
    assert current_version(client, "t_switch") == result["version"]
    assert client.get_cache(cache_name("t_switch", result["version"])).get_size() == 5_000
    version, rows = get_many(client, "t_switch", ["e0000042", "missing"])
    assert version == result["version"] and rows == {"e0000042": {"entity_id": "e0000042", "amount": 42.0, "tag": "v1"}}
    again = warm_operator(source(tmp_path, 5_000, "v1"), "t_switch").execute(context={})
    assert again["switched"] is False  # same data: idempotent, nothing reloaded


@pytest.mark.slow  # a real Ignite node
def test_a_warm_carries_newer_streamed_entries_into_its_new_version(ignite_node, tmp_path):
    """A daily warm of older batch data must not hide what the stream wrote since: the stream table's newer
    entries go into the new version before it goes live; the stream, on its next batch, republishes into it."""
    from ml_tasks.features.feature_cache import apply_stream_batch, stream_cache_name

    def batch(tag: str, ts: int) -> Path:
        frame = pd.DataFrame({"entity_id": ["a", "b", "c"], "event_ts": [ts] * 3, "amount": [1.0, 2.0, 3.0], "tag": [tag] * 3})
        frame.to_parquet(tmp_path / f"{tag}.parquet", index=False)
        return tmp_path / f"{tag}.parquet"

    def entry(key: str, ts: int, amount: float) -> str:
        return json.dumps({"entity_id": key, "event_ts": ts, "amount": amount, "tag": "stream"})

    client = ignite_node.client()
    warm(client, "t_stream", batch("day1", 1_000), version_prefix="2026-01-01-")
    assert apply_stream_batch(client, "t_stream", {"a": entry("a", 5_000, 50.0), "d": entry("d", 5_000, 4.0)})["written"] == 2
    # The next day's batch is newer than the streamed "a"? No: 3 000 < 5 000, so "a" keeps its streamed entry.
    result = warm(client, "t_stream", batch("day2", 3_000), version_prefix="2026-01-02-")
    live = client.get_cache(cache_name("t_stream", result["version"]))
    assert json.loads(live.get("a"))["amount"] == 50.0 and json.loads(live.get("d"))["amount"] == 4.0
    assert json.loads(live.get("b"))["tag"] == "day2"
    # A batch newer than the stream wins over it.
    result = warm(client, "t_stream", batch("day3", 9_000), version_prefix="2026-01-03-")
    live = client.get_cache(cache_name("t_stream", result["version"]))
    assert json.loads(live.get("a"))["tag"] == "day3" and json.loads(live.get("d"))["amount"] == 4.0
    # The stream writes after a switch it did not see: its next batch first republishes its table into the new version.
    client.get_cache(cache_name("t_stream", result["version"])).remove_key("d")  # as if "d" arrived after the carry
    applied = apply_stream_batch(client, "t_stream", {"e": entry("e", 9_500, 5.0)})
    assert applied["version"] == result["version"] and applied["republished"] >= 1
    assert json.loads(live.get("d"))["amount"] == 4.0 and json.loads(live.get("e"))["amount"] == 5.0
    assert client.get_cache(stream_cache_name("t_stream")).get_size() == 3


@pytest.mark.slow  # a real Ignite node
def test_retention_keeps_the_newest_versions(ignite_node, tmp_path):
    client = ignite_node.client()
    made = []
    for i, tag in enumerate(["a", "b", "c"]):
        made.append(warm(client, "t_retain", source(tmp_path, 300, tag), version_prefix=f"2026-01-0{i + 1}-")["version"])
    assert versions(client, "t_retain") == made[1:]
    assert current_version(client, "t_retain") == made[2]


@pytest.mark.slow  # a real Ignite node
def test_source_without_the_key_changes_nothing(ignite_node, tmp_path):
    client = ignite_node.client()
    good = warm(client, "t_badkey", source(tmp_path, 200, "good"), version_prefix="2026-01-01-")["version"]
    with pytest.raises(KilnError, match="has no key column 'entity_id'"):
        warm_operator(source(tmp_path, 200, "bad", drop_key=True), "t_badkey").execute(context={})
    assert current_version(client, "t_badkey") == good
    assert versions(client, "t_badkey") == [good]


def test_dead_node_is_a_clear_error():
    from kiln.hooks.ignite import IgniteConnectionError, IgniteHook

    os.environ["AIRFLOW_CONN_IGNITE_NOWHERE"] = "ignite://127.0.0.1:10999"
    hook = IgniteHook("ignite_nowhere", connect_retries=2, retry_delay=0.1)
    with pytest.raises(IgniteConnectionError, match=r"no Ignite node answered at \[\('127.0.0.1', 10999\)\] after 2 attempts"), hook.get_client():
        pass


@pytest.mark.slow  # a real Ignite node
def test_the_warm_operator_logs_in_with_its_connections_login(secured_ignite_node, tmp_path, monkeypatch):
    """A cluster that asks for a login: the hook passes the connection's login (URI or JSON form) to every client,
    the warm's loaders too; a connection without it is refused by the node."""
    from pyignite.exceptions import AuthenticationError

    node = secured_ignite_node
    monkeypatch.setenv("AIRFLOW_CONN_IGNITE_DEFAULT", json.dumps(
        {"conn_type": "ignite", "host": "127.0.0.1", "port": node.port, "login": node.username, "password": node.password}))
    result = warm_operator(source(tmp_path, 3_000, "login"), "t_login").execute(context={})
    assert current_version(node.client(), "t_login") == result["version"]
    monkeypatch.setenv("AIRFLOW_CONN_IGNITE_DEFAULT", f"ignite://127.0.0.1:{node.port}")
    with pytest.raises(AuthenticationError):
        warm_operator(source(tmp_path, 3_000, "login2"), "t_login").execute(context={})
    assert current_version(node.client(), "t_login") == result["version"]


@pytest.mark.slow  # a real Ignite node
def test_node_killed_mid_warm_then_retry_completes_and_readers_never_see_a_partial_version(ignite_node, tmp_path):
    client = ignite_node.client()
    old = warm(client, "t_crash", source(tmp_path, 2_000, "old"), version_prefix="2026-01-01-")["version"]
    big = source(tmp_path, 150_000, "new")
    old_keys = {f"e{i:07d}" for i in range(2_000)}
    probe = [f"e{i:07d}" for i in range(0, 150_000, 97)]  # across the whole new load, not its first batches
    seen: list[tuple[str | None, set[str], set[str]]] = []
    stop = threading.Event()
    short_lease = WarmOptions(lease_seconds=5)  # the killed warm's lease outlives it: keep the retry's wait short

    def reader() -> None:
        c = None
        while not stop.is_set():
            try:
                c = c or ignite_node.client()
                version, rows = get_many(c, "t_crash", probe)
                seen.append((version, set(rows), {r["tag"] for r in rows.values()}))
            except Exception:  # the node is down for a moment: readers reconnect, as a service would
                c = None
                time.sleep(0.2)
            time.sleep(0.02)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    progress: list[str] = []

    def kill_the_node_once_loading(message: str) -> None:
        # Called by the warm as batches complete: the node dies with the load part done and other batches in flight
        # on the other connections.
        if "warming" in message and not any("warming" in p for p in progress):
            os.kill(ignite_node.pid, signal.SIGKILL)
        progress.append(message)

    with pytest.raises(Exception):  # noqa: B017 - whatever pyignite raises for a dead node
        warm(ignite_node.client(), "t_crash", big, version_prefix="2026-01-02-", progress=kill_the_node_once_loading,
             options=WarmOptions(batch_size=1000, loaders=3, lease_seconds=5), connect=lambda: contextlib.closing(ignite_node.client()))
    loading = [p for p in progress if "warming" in p]
    assert loading and "150000/150000" not in loading[0], loading  # it died mid-load

    ignite_node.stop()  # clears the pid file of the killed node
    ignite_node.start()  # persistence: the old version and the alias survive the crash
    client = ignite_node.client()
    assert current_version(client, "t_crash") == old
    retried = warm(client, "t_crash", big, version_prefix="2026-01-02-", options=short_lease,
                   connect=lambda: contextlib.closing(ignite_node.client()))
    assert retried["switched"] and retried["entries"] == 150_000
    time.sleep(0.3)
    stop.set()
    reading.join(timeout=5)

    assert current_version(client, "t_crash") == retried["version"]
    assert old in versions(client, "t_crash")  # retained, still readable
    reads = [s for s in seen if s[0] is not None]
    assert reads and reads[0][0] == old and reads[-1][0] == retried["version"]
    for version, keys, tags in reads:  # every read: one whole version, never a partial or mixed one
        assert keys == (set(probe) & old_keys if version == old else set(probe)), (version, len(keys))
        assert tags == ({"old"} if version == old else {"new"})
    assert client.get_or_create_cache(ALIAS_CACHE).get("t_crash") == retried["version"]


@pytest.mark.slow  # a real Ignite node
def test_two_warmers_of_one_alias_take_turns_and_neither_destroys_the_others_load(ignite_node, tmp_path):
    """The in-DAG warm and the asset-triggered refresh load the same champion's features at once."""
    big = source(tmp_path, 120_000, "same")
    results: dict[str, dict] = {}
    errors: list[BaseException] = []
    progress: dict[str, list[str]] = {"first": [], "second": []}
    second_waits = threading.Event()

    def warming(who: str) -> None:
        def report(message: str) -> None:
            progress[who].append(message)
            if who == "second" and "is being warmed by" in message:
                second_waits.set()
            if who == "first" and "warming" in message and "second" not in threads:
                # Mid-load, the other warmer starts; this one goes on once it has found the lease taken.
                threads["second"] = threading.Thread(target=warming, args=("second",))
                threads["second"].start()
                second_waits.wait(30)

        try:
            results[who] = warm(ignite_node.client(), "t_race", big, version_prefix="2026-01-05-", progress=report,
                                options=WarmOptions(batch_size=1000))
        except BaseException as exc:
            errors.append(exc)

    threads = {"first": threading.Thread(target=warming, args=("first",))}
    threads["first"].start()
    threads["first"].join(timeout=300)
    threads["second"].join(timeout=300)
    assert errors == []
    assert results["first"]["switched"] and results["first"]["entries"] == 120_000
    assert any("is being warmed by" in p for p in progress["second"]), progress["second"]
    assert results["second"]["switched"] is False  # it found the other's complete load and left it alone
    assert current_version(ignite_node.client(), "t_race") == results["first"]["version"]


@pytest.mark.slow  # a real Ignite node
def test_an_incomplete_live_version_is_topped_up_in_place_never_destroyed(ignite_node, tmp_path):
    client = ignite_node.client()
    src = source(tmp_path, 3_000, "live")
    live = warm(client, "t_topup", src, version_prefix="2026-01-06-")["version"]
    cache = client.get_cache(cache_name("t_topup", live))
    cache.remove_keys([f"e{i:07d}" for i in range(0, 3_000, 10)])  # entries lost (eviction, a node's partition)
    reads, failures = [], []
    stop = threading.Event()

    def reader() -> None:  # a destroyed live cache answers "cache does not exist" for as long as the reload takes
        c = ignite_node.client()
        live_cache = c.get_cache(cache_name("t_topup", live))
        while not stop.is_set():
            try:
                reads.append(live_cache.get("e0000001"))
            except Exception as exc:
                failures.append(exc)

    reading = threading.Thread(target=reader)
    reading.start()
    time.sleep(0.2)
    again = warm(client, "t_topup", src, version_prefix="2026-01-06-", options=WarmOptions(batch_size=100, loaders=3),
                 connect=lambda: contextlib.closing(ignite_node.client()))
    stop.set()
    reading.join(timeout=10)
    assert again["version"] == live and current_version(client, "t_topup") == live
    assert cache.get_size() == 3_000 and cache.get("e0000010") is not None
    assert failures == [] and len(reads) > 100 and all(r is not None for r in reads)


def test_the_connection_lists_every_node_with_its_own_port(monkeypatch):
    from kiln.hooks.ignite import IgniteHook

    monkeypatch.setenv("AIRFLOW_CONN_IGNITE_PAIR", json.dumps({"conn_type": "ignite", "host": "a, b:10801,c", "port": 10900}))
    addresses, _ = IgniteHook("ignite_pair").client_config()
    assert addresses == [("a", 10900), ("b", 10801), ("c", 10900)]  # each node the client may fail over to


def test_parallel_loading_reads_a_bounded_number_of_batches_ahead_and_raises_the_first_failure():
    """A 1 M-entry warm must not read its source faster than the node takes it (memory), a connection carries one
    batch at a time (pyignite's clients are not thread-safe), and a failed batch fails the warm."""
    from ml_tasks.features.feature_cache import load_in_parallel

    read: list[int] = []
    busy: set[str] = set()
    shared: list[str] = []
    written: list[int] = []
    release = threading.Event()
    failures: list[BaseException] = []

    def batches():
        for i in range(100):
            read.append(i)
            yield {"i": i}

    def write(connection: str, batch: dict) -> None:
        if connection in busy:
            shared.append(connection)
        busy.add(connection)
        try:
            release.wait(10)
            if batch["i"] == 4:
                raise ValueError("the node refused batch 4")
        finally:
            busy.discard(connection)

    def load() -> None:
        try:
            load_in_parallel(batches(), write, ["a", "b"], lambda batch: written.append(batch["i"]))
        except BaseException as exc:
            failures.append(exc)

    loading = threading.Thread(target=load)
    loading.start()
    deadline = time.monotonic() + 10
    while len(busy) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # both connections are busy: the loader may read one batch ahead, no more
    assert len(busy) == 2 and read == [0, 1, 2]
    release.set()
    loading.join(timeout=10)
    assert [type(f) for f in failures] == [ValueError] and "batch 4" in str(failures[0])
    assert written == [0, 1, 2, 3] and len(read) <= 7 and shared == []
