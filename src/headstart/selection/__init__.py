"""Which backbone suits a dataset: candidates compared on cached features.

``headstart backbones DATA`` and ``train --backbone auto`` come here. Each
candidate's features of one split go through the one feature pipeline (so a
second comparison, or training afterwards, reads them from the cache), the
lightweight head is fitted on them as training fits it, and the candidates are
ranked by validation score, with their speed and size beside it:

* :mod:`.survey`: the candidates, the comparison, and the choice within a time budget;
* :mod:`.auto`: ``backbone="auto"`` resolved for a training run, and recorded in its folder;
* :mod:`.page`: the terminal table, ``backbones.csv`` and ``backbones.html`` with the trade-off plot.

matplotlib is imported by :mod:`.page` alone; PyTorch only where a backbone must be built.
"""

from .auto import select_backbone
from .survey import (SAMPLE_IMAGES, Candidate, Entry, Survey, choose, default_candidates, parse_candidates,
                     require_validation, survey_backbones)

__all__ = ["SAMPLE_IMAGES", "Candidate", "Entry", "Survey", "choose", "default_candidates", "parse_candidates",
           "require_validation", "survey_backbones", "select_backbone"]
