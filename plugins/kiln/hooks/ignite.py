"""``IgniteHook``: owns the connection to Apache Ignite's thin-client port (pyignite).

Connection ``ignite_default`` (type ``ignite``): host may list several nodes (``a,b,c``), each with its
own port if it differs (``a:10800,b:10801``), port defaults to 10800, login/password for authentication, extras ``use_ssl`` (bool), ``ssl_ca_file``,
``ssl_certfile``, ``ssl_keyfile``, ``timeout`` (seconds) and ``partition_aware`` (default false: pyignite
re-fetches a cache's partition map in pure Python whenever the topology moves, and ``put_all`` goes to
one node anyway). Resolution order: argument >
connection > default (an undefined ``ignite_default`` means the local node on 127.0.0.1:10800).
Connecting retries a bounded number of times, so a node that is restarting
is waited for and a dead one fails with a message naming the addresses tried.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from airflow.sdk.bases.hook import BaseHook

from ml_tasks.features.ignite_connection import DEFAULT_PORT  # one default port for every client


class IgniteConnectionError(ConnectionError):
    """No Ignite node answered on any configured address."""


class IgniteHook(BaseHook):
    conn_name_attr = "ignite_conn_id"
    default_conn_name = "ignite_default"
    conn_type = "ignite"
    hook_name = "Apache Ignite"

    def __init__(self, ignite_conn_id: str = default_conn_name, connect_retries: int = 5, retry_delay: float = 2.0) -> None:
        super().__init__()
        self.ignite_conn_id = ignite_conn_id
        self.connect_retries = connect_retries
        self.retry_delay = retry_delay

    def client_config(self) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        """Addresses and pyignite ``Client`` keyword arguments from the connection (no I/O beyond the lookup)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.ignite_conn_id)
        except AirflowNotFoundException:
            if self.ignite_conn_id != self.default_conn_name:
                raise
            self.log.info("connection %s is not defined; using the local node 127.0.0.1:%d", self.ignite_conn_id, DEFAULT_PORT)
            return [("127.0.0.1", DEFAULT_PORT)], {"timeout": 10.0, "partition_aware": False}
        extra = conn.extra_dejson
        from ml_tasks.features.feature_cache import parse_addresses
        from ml_tasks.features.ignite_connection import client_options

        addresses = parse_addresses(conn.host or "127.0.0.1", int(conn.port or DEFAULT_PORT))
        kwargs: dict[str, Any] = {"timeout": float(extra.get("timeout", 10.0)),
                                  "partition_aware": str(extra.get("partition_aware", "false")).lower() == "true",
                                  **client_options(conn.login, conn.password, extra)}
        return addresses, kwargs

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Any]:
        """A connected pyignite ``Client``, closed on exit."""
        from pyignite import Client
        from pyignite.exceptions import ReconnectError

        addresses, kwargs = self.client_config()
        client = Client(**kwargs)
        last: Exception | None = None
        for attempt in range(1, self.connect_retries + 1):
            try:
                client.connect(addresses)
                break
            except (ReconnectError, OSError) as exc:
                last = exc
                self.log.warning("Ignite at %s not reachable (attempt %d/%d): %s", addresses, attempt, self.connect_retries, exc)
                time.sleep(self.retry_delay)
        else:
            raise IgniteConnectionError(f"no Ignite node answered at {addresses} after {self.connect_retries} attempts: {last}")
        try:
            yield client
        finally:
            client.close()
