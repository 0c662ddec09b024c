"""``headstart evaluate``: a trained model (run folder or ``.onnx``) scored on a labelled folder, honestly.

Honest means three things. It says what it scores: ``test/`` (else ``val/``, else ``train/``) of a
folder with split folders, else every image. It leaves out, with a warning, the
images the run was trained on (its ``split.csv`` lists them): the demo's own folder
scored 98.66% with them, 95.54% without; and it counts those that chose the model
(the validation split picked the L2 strength and guarded fine-tuning), whose score
is slightly optimistic. And it
goes through the :class:`~headstart.predictor.Predictor` protocol, so an exported
model is scored exactly like the run it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._console import Console
from .data.dataset import Sample, discover
from .errors import DataError
from .predictor import Predictor
from .runfolder import RUN_FILE, SPLIT_FILE, relative_path, split_images

__all__ = ["Evaluation", "evaluation_samples", "seen_images", "run_folder_of", "evaluate_folder"]


@dataclass
class Evaluation:
    """What was scored, how, and the result."""

    data: Path
    scope: str  # in words: which split or folder was scored
    samples: list[Sample]  # labels in the model's class order
    proba: np.ndarray
    metrics: dict
    left_out: int = 0  # images of the run's training split, not scored
    validated_on: int = 0  # scored images of the run's validation split

    def prediction_rows(self, classes: Sequence[str]) -> list[dict]:
        """Rows shaped as a run's ``predictions.csv`` (its report reads the same columns)."""
        rows = []
        for sample, p in zip(self.samples, self.proba):
            decoded = not np.isnan(p).any()
            rows.append({"path": relative_path(sample.path, self.data), "split": "evaluated",
                         "class": classes[sample.label], "predicted": classes[int(p.argmax())] if decoded else "",
                         **{f"p_{c}": (float(v) if decoded else "") for c, v in zip(classes, p)}})
        return rows


def evaluation_samples(data: str | Path, classes: Sequence[str]) -> tuple[list[Sample], str]:
    """The labelled images of ``data`` to score (labels in ``classes`` order), and which they are."""
    split = discover(data, val_fraction=0.0)
    unknown = [c for c in split.classes if c not in classes]
    if unknown:
        raise DataError(f"{data} has classes the model does not know: {', '.join(unknown)}")
    if split.presplit:  # the held-out split when there is one; a train folder alone is all there is
        name = "test" if split.test else "val" if split.val else "train"
        samples, scope = split.test or split.val or split.train, f"the {name} split of {data}"
    else:
        samples, scope = split.train, f"every image of {data} (it has no split folders)"
    remap = [list(classes).index(c) for c in split.classes]
    return [Sample(s.path, remap[s.label]) for s in samples], scope


def run_folder_of(model: str | Path) -> Path | None:
    """The run folder a model comes from: itself, or the folder of an ``.onnx`` exported into it."""
    model = Path(model)
    for folder in (model, model.parent):
        if (folder / SPLIT_FILE).is_file() and (folder / RUN_FILE).is_file():
            return folder
    return None


def seen_images(run: Path, classes: Sequence[str]) -> dict[Path, str]:
    """Every image the run trained on or selected its model with (resolved path -> "train" or "val")."""
    return {path.resolve(): name for name in ("train", "val")
            for path, _ in split_images(run, name, tuple(classes))}


def evaluate_folder(predictor: Predictor, data: str | Path, seen: dict[Path, str] | None = None,
                    tta: bool = False, batch_size: int = 32, console: Console | None = None) -> Evaluation:
    """Score ``predictor`` on ``data``, leaving out the training images of ``seen`` (a
    :func:`seen_images` mapping) and counting its validation images; progress on ``console``."""
    from .evaluate import decoded_metrics

    console = console or Console(0)
    classes = predictor.classes_
    samples, scope = evaluation_samples(data, classes)
    seen = seen or {}
    trained_on = [seen.get(s.path.resolve()) == "train" for s in samples]
    left_out = sum(trained_on)
    samples = [s for s, trained in zip(samples, trained_on) if not trained]
    if not samples:
        raise DataError(f"nothing left to score in {data}: the model was trained on every one of its images "
                        "(pass --include-training-images to score them anyway)")
    validated_on = sum(seen.get(s.path.resolve()) == "val" for s in samples)
    console.info(f"scoring {len(samples)} image(s): {scope}")
    proba = np.full((len(samples), len(classes)), np.nan, dtype=np.float32)
    predictions = predictor.iter_predict([s.path for s in samples], batch_size=batch_size, tta=tta)
    for i, prediction in enumerate(console.progress(predictions, total=len(samples), desc="evaluate")):
        if prediction.probabilities is None:
            console.warn(f"cannot read {prediction.path}: {prediction.error}")
        else:
            proba[i] = prediction.probabilities
    metrics = decoded_metrics([s.label for s in samples], proba, classes)
    metrics["scope"] = scope
    metrics["left_out_trained_on"] = left_out
    metrics["validated_on"] = validated_on
    return Evaluation(Path(data), scope, samples, proba, metrics, left_out, validated_on)
