"""How a Kiln process reaches Ignite: the nodes, and the connection's login and TLS options, for every client.

One reading of an Ignite connection for all of Kiln's clients, so none of them connects without the login or TLS
the deployment requires: the Airflow hook (``kiln.hooks.ignite``) passes the ``ignite_default`` connection's
fields to ``client_options``; a stage process (the stream) gets that connection as ``AIRFLOW_CONN_IGNITE_DEFAULT``
(a URI or JSON, Airflow's two forms) from its operator or its pod's Secret; the prediction service, which runs
outside Airflow, reads ``KILN_IGNITE_USERNAME``, ``KILN_IGNITE_PASSWORD_FILE`` (a mounted Secret) or
``KILN_IGNITE_PASSWORD``, ``KILN_IGNITE_USE_SSL`` and ``KILN_IGNITE_SSL_CA_FILE``/``_CERTFILE``/``_KEYFILE``.
The options are pyignite's ``Client``/``AioClient`` keyword arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ml_tasks.core.environment import env_default, env_given, env_secret, env_str
from ml_tasks.core.processes import connection_fields, connection_variable

CONNECTION_ENV = connection_variable("ignite_default")
DEFAULT_PORT: int = env_default("KILN_IGNITE_PORT")
SSL_FILES = ("ssl_ca_file", "ssl_certfile", "ssl_keyfile")


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def ignite_errors() -> tuple[type[BaseException], ...]:
    """What pyignite raises when a node is down, restarting or lost a cache (all mean: try again later)."""
    from pyignite import exceptions as ex

    return (OSError, ConnectionError, ex.ReconnectError, ex.CacheError, ex.ParseError, ex.ClusterError,
            ex.SocketError, ex.HandshakeError)


def login_refused() -> type[BaseException]:
    from pyignite.exceptions import AuthenticationError

    return AuthenticationError


def client_options(login: str | None, password: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """pyignite's login and TLS keyword arguments from a connection's login, password and extras."""
    options: dict[str, Any] = {}
    if login:
        options.update(username=login, password=password or "")
    if _true(extra.get("use_ssl", False)):
        options["use_ssl"] = True
        options.update({key: str(extra[key]) for key in SSL_FILES if extra.get(key)})
    return options


def parse_connection(value: str) -> tuple[str | None, int | None, dict[str, Any]]:
    """An Airflow connection value (``ignite://user:pass@a,b:10800?use_ssl=true`` or its JSON form) -> its hosts,
    port and client options."""
    value = value.strip()
    if value.startswith("{"):
        conn = connection_fields(value, CONNECTION_ENV)
        port = conn.get("port")
        return conn.get("host"), int(port) if port else None, client_options(conn.get("login"), conn.get("password"),
                                                                             conn["extra"])
    # Not urlsplit's hostname/port: a host list is one netloc they would misread. Airflow's get_uri() quotes the
    # host ("a%2Cb:10801": 10801 is every node's port); a hand-written "a,b:10801" gives that node its own port.
    parts = urlsplit(value)
    credentials, _, hosts = parts.netloc.rpartition("@")
    login, _, password = credentials.partition(":")
    query = dict(parse_qsl(parts.query))
    extra = json.loads(query["__extra__"]) if "__extra__" in query else query
    port = None
    if "," not in hosts and hosts.rpartition(":")[2].isdigit():
        hosts, _, port_text = hosts.rpartition(":")
        port = int(port_text)
    return unquote(hosts) or None, port, client_options(unquote(login) or None, unquote(password) or None, extra)


def options_from_env(env: Mapping[str, str] = os.environ) -> tuple[str | None, int | None, dict[str, Any]]:
    """The hosts, port and client options this process was given: the Ignite connection when its operator handed
    it one, else ``KILN_IGNITE_*`` (``KILN_IGNITE_HOST``/``_PORT``, when set, name the nodes either way). A password
    file that is named but cannot be read is an error, never no login."""
    if env.get(CONNECTION_ENV):
        hosts, port, options = parse_connection(env[CONNECTION_ENV])
        given_port = env_given("KILN_IGNITE_PORT", env)
        return env_given("KILN_IGNITE_HOST", env) or hosts, int(given_port) if given_port else port, options
    password = env_secret("KILN_IGNITE_PASSWORD", env)
    extra = {"use_ssl": env_str("KILN_IGNITE_USE_SSL", env),
             **{key: env_given(f"KILN_IGNITE_{key.upper()}", env) for key in SSL_FILES}}
    port = env_given("KILN_IGNITE_PORT", env)
    return (env_given("KILN_IGNITE_HOST", env), int(port) if port else None,
            client_options(env_given("KILN_IGNITE_USERNAME", env), password, extra))
