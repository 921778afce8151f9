"""A real Kafka broker for tests: scripts/kafka.sh on its own ports and state folder."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.ports import shifted

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class KafkaBroker:
    state_dir: Path
    port: int = 9192

    def __post_init__(self) -> None:
        self.port = shifted(self.port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_KAFKA_DIR": str(self.state_dir), "KILN_KAFKA_PORT": str(self.port)}

    def _script(self, action: str) -> str:
        out = subprocess.run([str(ROOT / "scripts" / "kafka.sh"), action], env=self.env, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0 and action != "status":
            raise RuntimeError(f"kafka.sh {action} failed: {out.stdout}\n{out.stderr}")
        return out.stdout

    def start(self) -> None:
        self._script("up")

    def stop(self) -> None:
        self._script("down")

    def running(self) -> bool:
        return "running" in self._script("status") and "not running" not in self._script("status")
