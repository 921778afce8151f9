"""Online predictions over HTTP: features from the Ignite cache, the champion model, no Spark.

Every dataset spec gets its own route: ``GET /datasets/{dataset}/predict/{entity_id}`` and ``POST
/datasets/{dataset}/predict`` (``{"entity_ids": [...]}``), and ``/datasets/{dataset}/healthz``; the
default dataset (``KILN_DEFAULT_DATASET``, else ``transactions``) also answers at ``/predict`` and
``/healthz``. A binary model answers ``score`` (the probability of the positive class), a regression
model ``prediction`` (the value). A request resolves the dataset's feature alias once, reads the entities'
features, applies the saved transform and the registry's champion, and caches each prediction in Ignite
(cache ``kiln_predictions``, expiry ``KILN_PREDICTION_TTL`` seconds) under the feature version and entity, the
value naming the model registration: a hit is one Ignite round trip. A re-warm is a new version and a new champion
a different registration; a streamed update (``ml_tasks.features.streaming``) replaces the entity's features in place and
then forgets their cached scores, and a miss re-reads the features after caching its score (dropping it when they
changed meanwhile), so a stale score is never served. The resolved alias is reused for ``KILN_ALIAS_TTL`` seconds
(1): a re-warm is served within that bound, a streamed update as soon as it is written, a new champion within
``KILN_RELOAD_INTERVAL`` (2).

Faults: the only answers are 200, 401 (no or a wrong API key, when one is configured), 404 (unknown entity), 413
(body over ``KILN_SERVE_MAX_BODY_BYTES``), 422 (malformed request, an id over ``KILN_SERVE_MAX_ENTITY_ID_CHARS``, more
ids than ``KILN_SERVE_MAX_BATCH_IDS``) and 503 (no champion yet, Ignite down or restarted, cache not warmed). An error
names the problem, never a path, an address or an exception's text: those go to the log. ``RequestGuard`` checks
the key and the body's size before a byte of the body is read, so an oversized or unauthenticated request costs
a bounded amount of memory. Handlers are coroutines: a dataset's requests share one
pyignite asyncio client (requests multiplexed on one connection, each bounded to 2 s) connected to one of
the nodes ``KILN_IGNITE_HOST`` lists (``a,b:10801``); scoring more than a few rows runs in a thread.
An Ignite error drops that client and the request is retried once on a fresh one (another node, when one died),
then it is a 503; the next request reconnects and re-creates the caches it needs, so the service recovers by
itself once a node and a warm are back. The champion is reloaded by a background thread when the registry
changes; a reload never blocks a request, and a failed one keeps the old model.
``/healthz`` is 200 only when a champion is loaded and the aliased feature cache answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from ml_tasks.core.environment import env_default, env_float, env_given, env_int, env_secret, env_str
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import default_data_root, model_files, registry_root
from ml_tasks.evaluation.registry import champion_dir
from ml_tasks.features import ignite_fast  # noqa: F401
from ml_tasks.features.feature_cache import (
    ALIAS_CACHE,
    PREDICTION_CACHE,
    cache_name,
    parse_addresses,
    prediction_key,
)
from ml_tasks.features.ignite_connection import DEFAULT_PORT, ignite_errors, login_refused, options_from_env
from ml_tasks.serving.model_bundle import ModelBundle

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
    from ml_tasks.core.spec import DatasetSpec, discover

    routes = []
    for path, spec in discover():
        if isinstance(spec, DatasetSpec):
            routes.append(Route(spec.name, spec.registry_name, spec.feature_cache, spec.task))
        else:
            log.error("not serving %s: %s", path, spec)
    return routes


class Unavailable(KilnError):
    """The service cannot answer now (no champion, Ignite unreachable, cache not warmed): HTTP 503. Its message is
    the client's: it names the problem, not the path or exception behind it."""


def configured_api_key() -> str | None:
    """The key clients must send: the file ``KILN_SERVE_API_KEY_FILE`` names (a mounted Secret), else
    ``KILN_SERVE_API_KEY``; None when neither is set (no authentication, the local default). A file that is named
    but missing or empty stops the service from starting rather than let it serve without a key."""
    try:
        key = env_secret("KILN_SERVE_API_KEY")
    except KilnError as exc:
        raise KilnError(f"{exc}: not serving without its key") from None
    if key == "" and (path := env_given("KILN_SERVE_API_KEY_FILE")):
        raise KilnError(f"KILN_SERVE_API_KEY_FILE {path} is empty: not serving without its key")
    return key or None


@dataclass
class Settings:
    data_root: Path = field(default_factory=default_data_root)
    routes: list[Route] = field(default_factory=routes_from_specs)
    default_dataset: str = field(default_factory=lambda: env_str("KILN_DEFAULT_DATASET"))
    # One node or several (``a,b:10801``): a request whose node died is retried once on another. None: from the
    # environment (ml_tasks.features.ignite_connection), as the login and TLS the cluster asks for are (``ignite_options``).
    ignite_host: str | None = None
    ignite_port: int | None = None
    ignite_options: dict[str, Any] | None = field(default=None, repr=False)
    prediction_ttl: float = field(default_factory=lambda: env_float("KILN_PREDICTION_TTL"))
    reload_interval: float = field(default_factory=lambda: env_float("KILN_RELOAD_INTERVAL"))
    # How long a resolved feature alias is reused: a re-warm's switch is served within this bound, and a cache hit
    # costs one Ignite round trip instead of two. 0 resolves it on every request.
    alias_ttl: float = field(default_factory=lambda: env_float("KILN_ALIAS_TTL"))
    ignite_timeout: float = 2.0
    # Request limits: 1,000 ids of the longest length fit in the body limit with room to spare.
    max_body_bytes: int = field(default_factory=lambda: env_int("KILN_SERVE_MAX_BODY_BYTES"))
    max_entity_id_chars: int = field(default_factory=lambda: env_int("KILN_SERVE_MAX_ENTITY_ID_CHARS"))
    max_batch_ids: int = field(default_factory=lambda: env_int("KILN_SERVE_MAX_BATCH_IDS"))
    api_key: str | None = field(default_factory=configured_api_key, repr=False)

    def __post_init__(self) -> None:
        hosts, port, options = options_from_env()  # read once: it may read a password file
        self.ignite_host = self.ignite_host or hosts or env_default("KILN_IGNITE_HOST")
        self.ignite_port = self.ignite_port or port or DEFAULT_PORT
        self.ignite_options = options if self.ignite_options is None else self.ignite_options

    @property
    def ignite_addresses(self) -> list[tuple[str, int]]:
        return parse_addresses(self.ignite_host, self.ignite_port)


def batch_request_model(settings: Settings) -> type[BaseModel]:
    """The ``POST /predict`` body the settings allow: ``{"entity_ids": [...]}``, 1 to ``max_batch_ids`` ids of 1 to
    ``max_entity_id_chars`` characters each."""
    entity_id = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_entity_id_chars)]

    class BatchRequest(BaseModel):
        entity_ids: list[entity_id] = Field(min_length=1, max_length=settings.max_batch_ids)

    return BatchRequest


def validation_message(exc: ValidationError) -> str:
    """What was wrong, by field, without echoing the input back (it may be a megabyte)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    named = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:3]]
    return "; ".join(named) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")


HEALTH_PATH = re.compile(r"(/datasets/[^/]+)?/healthz|/livez")


class RequestGuard:
    """In front of every route (pure ASGI, so before FastAPI reads anything): the API key when one is configured,
    then the body's size, refused by its Content-Length before a byte of it is read, or counted as it streams in
    and refused once it passes the limit. A refusal closes the connection, so the rest of a big body is never read.

    The health routes stay open: the kubelet's probes carry no key, and they answer versions and counts, never a
    prediction."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self._key = hashlib.sha256(settings.api_key.encode()).digest() if settings.api_key else None

    def _authorized(self, headers) -> bool:
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        offered = bearer.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
        # Digests of equal length compared in constant time: no timing hint of the key or of its length.
        return hmac.compare_digest(hashlib.sha256(offered.encode()).digest(), self._key)

    async def __call__(self, scope, receive, send) -> None:
        from starlette.datastructures import Headers

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._key is not None and not HEALTH_PATH.fullmatch(scope["path"]) and not self._authorized(headers):
            await self._refuse(send, 401, "missing or wrong API key: send it as 'Authorization: Bearer <key>' or "
                                          "'X-API-Key: <key>'", [(b"www-authenticate", b"Bearer")])
            return
        too_large = f"request body over {self.max_body_bytes} bytes (KILN_SERVE_MAX_BODY_BYTES)"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send, 413, too_large)
            return
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # no or a lying Content-Length: stop reading here
                raise BodyTooLarge
            return message

        async def noting_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, noting_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, 413, too_large)

    @staticmethod
    async def _refuse(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *headers]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised by ``RequestGuard``'s receive once a body passes the limit; the guard answers 413."""


INLINE_SCORE_ROWS = 16


class Predictor:
    """One dataset's champion (swapped whole by a reloader thread) and one asyncio Ignite client for every request."""

    def __init__(self, settings: Settings, route: Route):
        self.settings = settings
        self.route = route
        self.bundle: ModelBundle | None = None
        self._state_path = model_files(registry_root(settings.data_root), route.model_name).state
        self._loaded_stamp: tuple[float, int] | None = None
        self._ignite_conn: tuple[Any, Any, Any] | None = None  # (client, alias cache, prediction cache)
        self._connecting: asyncio.Lock | None = None  # made on the event loop, at the first request
        self._score_lock = threading.Lock()  # MXNet's imperative API is not safe to call from many threads
        self._alias: tuple[str, float] | None = None  # (feature version, when resolved): swapped whole
        self._stop = threading.Event()
        self._reloader = threading.Thread(target=self._reload_loop, name="kiln-model-reloader", daemon=True)

    def start(self) -> None:
        self.refresh_model()
        self._reloader.start()

    async def close(self) -> None:
        self._stop.set()
        await self._drop_ignite(self._ignite_conn)

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
            log.warning("champion not (re)loaded, still serving %s: %s",
                        self.bundle.registration if self.bundle else "nothing", exc)
            return
        self.bundle, self._loaded_stamp = bundle, stamp  # one reference swap
        log.info("serving %s/%s (%s, %s)", self.route.model_name, bundle.version, bundle.candidate, bundle.registration)

    # --- Ignite: one asyncio client, its requests multiplexed; dropped on error --------------------
    async def _ignite(self) -> tuple[Any, Any, Any]:
        if self._ignite_conn is not None:
            return self._ignite_conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # the requests that find no client wait for one connection, not one each
            if self._ignite_conn is None:
                self._ignite_conn = await self._connect()
            return self._ignite_conn

    async def _connect(self) -> tuple[Any, Any, Any]:
        from pyignite import AioClient
        from pyignite.datatypes import ExpiryPolicy
        from pyignite.datatypes.prop_codes import PROP_BACKUPS_NUMBER, PROP_EXPIRY_POLICY, PROP_NAME

        # Partition awareness would re-fetch the partition map in pure Python whenever the topology
        # moves (any cache created or dropped): ~60 ms per request here.
        client = AioClient(partition_aware=False, handshake_timeout=self.settings.ignite_timeout,
                           **self.settings.ignite_options)
        addresses = self.settings.ignite_addresses
        random.shuffle(addresses)  # pyignite talks to the first node that answers: spread the server processes
        try:
            await self._io(client.connect(addresses))
            aliases = await self._io(client.get_or_create_cache(ALIAS_CACHE))  # its settings: the cluster's backups
            backups = (await self._io(aliases.settings()))[PROP_BACKUPS_NUMBER]
            predictions = await self._io(client.get_or_create_cache(  # re-created here after a node restart lost it
                {PROP_NAME: PREDICTION_CACHE, PROP_BACKUPS_NUMBER: backups,
                 PROP_EXPIRY_POLICY: ExpiryPolicy(create=timedelta(seconds=self.settings.prediction_ttl))}))
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        return client, aliases, predictions

    def _io(self, request):
        """An Ignite request with the service's timeout: pyignite's asyncio client has none of its own."""
        return asyncio.wait_for(request, self.settings.ignite_timeout)

    async def _drop_ignite(self, conn: tuple[Any, Any, Any] | None) -> None:
        self._alias = None  # a node went away: resolve the alias afresh with the next client
        if conn is None:
            return
        if self._ignite_conn is conn:  # the requests that failed with it drop it once
            self._ignite_conn = None
        with contextlib.suppress(Exception):  # closing a dead connection may fail any way; it is discarded regardless
            await conn[0].close()

    async def _with_ignite(self, work):
        # Twice at most: a node lost mid-request is retried at once on a fresh client, which connects to
        # another node (a cluster with backups answers for it); a second failure is a 503.
        for attempt in (1, 2):
            conn = None
            try:
                conn = await self._ignite()
                return await work(*conn)
            except login_refused() as exc:  # not a fault to retry: the deployment's login is wrong or missing
                log.error("Ignite refused the service's login (KILN_IGNITE_USERNAME, KILN_IGNITE_PASSWORD_FILE): %s", exc)
                raise Unavailable("the online feature store (Ignite) refused the service's login") from exc
            except ignite_errors() as exc:
                await self._drop_ignite(conn)
                if attempt == 2:
                    log.warning("Ignite unavailable: %s: %s", type(exc).__name__, exc)
                    raise Unavailable("the online feature store (Ignite) is unreachable") from exc
                log.warning("Ignite node lost mid-request, retrying on another: %s: %s", type(exc).__name__, exc)

    def _champion(self) -> ModelBundle:
        bundle = self.bundle
        if bundle is None:
            raise Unavailable(f"no champion of model {self.route.model_name} is loaded yet")
        return bundle

    async def _feature_version(self, aliases, fresh: bool = False) -> str:
        """The alias's target, resolved at most ``alias_ttl`` seconds ago (``fresh``: now). A version the alias
        left stays readable meanwhile: a warm keeps the previous one (``retain`` >= 2)."""
        cached, now = self._alias, time.monotonic()
        if cached is not None and not fresh and now - cached[1] < self.settings.alias_ttl:
            return cached[0]
        version = await self._io(aliases.get(self.route.feature_cache))
        if version is None:
            self._alias = None
            raise Unavailable(f"the online features of dataset {self.route.dataset} are not warmed yet")
        self._alias = (version, now)
        return version

    def _score(self, bundle: ModelBundle, rows: list[dict[str, Any]]) -> list[float]:
        with self._score_lock:
            return bundle.score(rows)

    async def _score_rows(self, bundle: ModelBundle, rows: list[dict[str, Any]]) -> list[float]:
        # A few rows are scored on the event loop: handing them to a thread costs more than scoring them (measured:
        # 0.07 ms for a row of the bench's 20-tree GBT). More go to a thread, and so does any row while a thread
        # scores: the loop must not wait for the lock while other requests' cache hits need it.
        if len(rows) <= INLINE_SCORE_ROWS and self._score_lock.acquire(blocking=False):
            try:
                return bundle.score(rows)
            finally:
                self._score_lock.release()
        return await asyncio.to_thread(self._score, bundle, rows)

    async def predict(self, entity_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        bundle = self._champion()
        field_name = self.route.value_field

        async def work(client, aliases, predictions):
            feature_version = await self._feature_version(aliases)
            features = cache_name(self.route.feature_cache, feature_version)
            # A hit is one round trip: the stream forgets a score when it replaces the features it came from
            # (``forget_predictions``), a re-warm is a new version, a new champion a different registration.
            keys = {e: prediction_key(features, e) for e in entity_ids}
            cached = await self._io(predictions.get_all(list(keys.values())))
            out: dict[str, dict[str, Any]] = {}
            for e, k in keys.items():
                registration, _, score = (cached.get(k) or "").rpartition("|")
                if registration == bundle.registration:
                    out[e] = {"entity_id": e, field_name: float(score), "cached": True}
            missing = [e for e in keys if e not in out]
            unknown: list[str] = []
            if missing:
                feature_cache = await client.get_cache(features)
                raw = await self._io(feature_cache.get_all(missing))
                unknown = [e for e in missing if e not in raw]
                known = [e for e in missing if e in raw]
                if known:
                    scores = await self._score_rows(bundle, [json.loads(raw[e]) for e in known])
                    await self._io(predictions.put_all(
                        {keys[e]: f"{bundle.registration}|{float(s)!r}" for e, s in zip(known, scores, strict=True)}))
                    # The stream may have replaced these features and forgotten their scores between our read and
                    # our put: read them again, and drop what was cached from features that are gone.
                    now = await self._io(feature_cache.get_all(known))
                    stale = [keys[e] for e in known if now.get(e) != raw[e]]
                    if stale:
                        await self._io(predictions.remove_keys(stale))
                    out.update({e: {"entity_id": e, field_name: float(s), "cached": False} for e, s in zip(known, scores, strict=True)})
            meta = {"dataset": self.route.dataset, "model_version": bundle.version, "model": bundle.candidate,
                    "feature_version": feature_version}
            return [{**out[e], **meta} for e in entity_ids if e in out], unknown

        return await self._with_ignite(work)

    async def health(self) -> dict[str, Any]:
        bundle = self._champion()

        async def work(client, aliases, predictions):
            version = await self._feature_version(aliases, fresh=True)
            entries = await self._io((await client.get_cache(cache_name(self.route.feature_cache, version))).get_size())
            await self._io(predictions.get_size())
            return {"status": "ok", "dataset": self.route.dataset, "model_version": bundle.version, "registration": bundle.registration,
                    "feature_version": version, "feature_entries": entries}

        return await self._with_ignite(work)


def create_app(settings: Settings | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    settings = settings or Settings()
    predictors = {route.dataset: Predictor(settings, route) for route in settings.routes}

    @asynccontextmanager
    async def lifespan(app):
        for predictor in predictors.values():
            predictor.start()
        gc.freeze()
        yield
        for predictor in predictors.values():
            await predictor.close()

    app = FastAPI(title="Kiln online predictions", lifespan=lifespan)
    app.state.predictors = predictors
    app.add_middleware(RequestGuard, settings=settings)
    batch_request = batch_request_model(settings)

    def predictor_for(dataset: str) -> Predictor:
        if dataset not in predictors:
            raise HTTPException(status_code=404, detail=f"no dataset {dataset!r} is served (datasets: {', '.join(sorted(predictors))})")
        return predictors[dataset]

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback; the client is told to retry rather than handed a 500 mid-incident (or its text).
        log.exception("unexpected error serving %s", request.url.path)
        return JSONResponse(status_code=503, content={"detail": "temporarily unavailable"},
                            headers={"Retry-After": "1"})

    # Handlers run on the event loop and wait on Ignite without a thread each; scoring many rows goes to a thread. They
    # return their JSON already encoded: FastAPI's validation and encoding of a returned dict cost more than the
    # Ignite round trip of a cache hit.
    def answer(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body).encode(), media_type="application/json")

    # One entity's prediction, the hot path, is a plain Starlette route: FastAPI's parameter machinery cost a
    # quarter of a cache hit (measured: 3,700 vs 4,800 hits/s), and the path's two strings need no validation.
    async def predict_one(request: Request) -> Response:
        dataset = request.path_params.get("dataset", settings.default_dataset)
        entity_id = request.path_params["entity_id"]
        if len(entity_id) > settings.max_entity_id_chars:
            raise HTTPException(status_code=422, detail=f"entity id longer than {settings.max_entity_id_chars} "
                                                        "characters (KILN_SERVE_MAX_ENTITY_ID_CHARS)")
        found, _ = await predictor_for(dataset).predict([entity_id])
        if not found:
            raise HTTPException(status_code=404, detail=f"unknown entity {entity_id!r} in the {dataset} feature cache")
        return answer(found[0])

    app.add_route("/datasets/{dataset}/predict/{entity_id}", predict_one, methods=["GET"])
    app.add_route("/predict/{entity_id}", predict_one, methods=["GET"])  # the default dataset's

    # A batch is a plain Starlette route too: its body is parsed here rather than by a FastAPI body parameter, as its
    # limits are settings and a refusal must not echo the body back. RequestGuard stops reading past max_body_bytes.
    async def predict_batch(request: Request) -> Response:
        dataset = request.path_params.get("dataset", settings.default_dataset)
        try:
            entity_ids = batch_request.model_validate_json(await request.body()).entity_ids
        except ValidationError as exc:
            raise HTTPException(status_code=422, detail=validation_message(exc)) from None
        found, unknown = await predictor_for(dataset).predict(entity_ids)
        return answer({"predictions": found, "unknown": unknown})

    app.add_route("/datasets/{dataset}/predict", predict_batch, methods=["POST"])
    app.add_route("/predict", predict_batch, methods=["POST"])  # the default dataset's

    @app.get("/datasets/{dataset}/healthz")
    async def healthz(dataset: str) -> dict[str, Any]:
        return await predictor_for(dataset).health()

    # The process answers: the liveness probe's route. /healthz is readiness: it needs a champion and Ignite, and a
    # pod that lacks them (no model yet, Ignite restarting) must leave the Service, not be restarted.
    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    # The default dataset's short route.
    @app.get("/healthz")
    async def healthz_default() -> dict[str, Any]:
        return await healthz(settings.default_dataset)

    return app


def serve(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    if workers > 1:  # processes that share the socket, each with its own app, model and Ignite clients
        uvicorn.run("ml_tasks.serving.service:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning")
    else:
        uvicorn.run(create_app(), host=host, port=port, log_level="warning")
