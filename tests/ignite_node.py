"""Real Ignite for tests: one node (native persistence on) or a cluster, started with scripts/ignite.sh on its own ports."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.ports import shifted

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class IgniteNode:
    state_dir: Path
    port: int = 10900
    discovery_port: int = 47600
    communication_port: int = 47200
    backups: int | None = None  # None: the script's default (1 with two or more nodes, else 0)
    activate: bool = True  # False: left inactive, as a fresh persistent cluster starts
    nodes: int = 1  # node i listens on each port + i
    persistence: bool = True
    authentication: bool = False  # thin clients log in; the fixture's own client as Ignite's first user
    username: str = "ignite"
    password: str = "ignite"  # noqa: S105 (Ignite's documented first password, on a test node)

    def __post_init__(self) -> None:
        self.port, self.discovery_port, self.communication_port = (
            shifted(p) for p in (self.port, self.discovery_port, self.communication_port))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_IGNITE_DIR": str(self.state_dir), "KILN_IGNITE_PERSISTENCE": str(self.persistence).lower(),
                "KILN_IGNITE_AUTHENTICATION": str(self.authentication).lower(),
                "KILN_IGNITE_NODES": str(self.nodes),
                **({"KILN_IGNITE_BACKUPS": str(self.backups)} if self.backups is not None else {}), "KILN_IGNITE_ACTIVATE": str(self.activate).lower(),
                "KILN_IGNITE_PORT": str(self.port), "KILN_IGNITE_DISCOVERY_PORT": str(self.discovery_port),
                "KILN_IGNITE_COMMUNICATION_PORT": str(self.communication_port)}

    def _script(self, action: str) -> None:
        out = subprocess.run([str(ROOT / "scripts" / "ignite.sh"), action], env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"ignite.sh {action} failed: {out.stdout}\n{out.stderr}")

    def start(self) -> None:
        self._script("up")

    def stop(self) -> None:
        self._script("down")

    @property
    def pid(self) -> int:
        return self.pids[0]

    @property
    def pids(self) -> list[int]:
        """Each node's pid (node 0 first)."""
        names = ["ignite.pid", *(f"ignite-{i}.pid" for i in range(1, self.nodes))]
        return [int((self.state_dir / "run" / name).read_text()) for name in names]

    @property
    def hosts(self) -> str:
        """Every node's thin-client address, as a connection's host or KILN_IGNITE_HOST lists them."""
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.nodes))

    def client(self):
        from pyignite import Client

        c = Client(timeout=10.0, **({"username": self.username, "password": self.password} if self.authentication else {}))
        c.connect([("127.0.0.1", self.port + i) for i in range(self.nodes)])
        return c

    def connection_uri(self) -> str:
        return f"ignite://127.0.0.1:{self.port}"