"""Test services' ports, shifted by ``KILN_TEST_PORT_OFFSET`` so that two test runs on one machine do not collide."""

from __future__ import annotations

import os


def shifted(port: int) -> int:
    return port + int(os.environ.get("KILN_TEST_PORT_OFFSET", "0"))
