"""``backbone="auto"``: the backbone a training run uses, chosen by comparing candidates first.

The comparison is :func:`.survey.survey_backbones` on the run's own split, so
the chosen backbone's features are already cached when training starts. It is
recorded in the run folder (``backbones.csv``) as soon as it is made, and a
resumed run takes the choice recorded there rather than comparing again: a
speed measured anew could pick another backbone than the checkpoint's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import distributed
from .._console import Console
from .._io import write_text
from ..config import TrainingConfig
from ..data.dataset import DatasetSplit
from ..errors import UsageError
from ..features.cache import CacheLayout
from ..runfolder import BACKBONES_FILE, CHECKPOINT_FILE, backbones_csv, read_csv_file
from .survey import parse_candidates, survey_backbones

__all__ = ["select_backbone"]


def select_backbone(split: DatasetSplit, config: TrainingConfig, cache: CacheLayout, console: Console,
                    run_dir: Path | None = None) -> tuple[TrainingConfig, list[dict]]:
    """``config`` with its ``auto`` backbone replaced by the best candidate on ``split``'s validation
    images within ``config.time_budget``, and the comparison's rows (for ``backbones.csv``)."""
    if distributed.world().size > 1:
        raise UsageError("--backbone auto compares backbones in one process: run 'headstart backbones DATA' "
                         "first, then train on several processes with the backbone it chose")
    recorded = _recorded(run_dir)
    if recorded is not None:
        rows, chosen = recorded
        console.info(f"resuming with the backbone chosen when the run started: {chosen['backbone']} "
                     f"(see {run_dir / BACKBONES_FILE})")
    else:
        candidates = parse_candidates(config.candidates, "--candidate", config.image_size, cache)
        console.info(f"--backbone auto: comparing {len(candidates)} backbones by the lightweight head's "
                     "validation score on their (cached) features")
        survey = survey_backbones(split, candidates, config, cache, console)
        rows, chosen = survey.rows(), survey.chosen.row()
        console.info(f"chose {survey.reason}")
        if run_dir is not None:
            write_text(run_dir / BACKBONES_FILE, backbones_csv(rows))
    resolved = dataclasses.replace(config, backbone=chosen["backbone"], weights=chosen["weights"] or None,
                                   candidates=(), time_budget=None)
    return resolved, rows


def _recorded(run_dir: Path | None) -> tuple[list[dict], dict] | None:
    """The comparison an interrupted run recorded, and its choice; None for a new run."""
    if run_dir is None or not (run_dir / CHECKPOINT_FILE).is_file():
        return None
    rows = read_csv_file(run_dir, BACKBONES_FILE, required=False)
    chosen = [row for row in rows or () if row.get("chosen") == "True"]
    return (rows, chosen[0]) if len(chosen) == 1 else None
