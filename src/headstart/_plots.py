"""What every plot of headstart shares: percentages on an accuracy axis, and PNGs written atomically.

A low module, beside :mod:`headstart._html`, so that the run's report and the comparison of
backbones plot alike without one importing the other.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ._io import atomic_path

__all__ = ["percent_axis", "save"]


def save(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def percent_axis(axis) -> None:
    """Ticks as percentages, with as many decimals as their spacing needs: never two equal labels
    (an accuracy axis from 99.0% to 100% gets 99.2%, 99.4%...)."""
    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
