"""Explicit, validated configuration objects, saved as ``config.json`` beside every model.

A saved model is rebuilt from these alone: ``predict``, ``evaluate`` and
``serve`` never guess the backbone, the class order or the preprocessing.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import UsageError

__all__ = [
    "FORMAT_VERSION",
    "LABEL_SEP",
    "ENGINES",
    "FINE_TUNE_RATES",
    "AUTO_BACKBONE",
    "BackboneRequest",
    "Preprocessing",
    "BackboneSpec",
    "HeadSpec",
    "TrainingConfig",
    "ModelConfig",
    "library_versions",
    "from_json",
]

FORMAT_VERSION = 1

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
AUGMENTATIONS = ("none", "light", "strong")
WORKFLOWS = ("auto", "standard", "lightweight")
# What runs the backbone to features; which one "auto" means is headstart.device's to decide.
ENGINES = ("auto", "eager", "bf16", "fp16", "compile", "onnx")
CLASS_WEIGHTS = (None, "balanced")
DEVICES = ("auto", "cpu", "cuda")
# The backbone name that asks for the best of several, compared on cached features first.
AUTO_BACKBONE = "auto"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Between the classes of a multi-label image, in label files, split.csv and predictions.csv.
LABEL_SEP = ";"

# Fine-tuning's peak rate when none is asked for (training/plan.py applies it): (fewest training
# photos, rate), largest first. Measured against the textbook recipe on held-out photos
# (benchmarks/bench_vs_reference.py, 3 seeds): 1,500 satellite patches gained 1.4 points at 2e-4
# over 1e-4, but 720 texture photos lost up to 1.25: the last blocks memorise so few photos at the
# larger step (99.7% training accuracy while validation falls back), and the guard refused two
# seeds of three. More photos give a larger step more to learn before it overfits, as the textbook
# advice (fine-tune more the more data there is) says.
FINE_TUNE_RATES = ((1000, 2e-4), (0, 1e-4))


def _require(condition: bool, name: str, expected: str, got: Any) -> None:
    if not condition:
        raise UsageError(f"'{name}' must be {expected}. Got {got!r} instead.")


def require_engine(engine: str) -> None:
    """The one check of an engine name, for every setting that takes one."""
    _require(engine in ENGINES, "engine", f"one of {ENGINES}", engine)


@dataclass(frozen=True)
class BackboneRequest:
    """A backbone as asked for, before anything is built: its name, local weights, input size.

    The backbone's identity travels as this one object and is resolved once
    per run (into a :class:`BackboneSpec` and :class:`Preprocessing` by
    :func:`headstart.backbone.pretrained.create_backbone`, or into the feature
    cache's record of it without PyTorch).
    """

    name: str = "efficientnet_lite0"
    weights: str | None = None  # a local file; None: embedded or hub weights
    image_size: int | None = None  # None: the backbone's own

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", "backbone", "a non-empty name", self.name)
        _require(self.image_size is None or (isinstance(self.image_size, int) and self.image_size >= 16),
                 "image_size", "an integer >= 16", self.image_size)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the backbone's input, from its pretrained config.

    Evaluation resizes the shorter side to ``size / crop_pct`` and takes the
    centre ``size`` square, then normalises with ``mean`` and ``std``.
    """

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float

    def __post_init__(self) -> None:
        size = self.input_size
        _require(
            len(size) == 3 and size[0] == 3 and all(isinstance(s, int) and s > 0 for s in size),
            "input_size", "3 positive integers (3, height, width)", size,
        )
        _require(self.interpolation in INTERPOLATIONS, "interpolation", f"one of {INTERPOLATIONS}",
                 self.interpolation)
        for name in ("mean", "std"):
            value = getattr(self, name)
            _require(len(value) == 3 and all(isinstance(v, (int, float)) for v in value),
                     name, "3 numbers, one per RGB channel", value)
        _require(all(s > 0 for s in self.std), "std", "positive", self.std)
        _require(0 < self.crop_pct <= 1, "crop_pct", "in (0, 1]", self.crop_pct)

    @property
    def image_size(self) -> int:
        return self.input_size[1]


@dataclass(frozen=True)
class BackboneSpec:
    """Which pretrained network extracts the features, and where its weights came from."""

    name: str  # what the user asked for, e.g. "efficientnet_lite0"
    architecture: str  # the timm model that builds it, e.g. "tf_efficientnet_lite0"
    weights: str  # "embedded:<package>", "hub:<id>", "file:<path>" or "none"
    num_features: int

    def __post_init__(self) -> None:
        for name in ("name", "architecture", "weights"):
            _require(isinstance(getattr(self, name), str) and getattr(self, name) != "",
                     name, "a non-empty string", getattr(self, name))
        _require(isinstance(self.num_features, int) and self.num_features > 0,
                 "num_features", "a positive integer", self.num_features)

    def describe(self, preprocessing: Preprocessing) -> str:
        """One line for the log: which backbone, whose weights, how many features, what input."""
        return (f"backbone {self.name} ({self.weights}), {self.num_features} features, "
                f"input {preprocessing.image_size} px")


@dataclass(frozen=True)
class HeadSpec:
    """The new layers: global average pooling, dropout, one dense output layer.

    A single-label head's outputs go through a softmax (one class per image); a
    ``multi_label`` head's through a sigmoid each, and a class is predicted when
    its probability reaches its threshold (tuned on validation for the best F1;
    0.5 where there was nothing to tune on).

    What the validation images teach a single-label head after training (:mod:`headstart.trust`):
    the ``temperature`` its logits are divided by before the softmax (calibration), the
    ``conformal_scores`` that prediction sets are calibrated on, and the ``reject_threshold``
    of ``reject="auto"``. Every runtime applies the temperature; an exported graph has it built in.
    """

    num_classes: int
    dropout: float = 0.2
    pooling: Literal["avg"] = "avg"
    multi_label: bool = False
    thresholds: tuple[float, ...] = ()  # multi-label: one per class; empty means 0.5 for each
    temperature: float = 1.0  # single-label: 1 is the uncalibrated softmax
    conformal_scores: tuple[float, ...] = ()  # single-label: the validation images' scores, ascending
    reject_threshold: float | None = None  # single-label: the top probability that keeps 95% of them

    def __post_init__(self) -> None:
        smallest = 1 if self.multi_label else 2
        _require(isinstance(self.num_classes, int) and self.num_classes >= smallest,
                 "num_classes", f"an integer >= {smallest}", self.num_classes)
        _require(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        _require(self.pooling == "avg", "pooling", "'avg'", self.pooling)
        _require(not self.thresholds or (self.multi_label and len(self.thresholds) == self.num_classes
                                         and all(0 <= t <= 1 for t in self.thresholds)),
                 "thresholds", "empty, or for a multi-label head one number in [0, 1] per class", self.thresholds)
        _require(isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf, "temperature",
                 "a positive number", self.temperature)
        _require(all(0 <= s <= 1 for s in self.conformal_scores), "conformal_scores", "numbers in [0, 1]",
                 self.conformal_scores)
        _require(self.reject_threshold is None or 0 <= self.reject_threshold <= 1, "reject_threshold",
                 "None or in [0, 1]", self.reject_threshold)

    def decision_thresholds(self) -> tuple[float, ...]:
        """Each class's threshold (multi-label heads)."""
        return self.thresholds or (0.5,) * self.num_classes


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a training run: the CLI's options, with the same names."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None
    workflow: str = "auto"
    engine: str = "auto"  # the lightweight workflow's feature engine
    flip_features: bool = False  # lightweight: mirror images' features as extra training samples
    class_weight: str | None = None
    multi_label: bool | None = None  # None: when any image has several labels
    epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    label_smoothing: float = 0.1
    augment: str = "light"
    dropout: float = 0.2
    patience: int = 3
    fine_tune_epochs: int | None = None  # None: 2 on a GPU with workflow auto, else 0
    fine_tune_lr: float | None = None  # the peak, after the warm-up; None: by the training photos (training/plan.py)
    # The last 4 of EfficientNet-Lite's 8 blocks hold 98% of its parameters; leaving the first 4
    # (the high-resolution ones) frozen fine-tunes 1.6x faster on a CPU, and paid as much or more.
    unfreeze_last: int | None = 4  # None: the whole backbone
    layer_decay: float = 1.0  # fine-tuning: each block's rate, this times the next block's (1: one rate)
    blend: bool = True  # fine-tuning: also try blends of its weights with stage 1's, keep the best
    # Once the validation photos have chosen, give them back (scikit-learn's refit): the lightweight
    # head is fitted again on train + val at its L2 strength, and a kept fine-tune runs again from
    # stage 1 on train + val for the epochs it kept (benchmarks/bench_vs_reference.py measured both).
    refit: bool = True
    calibrate: bool = True  # single-label: fit a temperature on the validation images (headstart.trust)
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # None: one per core, at most 4
    # backbone="auto": compare these (NAME or NAME=WEIGHTS_FILE; empty: the embedded ones) on
    # cached features and train the best; see headstart.selection.
    candidates: tuple[str, ...] = ()
    time_budget: float | None = None  # auto: most seconds of feature extraction per 1,000 images

    def __post_init__(self) -> None:
        positive_ints = ("epochs", "batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, "an integer >= 1", value)
        for name in ("patience", "seed"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0, name, "an integer >= 0", value)
        _require(self.fine_tune_epochs is None or (isinstance(self.fine_tune_epochs, int)
                                                   and self.fine_tune_epochs >= 0),
                 "fine_tune_epochs", "an integer >= 0 (or None for automatic)", self.fine_tune_epochs)
        require_engine(self.engine)
        BackboneRequest(self.backbone, self.weights, self.image_size)  # checks the name and image size
        _require(self.class_weight in CLASS_WEIGHTS, "class_weight", "None or 'balanced'", self.class_weight)
        for name in ("flip_features", "blend", "refit", "calibrate"):
            _require(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        _require(self.multi_label in (None, True, False), "multi_label", "None, true or false", self.multi_label)
        _require(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number", self.lr)
        _require(self.fine_tune_lr is None or (isinstance(self.fine_tune_lr, (int, float)) and self.fine_tune_lr > 0),
                 "fine_tune_lr", "a positive number (or None: set by the training photos)", self.fine_tune_lr)
        _require(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing)
        _require(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        _require(0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)", self.val_fraction)
        _require(0 <= self.test_fraction < 1, "test_fraction", "in [0, 1)", self.test_fraction)
        _require(self.val_fraction + self.test_fraction < 1, "val_fraction + test_fraction",
                 "below 1", self.val_fraction + self.test_fraction)
        _require(self.augment in AUGMENTATIONS, "augment", f"one of {AUGMENTATIONS}", self.augment)
        _require(self.workflow in WORKFLOWS, "workflow", f"one of {WORKFLOWS}", self.workflow)
        _require(self.device in DEVICES or self.device.startswith("cuda:"), "device",
                 f"one of {DEVICES} or 'cuda:N'", self.device)
        _require(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        _require(self.unfreeze_last is None or (isinstance(self.unfreeze_last, int) and self.unfreeze_last >= 1),
                 "unfreeze_last", "an integer >= 1 (or None for all)", self.unfreeze_last)
        _require(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0),
                 "workers", "an integer >= 0", self.workers)
        auto = self.backbone == AUTO_BACKBONE
        # A list from the command line or JSON, kept as a tuple: the config stays hashable and frozen.
        object.__setattr__(self, "candidates", tuple(self.candidates))
        _require(all(isinstance(c, str) and c for c in self.candidates), "candidates",
                 "names (NAME or NAME=WEIGHTS_FILE)", self.candidates)
        _require(auto or not self.candidates, "candidates", "empty unless backbone is 'auto'", self.candidates)
        _require(auto or self.time_budget is None, "time_budget", "None unless backbone is 'auto'",
                 self.time_budget)
        _require(not auto or self.weights is None, "weights", "None with backbone 'auto' (give a candidate's "
                 "weights as NAME=FILE in candidates)", self.weights)
        _require(self.time_budget is None or (isinstance(self.time_budget, (int, float)) and self.time_budget > 0),
                 "time_budget", "a positive number of seconds per 1,000 images", self.time_budget)

    @property
    def backbone_request(self) -> BackboneRequest:
        return BackboneRequest(self.backbone, self.weights, self.image_size)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a trained model: saved as ``config.json``."""

    classes: tuple[str, ...]
    backbone: BackboneSpec
    head: HeadSpec
    preprocessing: Preprocessing
    training: TrainingConfig | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        smallest = 1 if self.head.multi_label else 2
        _require(len(self.classes) >= smallest and all(isinstance(c, str) and c for c in self.classes),
                 "classes", f"a list of at least {smallest} non-empty names", self.classes)
        _require(len(set(self.classes)) == len(self.classes), "classes", "unique names", self.classes)
        _require(self.head.num_classes == len(self.classes), "head.num_classes",
                 f"the number of classes ({len(self.classes)})", self.head.num_classes)
        _require(self.format_version == FORMAT_VERSION, "format_version",
                 f"{FORMAT_VERSION} (written by another headstart version?)", self.format_version)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        """Build and validate from parsed JSON; raises :class:`UsageError` naming the bad field."""
        return from_json(cls, data, "config")


def from_json(cls: type, data: Any, where: str) -> Any:
    """Recursively build dataclass ``cls`` from JSON data, checking keys and basic types;
    raises :class:`UsageError` naming the bad field (``where`` is its path)."""
    if not isinstance(data, dict):
        raise UsageError(f"'{where}' must be an object. Got {type(data).__name__} instead.")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"'{where}' has unknown field(s): {', '.join(unknown)}.")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UsageError(f"'{where}.{f.name}' is missing.")
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except UsageError as exc:
        raise UsageError(f"in '{where}': {exc}") from None
    except TypeError as exc:  # e.g. a comparison between a str and a number
        raise UsageError(f"'{where}' has a value of the wrong type ({exc}).") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Turn a JSON value into the annotated type, or raise :class:`UsageError`."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, where)
    if args and type(None) in args:  # X | None
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"'{where}' must be a list. Got {reprlib.repr(value)} instead.")
        inner = args[0]
        return tuple(_coerce(inner, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"'{where}' must be an object. Got {reprlib.repr(value)} instead.")
        if args[1] is not str:
            return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
        if not all(isinstance(v, (str, int, float)) for v in value.values()):
            raise UsageError(f"'{where}' must map names to strings. Got {reprlib.repr(value)} instead.")
        return {str(k): str(v) for k, v in value.items()}
    if origin is Literal or hint is Any:
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise UsageError(f"'{where}' must be a path. Got {reprlib.repr(value)} instead.")
        return Path(value)
    if hint is float and value is None:
        return math.nan  # JSON has no NaN: headstart writes null for a number it could not measure
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"'{where}' must be a number. Got {reprlib.repr(value)} instead.")
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise UsageError(f"'{where}' must be true or false. Got {reprlib.repr(value)} instead.")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"'{where}' must be an integer. Got {reprlib.repr(value)} instead.")
    if hint is str and not isinstance(value, str):
        raise UsageError(f"'{where}' must be a string. Got {reprlib.repr(value)} instead.")
    return value


def library_versions() -> dict[str, str]:
    """Versions recorded with every model, to explain differences between runs.

    Read from the installed packages' metadata: nothing is imported.
    """
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "headstart": __version__,
        "torch": installed("torch"),
        "timm": installed("timm"),
        "python": platform.python_version(),
    }
