"""Which photos to label next: active learning by uncertainty, spread out by diversity.

A batch of the N most uncertain photos is often N near-copies of one hard case. Here each
pick maximises the photo's **uncertainty** times its **distance** to the nearest photo picked
before it (uncertainty-weighted k-center greedy on the embeddings): the first pick is the
most uncertain photo, and a near-copy of a pick scores near zero after it. Uncertainty is one
minus the margin between the two most probable classes (for a multi-label model: how close the
least decided class is to its threshold). ``benchmarks/bench_active.py`` measures it against
random picks.

Label Studio import: :func:`labelstudio_tasks` writes one task per photo with the model's
prediction as a pre-annotation, for a labelling config whose image is ``$image`` (``<Image
name="image">``) and whose choices are named ``label``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import csv_text, json_text
from ..config import LABEL_SEP
from ..errors import UsageError
from ..features.embeddings import normalized_embeddings
from ..record import split_images
from ..runfolder import relative_path
from ..training.linear import linear_probabilities
from .vectors import embed_images

__all__ = ["Suggestion", "uncertainty", "select_batch", "labelled_paths", "suggest_images", "suggestions_csv",
           "labelstudio_tasks"]


@dataclass(frozen=True)
class Suggestion:
    """A photo to label, in the order picked: what the model predicts for it and how unsure it is."""

    path: Path
    predicted: str  # a multi-label model's classes, LABEL_SEP-separated
    probability: float  # of the predicted class (multi-label: the least decided class's)
    uncertainty: float  # in [0, 1]: 1 where the model cannot tell


def uncertainty(proba: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """One minus the margin between the two most probable classes of each row; with a multi-label
    model's ``thresholds``, how close the class nearest its threshold is to it (1: on it)."""
    p = np.asarray(proba, dtype=np.float64)
    if thresholds is not None:
        t = np.asarray(thresholds, dtype=np.float64)
        return (1.0 - np.abs(p - t) / np.maximum(t, 1.0 - t)).max(axis=1)
    if p.shape[1] < 2:
        return 1.0 - np.abs(2 * p[:, 0] - 1)
    top = np.sort(p, axis=1)[:, -2:]
    return 1.0 - (top[:, 1] - top[:, 0])


def select_batch(scores: np.ndarray, embeddings: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` rows, each maximising its score times its distance (one minus cosine
    similarity of the unit ``embeddings``) to the nearest row picked before; never a row twice."""
    n = min(n, len(scores))
    e = np.asarray(embeddings, dtype=np.float32)
    distance = np.ones(len(scores))
    value = np.asarray(scores, dtype=np.float64)
    picked: list[int] = []
    for _ in range(n):
        gain = value * distance
        gain[picked] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        distance = np.minimum(distance, np.clip(1.0 - e @ e[best], 0.0, None))
    return np.array(picked, dtype=np.int64)


def labelled_paths(model: Any) -> set[Path]:
    """The photos ``model`` was trained, validated or tested on (its ``split_``, or its run folder's
    ``split.csv``): resolved, as the photos to suggest are."""
    split = getattr(model, "split_", None)
    if split is not None:
        return {s.path.resolve() for s in split.samples()}
    record = getattr(model, "record_", None)
    if record is None or record.directory is None:
        return set()
    return {p.resolve() for name in ("train", "val", "test") for p, _ in split_images(record.directory, name,
                                                                                    model.classes_)}


def suggest_images(model: Any, paths: Sequence[str | Path], n: int) -> list[Suggestion]:
    """The ``n`` photos of ``paths`` whose labels would help ``model`` most (see the module's
    docstring); a photo it was trained on, or that cannot be decoded, is never suggested."""
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"--budget must be a whole number of photos, at least 1. Got {n!r} instead.")
    seen = labelled_paths(model)
    candidates = [p for p in dict.fromkeys(Path(p).resolve() for p in paths) if p not in seen]
    if not candidates:
        return []
    features = embed_images(model, candidates)
    proba = _probabilities(model, candidates, features)
    usable = np.flatnonzero(~(np.isnan(proba).any(axis=1) | np.isnan(features).any(axis=1)))
    thresholds = model.thresholds_ if model.multi_label_ else None
    scores = uncertainty(proba[usable], thresholds)
    picked = usable[select_batch(scores, normalized_embeddings(features[usable]), n)]
    by_row = dict(zip(usable, scores))
    return [_suggestion(candidates[i], proba[i], by_row[i], model.classes_, thresholds) for i in picked]


def _probabilities(model: Any, paths: Sequence[Path], features: np.ndarray) -> np.ndarray:
    """``model``'s class probabilities of ``paths``. A lightweight run that kept no fine-tuning has
    the pretrained backbone whose features are at hand: its dense layer on them gives the
    model's own probabilities, without running the network again (the slower half of the work
    on a CPU). Any other run predicts through its whole network."""
    metrics = model.metrics_
    if metrics is None or metrics.head is None or (metrics.fine_tune is not None and metrics.fine_tune.kept):
        return np.asarray(model.predict_proba(paths), dtype=np.float64)
    fc = model.net_.head.fc
    weight, bias = (t.detach().cpu().double().numpy() for t in (fc.weight, fc.bias))
    if not model.multi_label_:
        return linear_probabilities(weight, bias, features)
    return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ weight.T + bias)))


def _suggestion(path: Path, proba: np.ndarray, unsure: float, classes: Sequence[str],
                thresholds: np.ndarray | None) -> Suggestion:
    if thresholds is None:
        best = int(np.argmax(proba))
        return Suggestion(path, classes[best], float(proba[best]), float(unsure))
    chosen = LABEL_SEP.join(c for c, p, t in zip(classes, proba, thresholds) if p >= t)
    closest = int(np.argmin(np.abs(proba - thresholds)))
    return Suggestion(path, chosen, float(proba[closest]), float(unsure))


def suggestions_csv(suggestions: Sequence[Suggestion]) -> str:
    """``rank, path, predicted, probability, uncertainty``: one row per photo, in the order picked."""
    return csv_text(("rank", "path", "predicted", "probability", "uncertainty"),
                    [(rank, str(s.path), s.predicted, f"{s.probability:.4f}", f"{s.uncertainty:.4f}")
                     for rank, s in enumerate(suggestions, 1)])


def labelstudio_tasks(suggestions: Sequence[Suggestion], root: Path, model_version: str) -> str:
    """Label Studio's JSON import: one task per photo, its image served from Label Studio's local
    files (the path relative to ``root``, the document root to start Label Studio with), the
    model's prediction as a pre-annotation."""
    tasks = []
    for rank, s in enumerate(suggestions, 1):
        choices = [c for c in s.predicted.split(LABEL_SEP) if c]
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": choices}}]
        tasks.append({"data": {"image": f"/data/local-files/?d={relative_path(s.path, root.resolve())}",
                               "rank": rank, "uncertainty": round(s.uncertainty, 4)},
                      "predictions": [{"model_version": model_version, "score": round(s.probability, 4),
                                       "result": result if choices else []}]})
    return json_text(tasks)
