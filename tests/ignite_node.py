"""A real Ignite node for tests: started with scripts/ignite.sh on its own ports, native persistence on."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class IgniteNode:
    state_dir: Path
    port: int = 10900
    discovery_port: int = 47600
    communication_port: int = 47200
    backups: int = 0
    activate: bool = True  # False: left inactive, as a fresh persistent cluster starts

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_IGNITE_DIR": str(self.state_dir), "KILN_IGNITE_PERSISTENCE": "true",
                "KILN_IGNITE_BACKUPS": str(self.backups), "KILN_IGNITE_ACTIVATE": str(self.activate).lower(),
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
        return int((self.state_dir / "run" / "ignite.pid").read_text())

    def client(self):
        from pyignite import Client

        c = Client(timeout=10.0)
        c.connect("127.0.0.1", self.port)
        return c

    def connection_uri(self) -> str:
        return f"ignite://127.0.0.1:{self.port}"