"""Backbones compared on one split: features from the one pipeline, the lightweight head on each,
and what each costs.

Every candidate sees the same images, split once: its features come from
:func:`headstart.features.pipeline.extract_features` (so from the cache when an
earlier run computed them), and its head is :func:`headstart.training.lightweight.fit_head`,
the very fit ``train`` runs. Test images are left out: the choice is made on
validation, and the test split stays unseen until the chosen model is scored.

**Speed** has one definition, whatever the cache held: images per second of the
fastest of :data:`TIMINGS` warm extractions of a fixed sample (the first :data:`SAMPLE_IMAGES` training
images), decoding included, recomputed through the same engine a run would use
(:attr:`FeatureRequest.recompute`). A cached run would otherwise measure SQLite
reads, and a first run the backbone's export. How many features the survey
itself computed, and in how long, is reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._console import Console
from ..config import BackboneRequest, TrainingConfig
from ..data.dataset import DatasetSplit
from ..errors import BackboneError, HeadstartError, UsageError
from ..features.cache import CacheLayout
from ..features.pipeline import Extraction, FeatureRequest, check_backbone, extract_features
from ..features.record import recall_backbone
from ..training.lightweight import fit_head
from ..training.plan import FitContext, feature_request

__all__ = ["SAMPLE_IMAGES", "TIMINGS", "Candidate", "Entry", "Survey", "parse_candidates", "default_candidates",
           "survey_backbones", "require_validation", "choose"]

# Enough images that starting the engine and the decoding processes weighs little (about 1 s
# for Lite0 on 2 cores), few enough that timing three backbones costs seconds.
SAMPLE_IMAGES = 128
# Timings of the sample per backbone, of which the fastest counts.
TIMINGS = 3


@dataclass(frozen=True)
class Candidate:
    """A backbone to compare: a name (embedded or timm) and, optionally, a local weights file."""

    name: str
    weights: str | None = None

    @property
    def label(self) -> str:
        """How tables name it: the name, and the weights file's name when one was given."""
        return self.name if self.weights is None else f"{self.name}={Path(self.weights).name}"

    @classmethod
    def parse(cls, text: str, flag: str) -> Candidate:
        """``NAME`` or ``NAME=WEIGHTS_FILE``; ``flag`` names the option at fault in errors."""
        name, sep, weights = text.partition("=")
        if not name.strip() or (sep and not weights):
            raise UsageError(f"{flag} {text!r}: expected NAME or NAME=WEIGHTS_FILE")
        if sep and not Path(weights).is_file():
            raise BackboneError(f"{flag} {text}: weights file {weights} not found")
        # Absolute: a resumed run, or config.json, may be read from another folder.
        return cls(name.strip(), str(Path(weights).resolve()) if weights else None)


def default_candidates() -> list[Candidate]:
    """The embedded backbones: no download, so a comparison works offline."""
    from ..backbone.weights import EMBEDDED

    return [Candidate(name) for name in EMBEDDED]


def parse_candidates(texts: Sequence[str], flag: str, image_size: int | None, cache: CacheLayout
                     ) -> list[Candidate]:
    """The candidates ``texts`` name (the embedded backbones when empty), checked before any work:
    a misspelt name, a missing weights file or a candidate given twice is an error naming ``flag``."""
    candidates = [Candidate.parse(t, flag) for t in texts] or default_candidates()
    seen = set()
    for candidate in candidates:
        identity = (candidate.name, candidate.weights)
        if identity in seen:
            raise UsageError(f"{flag} {candidate.label} is given twice: each candidate once")
        seen.add(identity)
    for candidate in candidates:
        try:
            check_backbone(FeatureRequest(BackboneRequest(candidate.name, candidate.weights, image_size)), cache)
        except HeadstartError as exc:  # a usage or a backbone error: the same kind, naming the option
            raise type(exc)(f"{flag} {candidate.label}: {exc}") from None
    return candidates


@dataclass
class Entry:
    """One candidate's results."""

    candidate: Candidate
    architecture: str
    weights_source: str
    input_size: int  # px, square
    parameters: int  # the backbone's (BatchNorm statistics not counted)
    weights_mb: float  # the backbone's saved weights, as a run's model.safetensors holds them
    val_accuracy: float
    val_loss: float
    val_map: float | None  # multi-label: mean average precision, the score compared
    images_per_second: float  # the timed sample's (see the module's docstring)
    computed: int  # features this survey computed (the rest came from the cache)
    extraction_seconds: float
    head_seconds: float
    within_budget: bool = True
    chosen: bool = False

    @property
    def score(self) -> float:
        return self.val_map if self.val_map is not None else self.val_accuracy

    @property
    def seconds_per_1000(self) -> float:
        return 1000.0 / self.images_per_second if self.images_per_second > 0 else math.inf

    def row(self) -> dict:
        """The entry as a row of ``backbones.csv`` (:data:`headstart.runfolder.BACKBONES_COLUMNS`)."""
        return {"backbone": self.candidate.name, "weights": self.candidate.weights or "",
                "architecture": self.architecture, "weights_source": self.weights_source,
                "input_size": self.input_size, "parameters": self.parameters,
                "weights_mb": round(self.weights_mb, 2), "val_accuracy": self.val_accuracy,
                "val_loss": self.val_loss, "val_map": "" if self.val_map is None else self.val_map,
                "images_per_second": round(self.images_per_second, 2),
                "seconds_per_1000_images": round(self.seconds_per_1000, 2), "features_computed": self.computed,
                "extraction_seconds": round(self.extraction_seconds, 2),
                "head_seconds": round(self.head_seconds, 3), "within_budget": self.within_budget,
                "chosen": self.chosen}


@dataclass
class Survey:
    """Every candidate's entry, on one split, and which one is best and why."""

    entries: list[Entry]
    root: Path
    classes: int
    sizes: str  # the split's, as "N train / M val / 0 test images"
    sample: int  # images timed per candidate
    time_budget: float | None = None
    reason: str = ""
    val_images: int = 0  # what the scores were measured on: how far apart they must be to differ

    @property
    def chosen(self) -> Entry | None:
        return next((e for e in self.entries if e.chosen), None)

    @property
    def multi_label(self) -> bool:
        return any(e.val_map is not None for e in self.entries)

    def rows(self) -> list[dict]:
        return [e.row() for e in self.entries]


def survey_backbones(split: DatasetSplit, candidates: Sequence[Candidate], config: TrainingConfig,
                     cache: CacheLayout, console: Console) -> Survey:
    """Fit the lightweight head on each candidate's features of ``split``'s training images, score it
    on its validation images, time a sample, and mark the best within ``config.time_budget`` (seconds
    of extraction per 1,000 images). ``config`` gives the head's settings (seed, class weights, engine...)."""
    require_validation(split)
    split = dataclasses.replace(split, test=[])  # chosen on validation: the test images stay unseen
    paths = [s.path for s in split.samples()]
    sample = [s.path for s in split.train[:SAMPLE_IMAGES]]
    survey = Survey([], split.root, len(split.classes), split.sizes(), len(sample), config.time_budget,
                    val_images=len(split.val))
    for number, candidate in enumerate(candidates, start=1):
        console.info(f"backbone {number} of {len(candidates)}: {candidate.label}")
        # Scored on validation alone: a head refitted on it would be thrown away.
        settings = dataclasses.replace(config, backbone=candidate.name, weights=candidate.weights,
                                       candidates=(), time_budget=None, flip_features=False, refit=False)
        request = feature_request(settings)
        extraction = extract_features(paths, request, cache, console)
        computed, seconds = extraction.features.computed, extraction.features.seconds
        head = fit_head(extraction, split, settings, FitContext(cache, console), fine_tuning=False)
        speed = _images_per_second(sample, request, cache)
        stats = head.linear.val
        parameters, megabytes = _size(extraction, request, cache)
        survey.entries.append(Entry(candidate, extraction.spec.architecture, extraction.spec.weights,
                                    extraction.preprocessing.image_size, parameters, megabytes, stats.accuracy,
                                    stats.loss, stats.mean_ap, speed, computed, seconds, head.search.seconds))
        console.info(f"  {candidate.label}: val accuracy {stats.accuracy:.2%}, {speed:.1f} img/s, "
                     f"{parameters / 1e6:.1f} M parameters")
    choose(survey)
    return survey


def require_validation(split: DatasetSplit) -> None:
    """Candidates are scored on validation images: refuse a split without any."""
    if not split.val:
        raise UsageError("comparing backbones needs validation images: set --val-fraction above 0 "
                         "or add a val/ folder")


def choose(survey: Survey) -> Entry:
    """Mark the best entry within the survey's time budget: the highest validation score (mAP for
    multi-label, else accuracy), then the lowest validation loss, then the fastest. Sets ``reason``."""
    budget = survey.time_budget
    for entry in survey.entries:
        entry.within_budget = budget is None or entry.seconds_per_1000 <= budget
        entry.chosen = False
    fitting = [e for e in survey.entries if e.within_budget]
    if not fitting:
        fastest = min(survey.entries, key=lambda e: e.seconds_per_1000)
        raise UsageError(f"no backbone fits --time-budget {budget:g} s per 1,000 images: the fastest, "
                         f"{fastest.candidate.label}, takes {fastest.seconds_per_1000:.1f} s; raise the budget")
    top = max(fitting, key=lambda e: (e.score, -e.val_loss, e.images_per_second))
    noise = _noise(top, survey.val_images)
    # Scores closer than the noise of so few validation images do not tell backbones apart: the fastest wins.
    best = max((e for e in fitting if top.score - e.score <= noise),
               key=lambda e: (e.images_per_second, e.score)) if noise > 0 else top
    best.chosen = True
    metric = "mAP" if best.val_map is not None else "accuracy"
    if best is top:
        reason = (f"{best.candidate.label}: the best validation {metric} ({_score(best)}, val loss "
                  f"{best.val_loss:.4f}) of {len(fitting)} backbone(s)")
    else:
        reason = (f"{best.candidate.label}: the fastest ({best.images_per_second:.1f} img/s) of the backbones within "
                  f"the noise of the best validation {metric} ({_score(best)} against {top.candidate.label}'s "
                  f"{_score(top)}, under the {noise:.1%} that {survey.val_images} images cannot tell apart)")
    if budget is not None:
        reason += f" within --time-budget {budget:g} s per 1,000 images (it takes {best.seconds_per_1000:.1f} s)"
        over = [e for e in survey.entries if not e.within_budget and e.score > best.score]
        reason += "".join(f"; {e.candidate.label} scores {_score(e)} but takes {e.seconds_per_1000:.1f} s"
                          for e in over)
    survey.reason = reason
    return best


def _noise(top: Entry, images: int) -> float:
    """How much lower an accuracy can be than ``top``'s and not differ, on ``images`` validation
    images (:func:`headstart.metrics.difference_noise`); 0 for mAP."""
    from ..metrics import difference_noise  # with scikit-learn: not loaded to open an .onnx model

    return 0.0 if top.val_map is not None else difference_noise(top.score, images)


def _score(entry: Entry) -> str:
    return f"{entry.val_map:.4f}" if entry.val_map is not None else f"{entry.val_accuracy:.2%}"


def _images_per_second(sample: list[Path], request: FeatureRequest, cache: CacheLayout) -> float:
    """The speed of a warm extraction of ``sample``, recomputed by the engine a run would use: the
    fastest of :data:`TIMINGS`. Load from other processes only ever slows a timing, so the fastest
    is the least disturbed (timeit's advice), and a moment's load cannot rank a backbone."""
    speeds = []
    for _ in range(TIMINGS):
        features = extract_features(sample, dataclasses.replace(request, recompute=True), cache, Console(-1)).features
        features.close()
        speeds.append(features.computed / features.seconds if features.seconds > 0 else math.inf)
    return max(speeds)


def _size(extraction: Extraction, request: FeatureRequest, cache: CacheLayout) -> tuple[int, float]:
    """The backbone's parameters and the MB of its saved weights: from the cache's record of it (the
    tensors a run's model file holds), else from the network PyTorch built (weights from the hub)."""
    record = extraction.record or recall_backbone(cache, request.backbone)
    if record is not None:
        from safetensors import safe_open

        with safe_open(str(record.tensors), "numpy") as tensors:
            shapes = {key: tensors.get_slice(key).get_shape() for key in tensors.keys()}
        return (sum(math.prod(shape) for key, shape in shapes.items() if not _statistic(key)),
                record.tensors.stat().st_size / 1e6)
    module = extraction.backbone.module
    state = module.state_dict()
    return (sum(p.numel() for p in module.parameters()),
            sum(t.numel() * t.element_size() for t in state.values()) / 1e6)


def _statistic(key: str) -> bool:
    """A BatchNorm running statistic: saved with the weights, but not a parameter."""
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
