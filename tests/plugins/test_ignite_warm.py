"""Cache warming against a real Ignite node: switch, crash and retry, bad source, dead node."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from ml_tasks.errors import KilnError
from ml_tasks.feature_cache import ALIAS_CACHE, cache_name, current_version, get_many, versions, warm

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


def test_retention_keeps_the_newest_versions(ignite_node, tmp_path):
    client = ignite_node.client()
    made = []
    for i, tag in enumerate(["a", "b", "c"]):
        made.append(warm(client, "t_retain", source(tmp_path, 300, tag), version_prefix=f"2026-01-0{i + 1}-")["version"])
    assert versions(client, "t_retain") == made[1:]
    assert current_version(client, "t_retain") == made[2]


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


def test_node_killed_mid_warm_then_retry_completes_and_readers_never_see_a_partial_version(ignite_node, tmp_path):
    client = ignite_node.client()
    old = warm(client, "t_crash", source(tmp_path, 2_000, "old"), version_prefix="2026-01-01-")["version"]
    big = source(tmp_path, 150_000, "new")
    probe = [f"e{i:07d}" for i in range(0, 2_000, 97)]
    seen: list[tuple[str | None, int, set[str]]] = []
    stop = threading.Event()

    def reader() -> None:
        c = None
        while not stop.is_set():
            try:
                c = c or ignite_node.client()
                version, rows = get_many(c, "t_crash", probe)
                seen.append((version, len(rows), {r["tag"] for r in rows.values()}))
            except Exception:  # the node is down for a moment: readers reconnect, as a service would
                c = None
                time.sleep(0.2)
            time.sleep(0.02)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    errors: list[BaseException] = []
    progress: list[str] = []

    def warming() -> None:
        try:
            warm(ignite_node.client(), "t_crash", big, version_prefix="2026-01-02-", progress=progress.append)
        except BaseException as exc:
            errors.append(exc)

    loader = threading.Thread(target=warming)
    loader.start()
    deadline = time.monotonic() + 60
    while not any("warming" in p for p in progress) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("warming" in p for p in progress), "the load never started"
    os.kill(ignite_node.pid, signal.SIGKILL)
    loader.join(timeout=60)
    assert errors, "warming should fail when the node dies"

    ignite_node.stop()  # clears the pid file of the killed node
    ignite_node.start()  # persistence: the old version and the alias survive the crash
    client = ignite_node.client()
    assert current_version(client, "t_crash") == old
    retried = warm(client, "t_crash", big, version_prefix="2026-01-02-")
    assert retried["switched"] and retried["entries"] == 150_000
    time.sleep(0.3)
    stop.set()
    reading.join(timeout=5)

    assert current_version(client, "t_crash") == retried["version"]
    assert old in versions(client, "t_crash")  # retained, still readable
    reads = [s for s in seen if s[0] is not None]
    assert reads and reads[0][0] == old and reads[-1][0] == retried["version"]
    for version, count, tags in reads:  # every read: one whole version, never a partial or mixed one
        assert count == len(probe), (version, count)
        assert tags == ({"old"} if version == old else {"new"})
    assert client.get_or_create_cache(ALIAS_CACHE).get("t_crash") == retried["version"]
