"""Kiln's environment variables (``KILN_*``), once: each one's name, default, meaning and how its text is read.

Every Python reader (the stages, the service, the operators, the DAG files) goes through this module, e.g.
``env_int("KILN_SEARCH_PARALLELISM")``, so a default is spelled here and nowhere else; ``markdown_table()`` is the
table in docs/operations.md (``python -m ml_tasks.core.environment`` prints it; a test keeps the two the same). The
variables Kiln's shell scripts read for the local services (ports, state folders: ``scripts/*.sh``) are theirs.

Two ways to read a variable, the two semantics Kiln's readers have:

- ``env_str``/``env_int``/``env_float``/``env_bool``/``env_path``: its text when it is set (even to nothing), else the
  declared default, parsed (an unparsable text raises, as ``int(os.environ.get(...))`` did);
- ``env_given``: its text when it is set to something, else None, for a reader with a fallback of its own (an Airflow
  variable, a connection, a secret's ``*_FILE`` before the secret itself).

No Airflow import, and none of Kiln's heavy modules: the DAG files import this at parse time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def parse_flag(text: str) -> bool:
    """``true`` (any case, blanks around ignored) is on; anything else is off."""
    return text.strip().lower() == "true"


@dataclass(frozen=True)
class EnvSetting:
    """One ``KILN_*`` variable. ``default`` is the text it stands for when unset (a callable: computed when read, for
    a path under the project or the home folder); None: unset means none (a secret, an optional file)."""

    name: str
    default: str | Callable[[], str] | None
    doc: str
    parse: Callable[[str], Any] = str
    shown: str | None = None  # the default as the docs show it, where the computed one depends on the machine

    def default_text(self) -> str | None:
        return self.default() if callable(self.default) else self.default

    def default_value(self) -> Any:
        text = self.default_text()
        return None if text is None else self.parse(text)

    def get(self, environ: Mapping[str, str] | None = None) -> Any:
        """The variable's text as set (even empty), else the default, parsed; None when it is neither."""
        text = _environ(environ).get(self.name)
        if text is None:
            text = self.default_text()
        return None if text is None else self.parse(text)

    def given(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's text when it is set to something, else None (the reader falls back on its own)."""
        return _environ(environ).get(self.name) or None

    @property
    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        text = self.default_text()
        return "unset" if text is None else f"`{text}`"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _project(folder: str) -> Callable[[], str]:
    def default() -> str:
        from ml_tasks.core.layout import PROJECT_ROOT  # layout reads KILN_DATA_ROOT through this module

        return str(PROJECT_ROOT / folder)

    return default


def _builtin_dataset() -> str:
    from ml_tasks.core.spec import BUILTIN_DATASET

    return BUILTIN_DATASET


def _kiln_image() -> str:
    """The image of this very version: pods run the code Airflow runs (the image is tagged with it)."""
    from importlib.metadata import version

    return f"kiln/kiln:{version('kiln')}"


def _ivy_dir() -> str:
    return str(Path.home() / ".cache" / "kiln" / "ivy")


_E = EnvSetting
_DECLARED = [
    # where things are
    _E("KILN_DATA_ROOT", _project("data"), "root of the datasets' data and the registry (the Airflow variable "
       "`kiln_data_root` comes first in the DAGs)", Path, shown="`data/` in the project"),
    _E("KILN_DATASETS_DIR", _project("datasets"), "the folder of the dataset specs the DAGs and the stages read",
       Path, shown="`datasets/` in the project"),
    # where heavy steps run
    _E("KILN_EXECUTION", "local", "`local` (subprocesses) or `kubernetes` (pods); the Airflow variable "
       "`kiln_execution` comes first"),
    _E("KILN_IMAGE", _kiln_image, "the image of every stage pod and MXNet role (`make images` builds it)",
       shown="`kiln/kiln:<Kiln's version>`"),
    _E("KILN_NAMESPACE", "kiln", "where pods and the MXNet Service are created"),
    _E("KILN_DATA_CLAIM", "kiln-data", "the artifact volume's claim"),
    _E("KILN_POD_DEFERRABLE", "false", "`true`: the task hands the pod to the triggerer and frees its worker slot",
       parse_flag),
    _E("KILN_POD_PRESETS", None, "the pod sizes of this cluster, as JSON merged over the presets small/medium/large/gpu "
       "(e.g. `{\"medium\": {\"requests\": {\"cpu\": \"500m\"}}}` where nodes are small)"),
    _E("KILN_POD_LOGS", "true", "stream the pod's log into the task log (off only where nodes keep no logs)",
       parse_flag),
    _E("KILN_SEARCH_PARALLELISM", "2", "search trials running at once in one run (read when the DAG is parsed)", int),
    # Spark
    _E("KILN_SPARK_MASTER", "local[*]", "master of a batch stage's own Spark (not under spark-submit or Spark Connect)"),
    _E("KILN_SHUFFLE_PARTITIONS", "8", "`spark.sql.shuffle.partitions` of a batch stage's session (not under "
       "spark-submit)"),
    _E("KILN_STREAM_MASTER", "local[2]", "master of the streaming job's own driver"),
    _E("KILN_STREAM_SHUFFLE_PARTITIONS", "4", "`spark.sql.shuffle.partitions` of the streaming job's driver (when unset, a set "
       "`KILN_SHUFFLE_PARTITIONS`)"),
    _E("KILN_STREAM_DRIVER_MEMORY", "1g", "heap of the streaming job's driver"),
    _E("KILN_STREAM_LEASE_SECONDS", "20", "a killed streaming driver's lease expires after this; its restart waits "
       "that long", float),
    _E("KILN_IVY_DIR", _ivy_dir, "where Ivy keeps Spark's Kafka connector", Path, shown="`~/.cache/kiln/ivy`"),
    _E("KILN_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka brokers host:port[,host:port] of the stream and its producer"),
    # Ignite, for the clients outside Airflow (the service; a stage not handed the ignite_default connection)
    _E("KILN_IGNITE_HOST", "127.0.0.1", "Ignite nodes host[:port][,host[:port]] (else the Ignite connection's, "
       "else the default)"),
    _E("KILN_IGNITE_PORT", "10800", "the thin-client port of a node named without one", int),
    _E("KILN_IGNITE_USERNAME", None, "the login, when the cluster asks for one"),
    _E("KILN_IGNITE_PASSWORD_FILE", None, "a file (a mounted Secret) holding the login's password; wins over "
       "`KILN_IGNITE_PASSWORD`"),
    _E("KILN_IGNITE_PASSWORD", None, "the login's password"),
    _E("KILN_IGNITE_USE_SSL", "false", "`true`: connect over TLS"),
    _E("KILN_IGNITE_SSL_CA_FILE", None, "TLS: the CA certificate file"),
    _E("KILN_IGNITE_SSL_CERTFILE", None, "TLS: the client certificate file"),
    _E("KILN_IGNITE_SSL_KEYFILE", None, "TLS: the client key file"),
    # the prediction service
    _E("KILN_DEFAULT_DATASET", _builtin_dataset, "the dataset that also answers at `/predict` and `/healthz`"),
    _E("KILN_SERVE_WORKERS", "1", "server processes sharing the port", int),
    _E("KILN_PREDICTION_TTL", "300", "seconds a cached prediction lives in Ignite", float),
    _E("KILN_RELOAD_INTERVAL", "2", "seconds between checks for a new champion", float),
    _E("KILN_ALIAS_TTL", "1", "seconds a resolved feature alias is reused (0: resolved on every request)", float),
    _E("KILN_SERVE_MAX_BODY_BYTES", str(1 << 20), "largest request body (1 MiB): 413 above it", int),
    _E("KILN_SERVE_MAX_BATCH_IDS", "1000", "most entity ids in one request: 422 above it", int),
    _E("KILN_SERVE_MAX_ENTITY_ID_CHARS", "256", "longest entity id: 422 above it", int),
    _E("KILN_SERVE_API_KEY_FILE", None, "a file (a mounted Secret) holding the key clients must send; wins over "
       "`KILN_SERVE_API_KEY`; named but unreadable or empty: the service does not start"),
    _E("KILN_SERVE_API_KEY", None, "the key clients must send (unset: no authentication)"),
]
ENV: dict[str, EnvSetting] = {s.name: s for s in _DECLARED}


def _read(name: str, parse: Callable[[str], Any], environ: Mapping[str, str] | None) -> Any:
    setting = ENV[name]
    if setting.parse is not parse:
        raise TypeError(f"{name} is read with {setting.parse.__name__}, not {parse.__name__}")
    return setting.get(environ)


def env_str(name: str, environ: Mapping[str, str] | None = None) -> str:
    return _read(name, str, environ)


def env_int(name: str, environ: Mapping[str, str] | None = None) -> int:
    return _read(name, int, environ)


def env_float(name: str, environ: Mapping[str, str] | None = None) -> float:
    return _read(name, float, environ)


def env_bool(name: str, environ: Mapping[str, str] | None = None) -> bool:
    return _read(name, parse_flag, environ)


def env_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    return _read(name, Path, environ)


def env_given(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``name``'s text when it is set to something, else None."""
    return ENV[name].given(environ)


def env_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret: the text of the file ``<name>_FILE`` names (a mounted Secret; stripped), else ``<name>``'s; None when
    neither is set. A file that is named but cannot be read raises, never falls back to no secret."""
    path = env_given(f"{name}_FILE", environ)
    if not path:
        return env_given(name, environ)
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        from ml_tasks.core.errors import KilnError

        raise KilnError(f"{name}_FILE {path} cannot be read ({exc.strerror})") from None


def env_default(name: str) -> Any:
    """``name``'s declared default, parsed (None: it has none)."""
    return ENV[name].default_value()


def markdown_table() -> str:
    """The table of every variable, as docs/operations.md shows it."""
    rows = [f"| `{s.name}` | {s.shown_default} | {s.doc} |" for s in _DECLARED]
    return "\n".join(["| Variable | Default | Meaning |", "|---|---|---|", *rows])


if __name__ == "__main__":
    print(markdown_table())
