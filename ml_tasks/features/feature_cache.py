"""The online cache in Apache Ignite: versioned caches behind an alias, loaded ("warmed") from Parquet.

Kiln's warming is loading fresh data into the cache (what Feast calls materialization), not Ignite's
own "warm-up" of persisted pages at node start. A load goes into a new cache ``<name>__<version>``;
only after its count and a sample of values are verified does one ``put`` to the alias cache switch
``<name> -> <version>``, so a reader resolving the alias sees the old version or the new one, never
a partial one. Older versions beyond ``retain`` are then dropped; the alias target never is.
Values are JSON strings of the entity's row (feature values as written by ingest).

One warmer per alias at a time: a warm holds a lease on the alias (a key in ``kiln_cache_locks`` taken
with ``put_if_absent``, renewed while loading, expiring if its holder dies), so two warmers (a DAG's
warm and the asset-triggered refresh, two runs, two hosts) never load or drop behind each other's back.
No path destroys the alias target: an incomplete live version is topped up in place.

Streaming (``ml_tasks.features.streaming``) writes each entity's newest event into the live version, and into the
alias's stream table ``<name>@stream``, only where it is newer than the entry there (``merge_newer``). A
warm carries the stream table into its new version before switching (``carry_stream``), and the stream
republishes it into a version that went live under it (``apply_stream_batch``): a warm of older batch data
never hides a newer streamed event. Only one stream writes an alias (its lease), so these
read-compare-writes have no concurrent writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.parquet as pq

from ml_tasks.core.atomic import content_digest
from ml_tasks.core.errors import KilnError
from ml_tasks.features import ignite_fast  # noqa: F401  (pyignite string serialisation, see module)
from ml_tasks.features.online_features import encode, is_newer

log = logging.getLogger(__name__)
ALIAS_CACHE = "kiln_cache_aliases"
LOCK_CACHE = "kiln_cache_locks"
# The version the stream last republished its table into, per alias: a different live version means a warm
# switched under the stream, which then carries its table into the new version before its next write.
STREAM_PUBLISHED_CACHE = "kiln_stream_published"
# Serving's cached scores, one per feature version and entity (``prediction_key``); the stream forgets the ones
# whose features it replaced.
PREDICTION_CACHE = "kiln_predictions"
SEPARATOR = "__"
STREAM_SUFFIX = "@stream"


@dataclass(frozen=True)
class WarmOptions:
    batch_size: int = 5000
    # Connections loading batches side by side: one batch is being encoded while the others are on the wire or in
    # the node (pyignite waits for each reply). Used when ``warm`` is given a way to open connections.
    loaders: int = 2
    retain: int = 2
    backups: int | None = None  # None: the cluster's own (kiln.ignite.backups in kiln-ignite.xml)
    expiry_seconds: float | None = None
    verify_sample: int = 100
    lease_seconds: float = 30.0  # a dead warmer's lease expires after this; a live one renews it
    lease_wait_seconds: float = 1800.0  # how long a second warmer waits for the first to finish


def parse_addresses(hosts: str, default_port: int = 10800) -> list[tuple[str, int]]:
    """``"a,b:10801"`` -> ``[("a", default_port), ("b", 10801)]``: every node a client may fail over to."""
    addresses = []
    for item in (h.strip() for h in hosts.split(",")):
        if item:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
            addresses.append((host, int(port) if port else default_port))
    return addresses


def cache_name(name: str, version: str) -> str:
    return f"{name}{SEPARATOR}{version}"


def source_files(path: Path) -> list[Path]:
    """The Parquet files of a source given as one file or a folder."""
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def source_version(path: Path) -> str:
    """A version id for the source: its name stem plus a content hash, so new data -> new cache."""
    return content_digest(source_files(path))[:12]


def stream_cache_name(name: str) -> str:
    """Every entity's newest streamed entry of alias ``name`` (not a version: never listed, switched or dropped)."""
    return f"{name}{STREAM_SUFFIX}"


def current_version(client, name: str) -> str | None:
    return client.get_or_create_cache(ALIAS_CACHE).get(name)


def versions(client, name: str) -> list[str]:
    prefix = name + SEPARATOR
    return sorted(c[len(prefix):] for c in client.get_cache_names() if c.startswith(prefix))


def iter_source(path: Path, key: str, batch_size: int) -> Iterator[dict[str, str]]:
    """``{key: json}`` batches from a Parquet file or folder; a missing key column is named."""
    files = source_files(path)
    if not files or not all(f.exists() for f in files):
        raise KilnError(f"warm source {path} has no Parquet files")
    for f in files:
        pf = pq.ParquetFile(f)
        if key not in pf.schema_arrow.names:
            raise KilnError(f"warm source {f} has no key column {key!r} (columns: {', '.join(pf.schema_arrow.names)})")
        for batch in pf.iter_batches(batch_size=batch_size):
            rows = batch.to_pylist()
            yield {str(r[key]): encode(r) for r in rows}


def count_source(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in source_files(path))


def cluster_backups(client) -> int:
    """The cluster's backups setting: the alias cache is created by name, so it took the nodes' "*" template."""
    from pyignite.datatypes.prop_codes import PROP_BACKUPS_NUMBER

    return client.get_or_create_cache(ALIAS_CACHE).settings[PROP_BACKUPS_NUMBER]


def _create_cache(client, full_name: str, options: WarmOptions):
    from pyignite.datatypes.cache_config import CacheMode
    from pyignite.datatypes.prop_codes import (
        PROP_BACKUPS_NUMBER,
        PROP_CACHE_MODE,
        PROP_EXPIRY_POLICY,
        PROP_NAME,
    )

    backups = cluster_backups(client) if options.backups is None else options.backups
    settings: dict[int, Any] = {PROP_NAME: full_name, PROP_CACHE_MODE: CacheMode.PARTITIONED,
                                PROP_BACKUPS_NUMBER: backups}
    if options.expiry_seconds:
        from pyignite.datatypes import ExpiryPolicy

        settings[PROP_EXPIRY_POLICY] = ExpiryPolicy(create=timedelta(seconds=options.expiry_seconds))
    return client.get_or_create_cache(settings)


class LeaseLost(KilnError):
    """This warmer's lease on an alias expired and another warmer took it; this load must stop."""


class AliasLease:
    """An expiring, renewable lease on one alias, kept in Ignite so every warmer on every host sees it."""

    def __init__(self, client, name: str, seconds: float):
        self.cache = client.get_or_create_cache(LOCK_CACHE)
        self.name = name
        self.seconds = seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.value: str | None = None
        self.renewed_at = 0.0

    def _new_value(self) -> str:
        return json.dumps({"owner": self.owner, "until": time.time() + self.seconds})

    def try_acquire(self) -> bool:
        value = self._new_value()
        if self.cache.put_if_absent(self.name, value):
            self.value, self.renewed_at = value, time.monotonic()
            return True
        held = self.cache.get(self.name)
        if held is not None and json.loads(held)["until"] < time.time() and self.cache.replace_if_equals(self.name, held, value):
            log.warning("took over the expired warm lease on %s from %s", self.name, json.loads(held)["owner"])
            self.value, self.renewed_at = value, time.monotonic()
            return True
        return False

    def holder(self) -> str:
        held = self.cache.get(self.name)
        return json.loads(held)["owner"] if held else "nobody"

    def renew(self, force: bool = False) -> None:
        """Extend the lease (at most every quarter lease); raise ``LeaseLost`` when another warmer holds it."""
        if not force and time.monotonic() - self.renewed_at < self.seconds / 4:
            return
        value = self._new_value()
        if not self.cache.replace_if_equals(self.name, self.value, value):
            raise LeaseLost(f"lost the warm lease on alias {self.name!r} to {self.holder()}; this load stops, the alias is not touched")
        self.value, self.renewed_at = value, time.monotonic()

    def release(self) -> None:
        if self.value is not None:
            self.cache.remove_if_equals(self.name, self.value)
            self.value = None


@contextlib.contextmanager
def alias_lease(client, name: str, options: WarmOptions, progress: Callable[[str], None] = log.info):
    """Hold the alias's warm lease for the block; wait for another holder up to ``lease_wait_seconds``."""
    lease = AliasLease(client, name, options.lease_seconds)
    deadline = time.monotonic() + options.lease_wait_seconds
    waited = False
    while not lease.try_acquire():
        if time.monotonic() > deadline:
            raise KilnError(f"alias {name!r} is being warmed by {lease.holder()} for more than "
                            f"{options.lease_wait_seconds:.0f}s; not warming beside it")
        if not waited:
            progress(f"alias {name} is being warmed by {lease.holder()}; waiting for it to finish")
            waited = True
        time.sleep(1.0)
    try:
        yield lease
    finally:
        with contextlib.suppress(Exception):  # the node may be gone; the lease then expires by itself
            lease.release()


def warm(
    client,
    name: str,
    source: Path,
    key: str = "entity_id",
    options: WarmOptions | None = None,
    version_prefix: str = "",
    progress: Callable[[str], None] = log.info,
    connect: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Load ``source`` into ``<name>__<prefix><content hash>``, verify, switch the alias, drop old versions.

    Versions must sort oldest-first for retention, hence the prefix (Kiln passes the partition date). ``connect``
    opens a connection (a context manager): the load then runs over ``options.loaders`` of them side by side, else
    over ``client`` alone.
    """
    options = options or WarmOptions()
    if min(options.batch_size, options.retain, options.loaders) < 1:
        raise KilnError(f"batch_size, retain and loaders must be positive, got {options.batch_size}, {options.retain} "
                        f"and {options.loaders}")
    if not source.exists():
        raise KilnError(f"warm source {source} does not exist")
    version = version_prefix + source_version(source)
    expected = count_source(source)
    if expected == 0:
        raise KilnError(f"warm source {source} is empty; the alias stays where it is")
    target = cache_name(name, version)
    first = next(iter_source(source, key, 1), None)  # fail on a bad source before touching Ignite
    if first is None:
        raise KilnError(f"warm source {source} is empty")
    with alias_lease(client, name, options, progress) as lease:
        live = current_version(client, name)  # read under the lease: another warmer may just have switched
        streamed = stream_cache_name(name) in client.get_cache_names()
        if target in client.get_cache_names():
            existing = client.get_cache(target)
            if _complete(existing, source, key, expected, options.verify_sample, streamed):
                if live == version:
                    progress(f"{target} is already current and complete ({expected} entries); nothing to do")
                    return {"name": name, "version": version, "entries": expected, "switched": False, "dropped": []}
                progress(f"{target} is complete already (an earlier load); switching to it without reloading")
                carry_stream(client, name, existing, progress)
                return _switch(client, name, version, target, expected, options, progress, entries_per_s=None)
            if live != version:  # never the live version: an incomplete one is a dead warmer's leftover
                progress(f"dropping incomplete {target} left by an earlier try")
                existing.destroy()
        cache = _create_cache(client, target, options)  # the live version, when incomplete, is topped up in place

        # Topping up the live version must not undo the stream's newer entries; a fresh version has none yet.
        top_up = streamed and live == version
        loaded, started = 0, time.perf_counter()

        def write(conn, batch: dict[str, str]) -> None:
            if top_up:
                merge_newer(conn.get_cache(target), batch)
            else:
                conn.get_cache(target).put_all(batch)

        def written(batch: dict[str, str]) -> None:
            nonlocal loaded
            lease.renew()
            loaded += len(batch)
            if loaded % (options.batch_size * 50) < options.batch_size or loaded == expected:
                rate = loaded / max(time.perf_counter() - started, 1e-9)
                progress(f"warming {target}: {loaded}/{expected} ({100 * loaded / expected:.0f}%) {rate:,.0f} entries/s")

        with contextlib.ExitStack() as connections:
            # Loaders of their own: this thread keeps ``client`` for the lease while they load (a pyignite client
            # must not be used by two threads at once).
            loaders = [connections.enter_context(connect()) for _ in range(options.loaders)] if connect else [client]
            load_in_parallel(iter_source(source, key, options.batch_size), write, loaders, written)
        elapsed = time.perf_counter() - started

        verify(cache, source, key, expected, options.verify_sample, top_up)
        carry_stream(client, name, cache, progress)
        lease.renew(force=True)  # the switch happens only while this warmer still holds the lease
        return _switch(client, name, version, target, loaded, options, progress,
                       entries_per_s=round(loaded / max(elapsed, 1e-9)))


def load_in_parallel(batches: Iterator[dict[str, str]], write: Callable[[Any, dict[str, str]], None],
                     connections: Sequence[Any], written: Callable[[dict[str, str]], None]) -> None:
    """``write(connection, batch)`` for every batch, one batch in flight per connection (pyignite's clients are not
    thread-safe), ``written(batch)`` in this thread as each completes. At most one batch per connection plus the one
    being read is held: memory stays bounded whatever the source's size. The first failure is raised."""
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for connection in connections:
        idle.put(connection)

    def run(batch: dict[str, str]) -> dict[str, str]:
        connection = idle.get()
        try:
            write(connection, batch)
        finally:
            idle.put(connection)
        return batch

    in_flight: deque[Future[dict[str, str]]] = deque()
    with ThreadPoolExecutor(len(connections), thread_name_prefix="kiln-warm") as pool:
        try:
            for batch in batches:
                while len(in_flight) >= len(connections):
                    written(in_flight.popleft().result())
                in_flight.append(pool.submit(run, batch))
            while in_flight:
                written(in_flight.popleft().result())
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise


class Merged(NamedTuple):
    written: list[str]  # keys whose entry was newer than the cache's
    older: int  # entries not written: the cache held the same or a newer one
    stale: int  # of those, the ones the cache held a newer entry for (not merely the same: a replay)


def merge_newer(cache, entries: dict[str, str]) -> Merged:
    """Write the entries that are newer than what ``cache`` holds for their key."""
    if not entries:
        return Merged([], 0, 0)
    current = cache.get_all(list(entries))
    newer = {k: v for k, v in entries.items() if is_newer(v, current.get(k))}
    if newer:
        cache.put_all(newer)
    stale = sum(1 for k, v in entries.items() if k not in newer and current[k] != v)  # not newer: current holds k
    return Merged(list(newer), len(entries) - len(newer), stale)


def prediction_key(version_cache: str, entity: str) -> str:
    """Where serving caches an entity's score computed from the features in ``version_cache`` (the value names the
    model registration it came from)."""
    return f"{version_cache}|{entity}"


def forget_predictions(client, version_cache: str, entities: Sequence[str]) -> None:
    """Drop the scores cached from these entities' features in ``version_cache``, after those features changed."""
    from pyignite.exceptions import CacheError

    if entities:
        with contextlib.suppress(CacheError):  # no server ever cached a score: nothing to forget
            client.get_cache(PREDICTION_CACHE).remove_keys([prediction_key(version_cache, e) for e in entities])


def stream_entries(client, name: str, page_size: int = 5000) -> Iterator[dict[str, str]]:
    """The alias's stream table in pages (nothing when no stream ever wrote it)."""
    if stream_cache_name(name) not in client.get_cache_names():
        return
    page: dict[str, str] = {}
    with client.get_cache(stream_cache_name(name)).scan(page_size=page_size) as cursor:
        for k, v in cursor:
            page[k] = v
            if len(page) >= page_size:
                yield page
                page = {}
    if page:
        yield page


def carry_stream(client, name: str, cache, progress: Callable[[str], None] = log.info) -> int:
    """Bring the streamed entries newer than a fresh version's into it, before the version goes live."""
    carried = sum(len(merge_newer(cache, page)[0]) for page in stream_entries(client, name))
    if carried:
        progress(f"carried {carried} newer streamed entries into {cache.name}")
    return carried


def apply_stream_batch(client, name: str, entries: dict[str, str]) -> dict[str, Any]:
    """One stream batch: into the stream table, then into the live version (first carrying the stream table into
    it when a warm switched the alias since the last batch), then the scores of the replaced features forgotten.
    Idempotent: a replayed batch changes nothing."""
    stream_table = client.get_or_create_cache(stream_cache_name(name))
    # First: a warm that switches after this carries these entries along. ``stale``: entries of entities the stream
    # already had a newer event of.
    stale = merge_newer(stream_table, entries).stale
    version = current_version(client, name)
    if version is None:  # never warmed: the stream table keeps them until the first warm carries them in
        return {"version": None, "written": 0, "older": 0, "stale": stale, "republished": 0}
    live = client.get_cache(cache_name(name, version))
    published = client.get_or_create_cache(STREAM_PUBLISHED_CACHE)
    republished = 0
    if published.get(name) != version:
        for page in stream_entries(client, name):  # this batch's own entries are merged next
            carried = merge_newer(live, {k: v for k, v in page.items() if k not in entries})[0]
            forget_predictions(client, live.name, carried)
            republished += len(carried)
        published.put(name, version)
    written, older, _ = merge_newer(live, entries)
    # After the write, never before: serving re-reads the features after caching a score (see serving.predict), so
    # a score of the old features cached in between is caught by one side or the other.
    forget_predictions(client, live.name, written)
    return {"version": version, "written": len(written), "older": older, "stale": stale, "republished": republished}


def _complete(cache, source: Path, key: str, expected: int, sample: int, streamed: bool) -> bool:
    try:
        verify(cache, source, key, expected, sample, streamed)
    except KilnError:
        return False
    return True


def _switch(client, name: str, version: str, target: str, entries: int, options: WarmOptions,
            progress: Callable[[str], None], entries_per_s: int | None) -> dict[str, Any]:
    client.get_or_create_cache(ALIAS_CACHE).put(name, version)  # the switch: one atomic put
    dropped = drop_old_versions(client, name, options.retain)
    progress(f"alias {name} -> {version}; dropped {dropped or 'nothing'}")
    return {"name": name, "version": version, "cache": target, "entries": entries, "switched": True,
            "dropped": dropped, "entries_per_s": entries_per_s}


def verify(cache, source: Path, key: str, expected: int, sample: int, streamed: bool = False) -> None:
    """Every source entry is there: the count and a sample of the values; with a stream on the alias (``streamed``)
    the count may be larger and a value may be a newer streamed one."""
    size = cache.get_size()
    if size < expected or (size != expected and not streamed):
        raise KilnError(f"cache {cache.name} holds {size} entries, the source has {expected}; alias not switched")
    want = next(iter_source(source, key, sample), {}) if sample else {}  # the first rows only: memory stays flat
    got = cache.get_all(list(want))
    bad = [k for k in want if got.get(k) != want[k] and not (streamed and got.get(k) and is_newer(got[k], want[k]))]
    if bad:
        raise KilnError(f"cache {cache.name} differs from the source for keys {bad[:5]}; alias not switched")


def drop_old_versions(client, name: str, retain: int) -> list[str]:
    current = current_version(client, name)
    keep = set(versions(client, name)[-retain:]) | {current}
    dropped = [v for v in versions(client, name) if v not in keep]
    for v in dropped:
        client.get_cache(cache_name(name, v)).destroy()
    return dropped


def get_many(client, name: str, keys: Sequence[str] | Iterable[str]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Resolve the alias once, then read ``keys`` from that one version: never a mix of versions."""
    version = current_version(client, name)
    if version is None:
        return None, {}
    raw = client.get_cache(cache_name(name, version)).get_all(list(keys))
    return version, {k: json.loads(v) for k, v in raw.items()}
