"""Stages added by later features (MXNet, Singa, serving); kept apart so the core CLI stays short."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def add_stages(stage: Callable[..., Any]) -> None:
    """Register extra stages on the CLI (``stage(name, func, help, partition=True)``)."""
