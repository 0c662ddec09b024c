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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dataclasses
import math

import numpy as np

from . import distributed
from ._console import Console
from .data.dataset import LABEL_SEP, DatasetSplit, Sample, Skipped, sample_targets
from .data.identical import copies_of
from .data.labels import evaluation_split
from .config import ModelConfig
from .errors import DataError
from .predictor import Predictor
from .record import (CalibrationRecord, FineTuneRecord, RunMetrics, SplitMetrics, StageRecord, label_root, read_metrics,
                     split_images)
from .runfolder import RUN_FILE, SPLIT_FILE, prediction_row, relative_path
from .trust.calibration import MIN_IMAGES, apply_temperature, fit_temperature
from .trust.conformal import conformity_scores
from .trust.reject import keeping_threshold, known_scores

if TYPE_CHECKING:
    from .training.results import Fitted

__all__ = ["Evaluation", "evaluation_samples", "seen_images", "run_folder_of", "evaluate_folder", "sample_metrics",
           "fit_metrics", "calibrate_predictions", "tuned_config"]


@dataclass
class Evaluation:
    """What was scored, how, and the result."""

    data: Path
    scope: str  # in words: which split or folder was scored
    samples: list[Sample]  # labels in the model's class order
    proba: np.ndarray
    metrics: SplitMetrics
    skipped: list[Skipped] = field(default_factory=list)  # label rows that could not be used
    left_out: int = 0  # images of the run's training split, not scored
    validated_on: int = 0  # scored images of the run's validation split

    def to_dict(self) -> dict:
        """What ``headstart evaluate --output`` writes: the metrics, and what was scored and left out."""
        return {**self.metrics.to_dict(), "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
                "scope": self.scope, "left_out_trained_on": self.left_out, "validated_on": self.validated_on}

    def prediction_rows(self, classes: Sequence[str]) -> list[dict]:
        """Rows shaped as a run's ``predictions.csv`` (its report reads the same columns)."""
        return [prediction_row(relative_path(s.path, self.data), "evaluated", classes[s.label], p, classes)
                for s, p in zip(self.samples, self.proba)]


def evaluation_samples(data: str | Path | None, classes: Sequence[str], multi_label: bool = False,
                       labels: tuple[str | Path | None, str] = (None, LABEL_SEP)
                       ) -> tuple[list[Sample], str, list[Skipped]]:
    """The labelled images of ``data``, or of a label file (``labels``: its path and label
    separator), to score (labels in ``classes`` order); in words, which they are; and the label
    rows that could not be used."""
    label_file, separator = labels
    split = evaluation_split(data, classes, multi_label, label_file, separator)
    source = label_file or data
    if split.presplit:  # the held-out split when there is one; a train split alone is all there is
        name = "test" if split.test else "val" if split.val else "train"
        samples, scope = split.test or split.val or split.train, f"the {name} split of {source}"
    else:
        why = "it gives no split" if label_file else "it has no split folders"
        samples, scope = split.train, f"every image of {source} ({why})"
    return samples, scope, split.skipped


def run_folder_of(model: str | Path) -> Path | None:
    """The run folder a model comes from: itself, or the folder of an ``.onnx`` exported into it."""
    model = Path(model)
    for folder in (model, model.parent):
        if (folder / SPLIT_FILE).is_file() and (folder / RUN_FILE).is_file():
            return folder
    return None


def seen_images(run: Path, classes: Sequence[str]) -> dict[Path, str]:
    """Every image the run trained on or selected its model with (resolved path -> "train" or "val");
    after a refit, the model trained on its validation images too: they count as "train"."""
    refitted = read_metrics(run).trained_on_val()
    return {path.resolve(): "train" if refitted else name for name in ("train", "val")
            for path, _ in split_images(run, name, tuple(classes))}


def evaluate_folder(predictor: Predictor, data: str | Path | None, seen: dict[Path, str] | None = None,
                    tta: bool = False, batch_size: int = 32, console: Console | None = None,
                    labels: tuple[str | Path | None, str] = (None, LABEL_SEP)) -> Evaluation:
    """Score ``predictor`` on ``data`` (or the label file of ``labels``: its path and separator),
    leaving out the training images of ``seen`` (a :func:`seen_images` mapping) and counting its
    validation images; progress on ``console``."""
    console = console or Console(0)
    classes = predictor.classes_
    data = label_root(data, labels[0])
    samples, scope, skipped = evaluation_samples(data, classes, predictor.multi_label_, labels)
    seen = seen or {}
    # A byte-identical copy of a training photo under another name is as seen as the photo itself.
    copied = copies_of([s.path.resolve() for s in samples], [p for p, name in seen.items() if name == "train"])
    trained_on = [seen.get(s.path.resolve()) == "train" or s.path.resolve() in copied for s in samples]
    left_out = sum(trained_on)
    samples = [s for s, trained in zip(samples, trained_on) if not trained]
    if not samples:
        raise DataError(f"nothing left to score in {labels[0] or data}: the model was trained on every one of "
                        "its images (pass --include-training-images to score them anyway)")
    validated_on = sum(seen.get(s.path.resolve()) == "val" for s in samples)
    console.info(f"scoring {len(samples)} image(s): {scope}")
    def probabilities(paths: Sequence[Path]) -> np.ndarray:
        proba = np.full((len(paths), len(classes)), np.nan, dtype=np.float32)
        predictions = predictor.iter_predict(paths, batch_size=batch_size, tta=tta)
        for i, prediction in enumerate(console.progress(predictions, total=len(paths), desc="evaluate")):
            if prediction.probabilities is None:
                console.warn(f"cannot read {prediction.path}: {prediction.error}")
            else:
                proba[i] = prediction.probabilities
        return proba

    # Each rank of a data-parallel run predicts its share in whole batches; all get every row.
    proba = distributed.map_shards(probabilities, [s.path for s in samples], align=batch_size)
    return Evaluation(data, scope, samples, proba, sample_metrics(predictor, samples, proba), skipped, left_out,
                      validated_on)


def sample_metrics(predictor: Predictor, samples: Sequence[Sample], proba: np.ndarray) -> SplitMetrics:
    """The metrics of ``predictor``'s probabilities ``proba`` on the labelled ``samples``: a single-label
    model's, or a multi-label model's at its thresholds; NaN rows count as undecodable."""
    from .metrics import (
        decoded_metrics,  # scikit-learn: not needed to open an .onnx model
    )

    multi = predictor.multi_label_
    return SplitMetrics.from_dict(decoded_metrics(sample_targets(samples, len(predictor.classes_), multi), proba,
                                                  predictor.classes_, predictor.thresholds_ if multi else None))


def fit_metrics(model: Predictor, split: DatasetSplit, fitted: Fitted, held_out_proba: dict[str, np.ndarray],
                predict: Callable[[Sequence[Sample]], np.ndarray], calibrate: bool = False
                ) -> tuple[RunMetrics, dict[str, np.ndarray]]:
    """A run's metrics (workflow, counts, each stage, val and test metrics) and the final model's
    probabilities for the val and test images, as ``model`` was just fitted on ``split``;
    ``held_out_proba`` holds the rows that stand for the final model's own (the lightweight head's
    from cached features; after a refit, the guarded model's validation rows), and
    ``predict(samples)`` gives the final model's probabilities for the others.
    With ``calibrate`` (a single-label model), the probabilities and metrics are those of the model
    calibrated on its validation images (:func:`calibrate_predictions`)."""
    result = fitted.result
    fine_tune = None
    if result.fine_tune is not None:
        fine_tune = FineTuneRecord(**result.fine_tune.summary(), kept=bool(result.fine_tune_kept),
                                   reason=result.fine_tune_reason, likely_cause=result.fine_tune_cause,
                                   share=result.fine_tune_share, refit_epochs=result.refit_epochs)
    held_out = {name: samples for name, samples in (("val", split.val), ("test", split.test)) if samples}
    predictions = {name: held_out_proba[name] if name in held_out_proba else predict(samples)
                   for name, samples in held_out.items()}
    calibration = None
    if calibrate and not model.multi_label_:
        calibration, predictions = calibrate_predictions(predictions, split)
    scores = {name: sample_metrics(model, samples, predictions[name]) for name, samples in held_out.items()}
    metrics = RunMetrics(workflow=fitted.workflow, train_seconds=result.seconds, counts=split.counts(),
                         skipped=len(split.skipped) + len(result.failed),
                         stage1=StageRecord(**result.stage1.summary()) if result.stage1 else None,
                         fine_tune=fine_tune, features=fitted.features, head=fitted.head, calibration=calibration,
                         **scores)
    return metrics, predictions


# What fit keeps of its validation images' lesson about its own probabilities: the temperature
# (headstart.trust.calibration), then from the calibrated probabilities the conformal scores
# (headstart.trust.conformal) and the auto rejection threshold (headstart.trust.reject), all saved in
# the head's configuration. Multi-label models are left as they are: each class's threshold is
# already tuned on validation, and a set of classes per image is what they predict.
_SCALE = 1e6  # the saved scores' precision: rounded up (and the threshold down), the guarantees hold


def calibrate_predictions(predictions: dict[str, np.ndarray], split: DatasetSplit
                          ) -> tuple[CalibrationRecord | None, dict[str, np.ndarray]]:
    """The temperature fitted on ``predictions["val"]`` (the final model's validation probabilities)
    and every split's probabilities with it applied; (None, ``predictions``) unchanged when there
    are too few validation images to fit on."""
    from .metrics import expected_calibration_error  # scikit-learn: not needed to open an .onnx model

    labels = {name: split.targets(samples) for name, samples in split.splits().items()}
    val = predictions.get("val")
    if val is None or (~np.isnan(val).any(axis=1)).sum() < MIN_IMAGES:
        return None, predictions
    temperature = fit_temperature(val, labels["val"])
    calibrated = {name: apply_temperature(proba, temperature) for name, proba in predictions.items()}
    measured = "test" if "test" in predictions else "val"

    def ece(proba: np.ndarray) -> float:
        readable = ~np.isnan(proba).any(axis=1)
        return expected_calibration_error(labels[measured][readable], proba[readable])

    return CalibrationRecord(temperature, ece(predictions[measured]), ece(calibrated[measured]), measured,
                             int((~np.isnan(val).any(axis=1)).sum())), calibrated


def tuned_config(config: ModelConfig, calibration: CalibrationRecord | None, split: DatasetSplit,
                 predictions: dict[str, np.ndarray]) -> ModelConfig:
    """``config`` with its head's temperature, conformal scores and ``auto`` rejection threshold,
    from the final (calibrated) model's validation probabilities in ``predictions``."""
    val = predictions.get("val")
    if config.head.multi_label or val is None:
        return config
    scores = conformity_scores(val, split.targets(split.val))
    threshold = keeping_threshold(known_scores(val))
    head = dataclasses.replace(config.head, temperature=calibration.temperature if calibration else 1.0,
                               conformal_scores=tuple(math.ceil(s * _SCALE) / _SCALE for s in scores),
                               reject_threshold=None if threshold is None else math.floor(threshold * _SCALE) / _SCALE)
    return dataclasses.replace(config, head=head)
