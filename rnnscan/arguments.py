"""The argparse types of the `rnnscan` command's options: each parses one
option's text, and its error says what was expected and what came."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`, called a `what` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "positive integer")
non_negative_int = int_at_least(0, "non-negative integer")


def float_at_least(minimum: float, what: str, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite number above `minimum` (`strict`) or at least it, called a
    `what` number in errors."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}") from None
        if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise argparse.ArgumentTypeError(f"must be a {what} finite number, got {text}")
        return value

    return parse


positive_float = float_at_least(0.0, "positive", strict=True)
non_negative_float = float_at_least(0.0, "non-negative", strict=False)


def clip_norm(text: str) -> float | None:
    """An argparse type: a positive finite number, or `none` for no clipping."""
    if text.lower() == "none":
        return None
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number or 'none', got {text!r}") from None
