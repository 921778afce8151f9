"""Test services' ports, shifted by ``KILN_TEST_PORT_OFFSET`` so that two test runs on one machine do not collide."""

from __future__ import annotations

import os
import socket


def shifted(port: int) -> int:
    return port + int(os.environ.get("KILN_TEST_PORT_OFFSET", "0"))


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
