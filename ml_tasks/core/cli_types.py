"""argparse glue for names that become paths: the checks live in ``layout``; these keep their messages."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ml_tasks.core.layout import check_ds, check_name


def _checked(check: Callable[..., str], *args: Any) -> Callable[[str], str]:
    def convert(value: str) -> str:
        try:
            return check(*args, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None  # argparse alone prints only the function name

    return convert


DS = _checked(check_ds)
DATASET = _checked(check_name, "dataset name")
CANDIDATE = _checked(check_name, "candidate")
