"""Online predictions over HTTP: features from the Ignite cache, the champion model, no Spark.

Every dataset spec gets its own route: ``GET /datasets/{dataset}/predict/{entity_id}`` and ``POST
/datasets/{dataset}/predict`` (``{"entity_ids": [...]}``), and ``/datasets/{dataset}/healthz``; the
default dataset (``KILN_DEFAULT_DATASET``, else ``transactions``) also answers at ``/predict`` and
``/healthz``. A binary model answers ``score`` (the probability of the positive class), a regression
model ``prediction`` (the value). A request resolves the dataset's feature alias once, reads the entities'
features, applies the saved transform and the registry's champion, and caches each prediction in Ignite
(cache ``kiln_predictions``, expiry ``KILN_PREDICTION_TTL`` seconds) under the feature version and entity, the
value naming the model registration: a hit is one Ignite round trip. A re-warm is a new version and a new champion
a different registration; a streamed update (``ml_tasks.streaming``) replaces the entity's features in place and
then forgets their cached scores, and a miss re-reads the features after caching its score (dropping it when they
changed meanwhile), so a stale score is never served. The resolved alias is reused for ``KILN_ALIAS_TTL`` seconds
(1): a re-warm is served within that bound, a streamed update as soon as it is written, a new champion within
``KILN_RELOAD_INTERVAL`` (2).

Faults: the only answers are 200, 404 (unknown entity), 422 (malformed request) and 503 (no champion
yet, Ignite down or restarted, cache not warmed). Handlers are plain functions that FastAPI runs in
its thread pool, each thread with its own Ignite client (pyignite's is not thread-safe) connected to one
of the nodes ``KILN_IGNITE_HOST`` lists (``a,b:10801``); an Ignite error drops that client and the request
is retried once on a fresh one (another node, when one died), then it is a 503; the next request
reconnects and re-creates the caches it needs, so the service recovers by itself once a node and a warm are back. The champion is reloaded by a background
thread when the registry changes; a reload never blocks a request, and a failed one keeps the old model.
``/healthz`` is 200 only when a champion is loaded and the aliased feature cache answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ml_tasks import ignite_fast  # noqa: F401
from ml_tasks.errors import KilnError
from ml_tasks.feature_cache import (
    ALIAS_CACHE,
    PREDICTION_CACHE,
    cache_name,
    cluster_backups,
    parse_addresses,
    prediction_key,
)
from ml_tasks.layout import default_data_root, registry_root
from ml_tasks.model_bundle import ModelBundle
from ml_tasks.registry import STATE_FILE, champion_dir, model_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """What one dataset's endpoints serve: its registry model and its online feature alias."""

    dataset: str
    model_name: str
    feature_cache: str
    task: str = "binary"

    @property
    def value_field(self) -> str:
        return "score" if self.task == "binary" else "prediction"


def routes_from_specs() -> list[Route]:
    """A route for every dataset spec that loads (a broken spec is logged and left out)."""
    from ml_tasks.spec import DatasetSpec, discover

    routes = []
    for path, spec in discover():
        if isinstance(spec, DatasetSpec):
            routes.append(Route(spec.name, spec.registry_name, spec.feature_cache, spec.task))
        else:
            log.error("not serving %s: %s", path, spec)
    return routes


class Unavailable(KilnError):
    """The service cannot answer now (no champion, Ignite unreachable, cache not warmed): HTTP 503."""


def ignite_errors() -> tuple[type[BaseException], ...]:
    """What pyignite raises when a node is down, restarting or lost a cache (all mean: try again later)."""
    from pyignite import exceptions as ex

    return (OSError, ConnectionError, ex.ReconnectError, ex.CacheError, ex.ParseError, ex.ClusterError,
            ex.SocketError, ex.HandshakeError)


@dataclass
class Settings:
    data_root: Path = field(default_factory=default_data_root)
    routes: list[Route] = field(default_factory=routes_from_specs)
    default_dataset: str = field(default_factory=lambda: os.environ.get("KILN_DEFAULT_DATASET", "transactions"))
    # One node or several (``a,b:10801``): a request whose node died is retried once on another.
    ignite_host: str = field(default_factory=lambda: os.environ.get("KILN_IGNITE_HOST", "127.0.0.1"))
    ignite_port: int = field(default_factory=lambda: int(os.environ.get("KILN_IGNITE_PORT", "10800")))
    prediction_ttl: float = field(default_factory=lambda: float(os.environ.get("KILN_PREDICTION_TTL", "300")))
    reload_interval: float = field(default_factory=lambda: float(os.environ.get("KILN_RELOAD_INTERVAL", "2")))
    # How long a resolved feature alias is reused: a re-warm's switch is served within this bound, and a cache hit
    # costs one Ignite round trip instead of two. 0 resolves it on every request.
    alias_ttl: float = field(default_factory=lambda: float(os.environ.get("KILN_ALIAS_TTL", "1")))
    ignite_timeout: float = 2.0
    # Threads that run requests (each with its own Ignite client). Python runs one at a time, so a few keep the
    # node busy while more only contend for the interpreter lock (measured: 32 threads serve fewer requests/s than 1).
    threads: int = field(default_factory=lambda: int(os.environ.get("KILN_SERVE_THREADS", "4")))

    @property
    def ignite_addresses(self) -> list[tuple[str, int]]:
        return parse_addresses(self.ignite_host, self.ignite_port)


class BatchRequest(BaseModel):
    """``POST /predict`` body: 1 to 1000 entity ids."""

    entity_ids: list[str] = Field(min_length=1, max_length=1000)


class Predictor:
    """One dataset's champion (swapped whole by a reloader thread) and one Ignite client per request thread."""

    def __init__(self, settings: Settings, route: Route):
        self.settings = settings
        self.route = route
        self.bundle: ModelBundle | None = None
        self.model_error: str | None = "not loaded yet"
        self._state_path = model_root(registry_root(settings.data_root), route.model_name) / STATE_FILE
        self._loaded_stamp: tuple[float, int] | None = None
        self._local = threading.local()
        self._clients: set[Any] = set()
        self._clients_lock = threading.Lock()
        self._score_lock = threading.Lock()  # MXNet's imperative API is not safe to call from many threads
        self._alias: tuple[str, float] | None = None  # (feature version, when resolved): swapped whole
        self._stop = threading.Event()
        self._reloader = threading.Thread(target=self._reload_loop, name="kiln-model-reloader", daemon=True)

    def start(self) -> None:
        self.refresh_model()
        self._reloader.start()

    def close(self) -> None:
        self._stop.set()
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    # --- the model: loaded off the request path -------------------------------------------------
    def _reload_loop(self) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            self.refresh_model()

    def refresh_model(self) -> None:
        """Load the champion when the registry changed; keep the current one if loading fails."""
        try:
            st = self._state_path.stat()
            stamp = (st.st_mtime, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._loaded_stamp and self.bundle is not None:
            return
        try:
            bundle = ModelBundle.load(champion_dir(registry_root(self.settings.data_root), self.route.model_name))
        except (KilnError, OSError, ValueError, KeyError) as exc:
            self.model_error = str(exc)
            log.warning("champion not (re)loaded, still serving %s: %s",
                        self.bundle.registration if self.bundle else "nothing", exc)
            return
        self.bundle, self._loaded_stamp, self.model_error = bundle, stamp, None  # one reference swap
        log.info("serving %s/%s (%s, %s)", self.route.model_name, bundle.version, bundle.candidate, bundle.registration)

    # --- Ignite: one client per thread, dropped on error -----------------------------------------
    def _ignite(self) -> tuple[Any, Any, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            from pyignite import Client
            from pyignite.datatypes import ExpiryPolicy
            from pyignite.datatypes.prop_codes import PROP_BACKUPS_NUMBER, PROP_EXPIRY_POLICY, PROP_NAME

            # Partition awareness would re-fetch the partition map in pure Python whenever the topology
            # moves (any cache created or dropped): ~60 ms per request here.
            client = Client(timeout=self.settings.ignite_timeout, partition_aware=False)
            addresses = self.settings.ignite_addresses
            random.shuffle(addresses)  # pyignite talks to the first node that answers: spread the threads
            client.connect(addresses)
            predictions = client.get_or_create_cache(  # re-created here after a node restart lost it
                {PROP_NAME: PREDICTION_CACHE, PROP_BACKUPS_NUMBER: cluster_backups(client),
                 PROP_EXPIRY_POLICY: ExpiryPolicy(create=timedelta(seconds=self.settings.prediction_ttl))})
            conn = (client, client.get_or_create_cache(ALIAS_CACHE), predictions)
            self._local.conn = conn
            with self._clients_lock:
                self._clients.add(client)
        return conn

    def _drop_ignite(self) -> None:
        self._alias = None  # a node went away: resolve the alias afresh with the next client
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._clients_lock:
                self._clients.discard(conn[0])
            with contextlib.suppress(Exception):  # closing a dead socket may fail any way; it is discarded regardless
                conn[0].close()

    def _with_ignite(self, work):
        # Twice at most: a node lost mid-request is retried at once on a fresh client, which connects to
        # another node (a cluster with backups answers for it); a second failure is a 503.
        for attempt in (1, 2):
            try:
                return work(*self._ignite())
            except ignite_errors() as exc:
                self._drop_ignite()
                if attempt == 2:
                    raise Unavailable(f"Ignite unavailable: {type(exc).__name__}: {exc}") from exc
                log.warning("Ignite node lost mid-request, retrying on another: %s: %s", type(exc).__name__, exc)

    def _champion(self) -> ModelBundle:
        bundle = self.bundle
        if bundle is None:
            raise Unavailable(f"no champion model to serve: {self.model_error}")
        return bundle

    def _feature_version(self, aliases, fresh: bool = False) -> str:
        """The alias's target, resolved at most ``alias_ttl`` seconds ago (``fresh``: now). A version the alias
        left stays readable meanwhile: a warm keeps the previous one (``retain`` >= 2)."""
        cached, now = self._alias, time.monotonic()
        if cached is not None and not fresh and now - cached[1] < self.settings.alias_ttl:
            return cached[0]
        version = aliases.get(self.route.feature_cache)
        if version is None:
            self._alias = None
            raise Unavailable(f"feature cache alias {self.route.feature_cache!r} is not set; warm the cache first")
        self._alias = (version, now)
        return version

    def predict(self, entity_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        bundle = self._champion()
        field_name = self.route.value_field

        def work(client, aliases, predictions):
            feature_version = self._feature_version(aliases)
            features = cache_name(self.route.feature_cache, feature_version)
            # A hit is one round trip: the stream forgets a score when it replaces the features it came from
            # (``forget_predictions``), a re-warm is a new version, a new champion a different registration.
            keys = {e: prediction_key(features, e) for e in entity_ids}
            cached = predictions.get_all(list(keys.values()))
            out: dict[str, dict[str, Any]] = {}
            for e, k in keys.items():
                registration, _, score = (cached.get(k) or "").rpartition("|")
                if registration == bundle.registration:
                    out[e] = {"entity_id": e, field_name: float(score), "cached": True}
            missing = [e for e in keys if e not in out]
            unknown: list[str] = []
            if missing:
                feature_cache = client.get_cache(features)
                raw = feature_cache.get_all(missing)
                unknown = [e for e in missing if e not in raw]
                known = [e for e in missing if e in raw]
                if known:
                    with self._score_lock:
                        scores = bundle.score([json.loads(raw[e]) for e in known])
                    predictions.put_all({keys[e]: f"{bundle.registration}|{float(s)!r}" for e, s in zip(known, scores, strict=True)})
                    # The stream may have replaced these features and forgotten their scores between our read and
                    # our put: read them again, and drop what was cached from features that are gone.
                    now = feature_cache.get_all(known)
                    stale = [keys[e] for e in known if now.get(e) != raw[e]]
                    if stale:
                        predictions.remove_keys(stale)
                    out.update({e: {"entity_id": e, field_name: float(s), "cached": False} for e, s in zip(known, scores, strict=True)})
            meta = {"dataset": self.route.dataset, "model_version": bundle.version, "model": bundle.candidate,
                    "feature_version": feature_version}
            return [{**out[e], **meta} for e in entity_ids if e in out], unknown

        return self._with_ignite(work)

    def health(self) -> dict[str, Any]:
        bundle = self._champion()

        def work(client, aliases, predictions):
            version = self._feature_version(aliases, fresh=True)
            entries = client.get_cache(cache_name(self.route.feature_cache, version)).get_size()
            predictions.get_size()
            return {"status": "ok", "dataset": self.route.dataset, "model_version": bundle.version, "registration": bundle.registration,
                    "feature_version": version, "feature_entries": entries}

        return self._with_ignite(work)


def create_app(settings: Settings | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    settings = settings or Settings()
    predictors = {route.dataset: Predictor(settings, route) for route in settings.routes}

    @asynccontextmanager
    async def lifespan(app):
        from anyio import to_thread

        to_thread.current_default_thread_limiter().total_tokens = settings.threads
        for predictor in predictors.values():
            predictor.start()
        yield
        for predictor in predictors.values():
            predictor.close()

    app = FastAPI(title="Kiln online predictions", lifespan=lifespan)
    app.state.predictors = predictors

    def predictor_for(dataset: str) -> Predictor:
        if dataset not in predictors:
            raise HTTPException(status_code=404, detail=f"no dataset {dataset!r} is served (datasets: {', '.join(sorted(predictors))})")
        return predictors[dataset]

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback; the client is told to retry rather than handed a 500 mid-incident.
        log.exception("unexpected error serving %s", request.url.path)
        return JSONResponse(status_code=503, content={"detail": f"temporarily unavailable: {type(exc).__name__}"},
                            headers={"Retry-After": "1"})

    # Plain (sync) handlers: FastAPI runs them in its thread pool, so a slow Ignite call or a model
    # load never stalls the event loop and the other requests. They return their JSON already encoded: FastAPI's
    # validation and encoding of a returned dict cost more than the Ignite round trip of a cache hit.
    def answer(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body).encode(), media_type="application/json")

    @app.get("/datasets/{dataset}/predict/{entity_id}")
    def predict_one(dataset: str, entity_id: str) -> Response:
        found, _ = predictor_for(dataset).predict([entity_id])
        if not found:
            raise HTTPException(status_code=404, detail=f"unknown entity {entity_id!r} in the {dataset} feature cache")
        return answer(found[0])

    @app.post("/datasets/{dataset}/predict")
    def predict_batch(dataset: str, request: BatchRequest) -> Response:
        found, unknown = predictor_for(dataset).predict(request.entity_ids)
        return answer({"predictions": found, "unknown": unknown})

    @app.get("/datasets/{dataset}/healthz")
    def healthz(dataset: str) -> dict[str, Any]:
        return predictor_for(dataset).health()

    # The default dataset's short routes.
    @app.get("/predict/{entity_id}")
    def predict_one_default(entity_id: str) -> Response:
        return predict_one(settings.default_dataset, entity_id)

    @app.post("/predict")
    def predict_batch_default(request: BatchRequest) -> Response:
        return predict_batch(settings.default_dataset, request)

    @app.get("/healthz")
    def healthz_default() -> dict[str, Any]:
        return healthz(settings.default_dataset)

    return app


def serve(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    if workers > 1:  # processes that share the socket, each with its own app, model and Ignite clients
        uvicorn.run("ml_tasks.serving:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning")
    else:
        uvicorn.run(create_app(), host=host, port=port, log_level="warning")
