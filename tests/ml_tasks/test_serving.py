"""The online prediction service end to end on loopback, against a real Ignite node and a real registry."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.layout import VersionFiles
from ml_tasks.evaluation.evaluate import Thresholds, evaluate
from ml_tasks.evaluation.registry import register
from ml_tasks.features.feature_cache import cache_name, warm
from ml_tasks.features.online_features import latest_features
from ml_tasks.serving.model_bundle import ModelBundle
from ml_tasks.serving.service import Route
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
SVC = Route(dataset="svc", model_name="svc", feature_cache="svc_features")


@pytest.fixture(scope="module")
def served(small_features, ignite_node):
    """Register a Spark LR champion, warm its features, and run the service on a free loopback port."""
    from ml_tasks.serving.service import Settings
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS

    lay = small_features["layout"]
    train_candidate(BUILTIN_TRAINERS["spark_lr"], {"lr_reg": 0.01, "gbt_max_iter": 1, "gbt_max_depth": 1},
                    task="binary", features=lay.features, candidate=lay.candidate("spark_lr"), checkpoint_dir=lay.checkpoint_dir("spark_lr"))
    evaluate("binary", lay.candidates_root, lay.evaluation, Thresholds(min_auc=0.5, max_log_loss=5, max_calibration_error=1))
    register(lay.evaluation, lay.registry_root, "svc", lay.ds, lay.transform_dir)
    online = latest_features(lay.raw_dir, lay.online_features)
    warm(ignite_node.client(), "svc_features", lay.online_features, version_prefix=lay.ds + "-")
    settings = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=ignite_node.port,
                        prediction_ttl=60)
    with running_service(settings) as url:
        yield {"url": url, "layout": lay, "online": online}


@contextlib.contextmanager
def running_service(settings):
    """The prediction service on a free loopback port, in a thread, stopped on exit."""
    import uvicorn

    from ml_tasks.serving.service import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def single_row_test_entities(lay, n: int = 40) -> list[str]:
    """Held-out entities with exactly one row: their online row is the one scored offline."""
    raw = pq.read_table(lay.raw_dir, columns=["entity_id"]).to_pandas()
    once = set(raw.entity_id.value_counts().loc[lambda s: s == 1].index)
    preds = pd.read_parquet(lay.candidate("spark_lr").predictions)
    return sorted(set(preds.entity_id) & once)[:n]


def test_hit_miss_unknown_and_malformed(served):
    entity = single_row_test_entities(served["layout"], 1)[0]
    with httpx.Client(base_url=served["url"]) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["model_version"] == served["layout"].ds
        first = http.get(f"/predict/{entity}").json()
        second = http.get(f"/predict/{entity}").json()
        assert first["cached"] is False and second["cached"] is True
        assert first["score"] == second["score"] and first["model_version"] == served["layout"].ds
        assert http.get(f"/datasets/svc/predict/{entity}").json()["score"] == first["score"]  # the dataset's own route
        assert http.get("/datasets/nope/predict/x").status_code == 404
        unknown = http.get("/predict/no_such_card")
        assert unknown.status_code == 404 and "unknown entity 'no_such_card'" in unknown.json()["detail"]
        batch = http.post("/predict", json={"entity_ids": [entity, "no_such_card"]}).json()
        assert [p["entity_id"] for p in batch["predictions"]] == [entity] and batch["unknown"] == ["no_such_card"]
        assert http.post("/predict", json={"ids": [entity]}).status_code == 422
        assert http.post("/predict", json={"entity_ids": []}).status_code == 422
        assert http.post("/predict", content=b"not json", headers={"content-type": "application/json"}).status_code == 422


def test_a_keyed_service_answers_only_with_its_key_and_its_503s_keep_their_causes_to_the_log(served, ignite_node):
    """With an API key configured, a request with it is served as before and one without is refused; with Ignite
    unreachable, the 503 says so without the address or the exception behind it."""
    from ml_tasks.serving.service import Settings

    lay = served["layout"]
    entity = single_row_test_entities(lay, 1)[0]
    keyed = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=ignite_node.port,
                     api_key="kiln-key-1")
    with running_service(keyed) as url, httpx.Client(base_url=url) as http:
        assert http.get(f"/predict/{entity}").status_code == 401
        answer = http.get(f"/predict/{entity}", headers={"Authorization": "Bearer kiln-key-1"})
        assert answer.status_code == 200 and answer.json()["entity_id"] == entity
        batch = http.post("/predict", json={"entity_ids": [entity]}, headers={"X-API-Key": "kiln-key-1"})
        assert [p["entity_id"] for p in batch.json()["predictions"]] == [entity]
        assert http.get("/healthz").status_code == 200  # the probes need no key
        assert http.get("/livez").json() == {"status": "alive"}
    gone = free_port()
    unreachable = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=gone,
                           ignite_timeout=0.5)
    with running_service(unreachable) as url, httpx.Client(base_url=url) as http:
        for path in (f"/predict/{entity}", "/healthz"):
            answer = http.get(path)
            detail = answer.json()["detail"]
            assert answer.status_code == 503 and "Ignite" in detail and "unreachable" in detail, detail
            assert "127.0.0.1" not in detail and str(gone) not in detail and "Error" not in detail, detail
        assert http.get("/livez").status_code == 200  # unready without Ignite, yet alive: not restarted for it


def test_a_streamed_update_is_scored_at_once_never_from_the_cached_older_features(served, ignite_node):
    """The stream's own write (``apply_stream_batch``) into the live version: the next request scores the new
    features; the score cached for the old ones is never served again, with no re-warm."""
    from ml_tasks.features.feature_cache import apply_stream_batch, current_version

    entity = single_row_test_entities(served["layout"], 3)[2]
    client = ignite_node.client()
    live = client.get_cache(cache_name("svc_features", current_version(client, "svc_features")))
    with httpx.Client(base_url=served["url"]) as http:
        http.get(f"/predict/{entity}")
        before = http.get(f"/predict/{entity}").json()
        assert before["cached"] is True
        row = json.loads(live.get(entity))
        newer = {**row, "event_ts": row["event_ts"] + 60_000, "amount": (row["amount"] or 10.0) * 40 + 900, "is_foreign": 1.0}
        applied = apply_stream_batch(client, "svc_features", {entity: json.dumps(newer)})
        assert applied["written"] == 1
        after = http.get(f"/predict/{entity}").json()
        assert after["cached"] is False and after["score"] != before["score"]
        assert after["feature_version"] == before["feature_version"]  # no re-warm: the same version, updated in place
        assert http.get(f"/predict/{entity}").json() == {**after, "cached": True}
        # An older event for it changes nothing, and the score of the newer features stays the one served.
        assert apply_stream_batch(client, "svc_features", {entity: json.dumps(row)})["older"] == 1
        assert http.get(f"/predict/{entity}").json()["score"] == after["score"]
    restore_warmed_entry(client, live, entity, row)


def restore_warmed_entry(client, live, entity: str, row: dict) -> None:
    """As warmed, with no score of the streamed features left: the offline-parity test scores these entities too."""
    from ml_tasks.features.feature_cache import forget_predictions, stream_cache_name

    live.put(entity, json.dumps(row))
    forget_predictions(client, live.name, [entity])
    client.get_cache(stream_cache_name("svc_features")).remove_key(entity)


def test_a_score_of_features_replaced_while_it_was_computed_is_never_served(served, ignite_node, monkeypatch):
    """The race of a miss and the stream: the stream writes newer features, and forgets the entity's cached scores,
    after the miss read the old features but before it cached its score. The miss reads the features again after
    caching and drops that score, so the next request scores the new features."""
    from ml_tasks.features.feature_cache import apply_stream_batch, current_version

    entity = single_row_test_entities(served["layout"], 4)[3]
    client = ignite_node.client()
    live = client.get_cache(cache_name("svc_features", current_version(client, "svc_features")))
    row = json.loads(live.get(entity))
    newer = {**row, "event_ts": row["event_ts"] + 60_000, "amount": (row["amount"] or 10.0) * 40 + 900, "is_foreign": 1.0}
    score = ModelBundle.score

    def score_while_the_stream_writes(bundle, rows):
        scores = score(bundle, rows)
        assert apply_stream_batch(client, "svc_features", {entity: json.dumps(newer)})["written"] == 1
        return scores

    with httpx.Client(base_url=served["url"]) as http:
        monkeypatch.setattr(ModelBundle, "score", score_while_the_stream_writes)
        old = http.get(f"/predict/{entity}").json()
        monkeypatch.setattr(ModelBundle, "score", score)
        new = http.get(f"/predict/{entity}").json()
        assert new["cached"] is False and new["score"] != old["score"]
        assert http.get(f"/predict/{entity}").json() == {**new, "cached": True}
    restore_warmed_entry(client, live, entity, row)


def test_online_scores_equal_offline_scores(served):
    lay = served["layout"]
    entities = single_row_test_entities(lay)
    assert len(entities) >= 20
    offline = pd.read_parquet(lay.candidate("spark_lr").predictions).set_index("entity_id").score
    with httpx.Client(base_url=served["url"]) as http:
        online = {p["entity_id"]: p["score"] for p in http.post("/predict", json={"entity_ids": entities}).json()["predictions"]}
    assert sorted(online) == entities
    np.testing.assert_allclose([online[e] for e in entities], offline.loc[entities].to_numpy(), atol=1e-6)


def test_concurrent_requests_each_get_their_own_entitys_score(served):
    """Requests share one multiplexed Ignite connection and score in threads: 64 at once, first misses, then hits;
    each answer is its own entity's, with the champion's score of that entity's warmed features."""
    import asyncio

    from ml_tasks.evaluation.registry import champion_dir
    from ml_tasks.features.online_features import encode

    lay = served["layout"]
    others = set(single_row_test_entities(lay))  # the ones the other tests request
    rows = [r for r in pq.read_table(served["online"]["online_features"]).to_pylist() if r["entity_id"] not in others][:64]
    entities = [r["entity_id"] for r in rows]
    expected = ModelBundle.load(champion_dir(lay.registry_root, "svc")).score([json.loads(encode(r)) for r in rows])

    async def all_at_once() -> list[dict]:
        async with httpx.AsyncClient(base_url=served["url"], limits=httpx.Limits(max_connections=64)) as http:
            answers = await asyncio.gather(*(http.get(f"/predict/{e}") for e in entities))
        return [a.json() for a in answers]

    for cached in (False, True):
        answers = asyncio.run(all_at_once())
        assert [a["entity_id"] for a in answers] == entities
        assert {a["cached"] for a in answers} == {cached}
        np.testing.assert_allclose([a["score"] for a in answers], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("framework", ["mxnet", "singa"])
def test_mlp_bundle_scores_equal_its_offline_scores(framework, small_features, tmp_path):
    """From a raw row, as serving gets it: transform, then the MXNet net or the exported Singa MLP (no Singa import)."""
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS
    from ml_tasks.training.mlp import MLPConfig

    lay = small_features["layout"]
    version = VersionFiles(tmp_path / "version")
    cand = version.model
    ref = BUILTIN_TRAINERS[{"mxnet": "mxnet_mlp", "singa": "singa_mlp"}[framework]]
    train_candidate(ref, MLPConfig(epochs=1).as_settings(),
                    task="binary", features=lay.features,
                    candidate=cand, checkpoint_dir=tmp_path / "ckpt", transform_dir=lay.transform_dir)
    version.transform.dir.symlink_to(lay.transform_dir)
    bundle = ModelBundle.load(version.dir)
    raw = pq.read_table(lay.raw_dir).to_pandas()
    once = raw[raw.entity_id.map(raw.entity_id.value_counts()) == 1]
    preds = pd.read_parquet(cand.predictions).set_index("entity_id")
    rows = once[once.entity_id.isin(preds.index)].head(50)
    assert bundle.framework == framework
    np.testing.assert_allclose(bundle.score(rows.to_dict("records")), preds.loc[rows.entity_id].score.to_numpy(), atol=1e-6)



def test_a_version_registered_before_ml_tasks_had_packages_still_serves(small_features, tmp_path):
    """Versions registered before the modules moved into packages name their scorer by its old module
    (``ml_tasks.train_mxnet:load``, ``ml_tasks.portable:load``), a public path that stays: serving loads them and
    scores alike."""
    from ml_tasks.core.atomic import read_json, write_json
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS
    from ml_tasks.training.mlp import MLPConfig

    lay = small_features["layout"]
    version = VersionFiles(tmp_path / "version")
    train_candidate(BUILTIN_TRAINERS["mxnet_mlp"], MLPConfig(epochs=1).as_settings(), task="binary",
                    features=lay.features, candidate=version.model, checkpoint_dir=tmp_path / "ckpt",
                    transform_dir=lay.transform_dir)
    version.transform.dir.symlink_to(lay.transform_dir)
    today = ModelBundle.load(version.dir)
    info = read_json(version.model.info)
    assert info["scorer"] == "ml_tasks.training.train_mxnet:load"
    write_json(version.model.info, {**info, "scorer": "ml_tasks" + ".train_mxnet:load"})  # as registered before
    before = ModelBundle.load(version.dir)
    rows = pq.read_table(lay.raw_dir).to_pandas().head(20).to_dict("records")
    np.testing.assert_array_equal(before.score(rows), today.score(rows))


class RequestStream:
    """Concurrent clients asking the service for entities in turn, each answer recorded as (phase, when, status),
    labelled with the phase it was answered in. Started and stopped as a context manager."""

    def __init__(self, url: str, entities: list[str], phase: str, clients: int = 3, pause: float = 0.0):
        self.url, self.entities, self.phase, self.pause = url, entities, phase, pause
        self.events: list[tuple[str, float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k * len(entities) // clients,)) for k in range(clients)]

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = offset
            while not self._stop.is_set():
                code = http.get(f"/predict/{self.entities[i % len(self.entities)]}").status_code
                self.events.append((self.phase, time.monotonic(), code))
                i += 1
                time.sleep(self.pause)

    def counts(self, phases: list[str]) -> dict[str, dict[int, int]]:
        return {p: dict(sorted(collections.Counter(c for q, _, c in self.events if q == p).items())) for p in phases}

    def __enter__(self) -> RequestStream:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def test_a_rewarm_is_served_within_the_alias_bound_and_never_before_it_is_complete(served, ignite_node, tmp_path):
    """The service reuses a resolved alias for KILN_ALIAS_TTL (1 s): after a warm switches the alias, every request
    answers from the new version within that bound, and none goes back to the old one."""
    from ml_tasks.serving.service import Settings

    lay = served["layout"]
    entity = single_row_test_entities(lay, 1)[0]
    changed = tmp_path / "changed.parquet"
    table = pd.read_parquet(lay.online_features)
    numeric = next(c for c in table.columns if c not in ("entity_id", "event_ts") and pd.api.types.is_float_dtype(table[c]))
    table.loc[table.entity_id == entity, numeric] += 1.0  # new content: a new version
    table.to_parquet(changed, index=False)
    bound = Settings().alias_ttl
    seen: list[tuple[float, str]] = []
    try:
        with httpx.Client(base_url=served["url"], timeout=10) as http:
            old = http.get(f"/predict/{entity}").json()["feature_version"]
            warm(ignite_node.client(), "svc_features", changed, version_prefix=lay.ds + "-")
            switched = time.monotonic()
            while time.monotonic() - switched < bound + 1.0:
                resp = http.get(f"/predict/{entity}")
                assert resp.status_code == 200, resp.text
                seen.append((time.monotonic() - switched, resp.json()["feature_version"]))
                time.sleep(0.02)
    finally:
        warm(ignite_node.client(), "svc_features", lay.online_features, version_prefix=lay.ds + "-")  # back for the other tests
    new = seen[-1][1]
    assert new != old
    first_new = next(i for i, (_, version) in enumerate(seen) if version == new)
    assert seen[first_new][0] <= bound + 0.1, seen[: first_new + 1]  # within the bound (plus one poll)
    assert all(version == new for _, version in seen[first_new:]), seen  # and never back


def test_ignite_killed_and_restarted_in_memory_the_service_recovers_after_a_rewarm(served, tmp_path_factory):
    """kill -9 the node under a stream of requests, restart it empty, re-warm: only 200/404/503, then 200 again."""
    from ml_tasks.serving.service import Settings
    from tests.ignite_node import IgniteNode

    node = IgniteNode(tmp_path_factory.mktemp("ignite-faults"), port=10950, discovery_port=47650, communication_port=47250)
    node.start()
    lay = served["layout"]
    features = lay.online_features
    entities = single_row_test_entities(lay, 20)
    try:
        warm(node.client(), "svc_features", features, version_prefix=lay.ds + "-")
        settings = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=node.port,
                            prediction_ttl=60, ignite_timeout=1.0)
        with running_service(settings) as url, RequestStream(url, entities, "before", pause=0.005) as stream:
            time.sleep(1.0)
            stream.phase = "down"
            os.kill(node.pid, signal.SIGKILL)
            time.sleep(2.0)
            with httpx.Client(base_url=url, timeout=10) as http:
                assert http.get("/healthz").status_code == 503  # down: never green
                node.stop()
                shutil.rmtree(node.state_dir / "work")  # restarted empty, as an in-memory node restarts
                node.start()  # every cache, the alias and the prediction cache are gone
                stream.phase = "restarted"
                time.sleep(1.0)
                assert http.get("/healthz").status_code == 503  # up but not warmed: still not green
                stream.phase = "rewarmed"
                warm(node.client(), "svc_features", features, version_prefix=lay.ds + "-")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not [c for p, _, c in stream.events[-20:] if p == "rewarmed" and c == 200]:
                    time.sleep(0.2)
                time.sleep(1.0)
                health = http.get("/healthz")
    finally:
        node.stop()
    counts = stream.counts(["before", "down", "restarted", "rewarmed"])
    print(f"status codes per phase: {counts}")
    assert {c for _, _, c in stream.events} <= {200, 404, 503}, counts
    assert set(counts["before"]) == {200} and 503 in counts["down"] and set(counts["restarted"]) == {503}, counts
    tail = [c for p, _, c in stream.events if p == "rewarmed"][-30:]
    assert tail and set(tail) == {200}, counts  # recovered without restarting the service
    assert health.status_code == 200 and health.json()["feature_version"].startswith(lay.ds)


def test_a_regression_champion_answers_its_value_on_its_datasets_route(diabetes_features, ignite_node):
    """The diabetes spec's route serves the predicted value (``prediction``), equal to the offline one."""
    from ml_tasks.serving.service import Settings
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS

    lay, spec = diabetes_features["layout"], diabetes_features["spec"]
    train_candidate(BUILTIN_TRAINERS["spark_lr"], {"lr_reg": 0.01, "gbt_max_iter": 1, "gbt_max_depth": 1},
                    task="regression", features=lay.features, candidate=lay.candidate("spark_lr"), checkpoint_dir=lay.checkpoint_dir("spark_lr"))
    evaluate("regression", lay.candidates_root, lay.evaluation, Thresholds(min_r2=0.35))
    assert register(lay.evaluation, lay.registry_root, spec.registry_name, lay.ds, lay.transform_dir,
                    test_features_dir=lay.features.test)["promoted"]
    latest_features(lay.raw_dir, lay.online_features)
    warm(ignite_node.client(), spec.feature_cache, lay.online_features, key=spec.key, version_prefix=lay.ds + "-")
    route = Route(spec.name, spec.registry_name, spec.feature_cache, spec.task)
    offline = pd.read_parquet(lay.candidate("spark_lr").predictions).set_index("entity_id").score
    with running_service(Settings(data_root=lay.data_root, routes=[route], ignite_port=ignite_node.port)) as url, \
            httpx.Client(base_url=url) as http:
        answer = http.get(f"/datasets/diabetes/predict/{offline.index[0]}").json()
        assert "score" not in answer and answer["dataset"] == "diabetes"
        assert answer["prediction"] == pytest.approx(offline.iloc[0], abs=1e-6) and answer["prediction"] > 1.5
        assert http.get("/predict/1").status_code == 404  # the default dataset (transactions) is not served here


FAILOVER_WINDOW_S = 5.0  # docs/operations.md: 503s only while the topology changes: within this long after a node
# dies, or while a node joins and this long after it has joined (partition map exchange, then rebalancing)


def wait_until_backed_up(client, cache: str, entries: int, timeout: float = 60.0) -> None:
    """Rebalanced: every entry has its backup copy on a live node again (the BACKUP peek counts them)."""
    from pyignite.datatypes.key_value import PeekModes

    deadline = time.monotonic() + timeout
    while (backed := client.get_cache(cache).get_size(PeekModes.BACKUP)) < entries:
        assert time.monotonic() < deadline, f"{cache}: {backed} of {entries} entries have a backup after {timeout} s"
        time.sleep(0.5)


def test_two_nodes_with_backups_a_killed_node_costs_no_warmed_entity_and_its_rejoin_rebalances(
        served, tmp_path_factory, monkeypatch):
    """The warm operator and serving, unchanged, against two nodes: kill -9 one under a stream of requests
    for every warmed entity, bring it back, wait for the rebalance, kill the other: never a 404, 503s only
    while the topology changes (the fail-over window after each kill, a join and the window after it)."""
    from kiln.operators.ignite import IgniteCacheWarmOperator

    from ml_tasks.features.feature_cache import cache_name
    from ml_tasks.serving.service import Settings
    from tests.ignite_node import IgniteNode

    pair = IgniteNode(tmp_path_factory.mktemp("ignite-pair"), port=10980, discovery_port=47700,
                      communication_port=47300, nodes=2, persistence=False)
    pair.start()
    lay = served["layout"]
    entities = sorted(pd.read_parquet(lay.online_features, columns=["entity_id"]).entity_id)
    changes: list[tuple[float, float]] = []  # topology changes: (start, end) of a kill (an instant) or a join
    try:
        monkeypatch.setenv("AIRFLOW_CONN_IGNITE_DEFAULT", json.dumps({"conn_type": "ignite", "host": pair.hosts}))
        warmed = IgniteCacheWarmOperator(task_id="warm", source=str(lay.online_features), cache_name="svc_features",
                                         version_prefix=lay.ds + "-").execute(context={})
        assert warmed["switched"] and warmed["entries"] == len(entities)
        features = cache_name("svc_features", warmed["version"])
        client = pair.client()
        wait_until_backed_up(client, features, len(entities))
        client.close()
        settings = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_host=pair.hosts,
                            prediction_ttl=60, ignite_timeout=1.0)
        with running_service(settings) as url, RequestStream(url, entities, "both") as stream:
            time.sleep(1.0)
            first, second = pair.pids
            changes.append((time.monotonic(), time.monotonic()))
            os.kill(first, signal.SIGKILL)
            stream.phase = "node 0 killed"
            time.sleep(3.0)
            joining = time.monotonic()
            pair.start()  # starts the missing node only; it rejoins and takes its share back from the backups
            changes.append((joining, time.monotonic()))
            client = pair.client()
            wait_until_backed_up(client, features, len(entities))
            client.close()
            stream.phase = "node 0 rejoined"
            time.sleep(1.0)
            changes.append((time.monotonic(), time.monotonic()))
            os.kill(second, signal.SIGKILL)  # only the rejoined node is left: it must hold every entry
            stream.phase = "node 1 killed"
            time.sleep(3.0)
            with httpx.Client(base_url=url, timeout=30) as http:
                answered = [http.post("/predict", json={"entity_ids": entities[i:i + 1000]}).json()
                            for i in range(0, len(entities), 1000)]
                missing = [e for batch in answered for e in batch["unknown"]]
                served_ids = {p["entity_id"] for batch in answered for p in batch["predictions"]}
                health = http.get("/healthz")
    finally:
        pair.stop()
    left = subprocess.run(["pgrep", "-f", str(pair.state_dir)], capture_output=True, text=True).stdout.split()
    assert not left, f"ignite.sh down left nodes running: {left}"
    events = stream.events
    counts = stream.counts(["both", "node 0 killed", "node 0 rejoined", "node 1 killed"])
    late_failures = [(p, round(t - changes[0][0], 2), c) for p, t, c in events
                     if c != 200 and not any(start <= t <= end + FAILOVER_WINDOW_S for start, end in changes)]
    print(f"status codes per phase: {counts}; requests answered: {len(events)}")
    assert {c for _, _, c in events} <= {200, 503}, counts  # never a 404 for a warmed entity, never a 500
    assert not late_failures, late_failures[:10]
    assert all(counts[p].get(200) for p in counts), counts  # every phase served
    assert missing == [] and served_ids == set(entities) and health.status_code == 200  # the last node holds every entry


def test_a_cluster_that_asks_for_a_login_is_served_with_the_configured_one_and_never_without(
        served, secured_ignite_node, tmp_path, monkeypatch):
    """Ignite authentication on: the service logs in as the deployment configured it (a user and a password file, as
    a mounted Secret) and answers the same score as on an open node; without the login it answers 503, saying so."""
    from ml_tasks.serving.service import Settings
    lay, node = served["layout"], secured_ignite_node
    warm(node.client(), "svc_features", lay.online_features, version_prefix=lay.ds + "-")
    entity = pq.read_table(lay.online_features).column(served["online"]["key"])[0].as_py()
    with httpx.Client(base_url=served["url"]) as http:
        open_score = http.get(f"/predict/{entity}").json()["score"]

    monkeypatch.delenv("AIRFLOW_CONN_IGNITE_DEFAULT", raising=False)  # the service's own settings, not a connection
    password_file = tmp_path / "ignite-password"
    password_file.write_text(node.password + "\n")
    monkeypatch.setenv("KILN_IGNITE_USERNAME", node.username)
    monkeypatch.setenv("KILN_IGNITE_PASSWORD_FILE", str(password_file))
    logged_in = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=node.port)
    monkeypatch.delenv("KILN_IGNITE_USERNAME")
    monkeypatch.delenv("KILN_IGNITE_PASSWORD_FILE")
    anonymous = Settings(data_root=lay.data_root, routes=[SVC], default_dataset="svc", ignite_port=node.port)

    with running_service(logged_in) as url, httpx.Client(base_url=url) as http:
        answer = http.get(f"/predict/{entity}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["score"] == pytest.approx(open_score, abs=1e-12)
    with running_service(anonymous) as url, httpx.Client(base_url=url) as http:
        refused = http.get(f"/predict/{entity}")
        assert refused.status_code == 503
        assert refused.json()["detail"] == "the online feature store (Ignite) refused the service's login"
