"""What the values of some options mean: argparse types, whose errors argparse reports in one line
naming the option (exit 2)."""

from __future__ import annotations

import argparse

__all__ = ["port_number", "unfreeze_count"]


def port_number(value: str) -> int:
    """``--port``: 0 to 65535 (0: any free port)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {number}")
    return number


def unfreeze_count(value: str) -> int | None:
    """``--unfreeze-last``: a number of blocks, or ``all`` (None)."""
    if value == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or 'all', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 block, got {number}")
    return number
