"""``ImageClassifier``: the whole method behind scikit-learn's estimator API.

>>> clf = ImageClassifier(backbone="efficientnet_lite0", fine_tune_epochs=1).fit("data/")
>>> clf.predict(["cat.jpg"])
>>> clf.save("runs/pets")
>>> clf = headstart.load("runs/pets")

The estimator stores its parameters and delegates: fitting is
:func:`headstart.training.fitting.fit`'s, the run folder's layout is
:mod:`headstart.runfolder`'s. A saved model is read from safetensors and
JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import distributed
from ._console import Console
from ._io import atomic_files, json_text, read_json
from .config import HeadSpec, ModelConfig, TrainingConfig, library_versions
from .data.dataset import DatasetSplit, Sample, Skipped, discover
from .errors import BackboneError, DataError, ModelFileError, NotFittedError, UsageError
from .features.cache import CacheLayout
from .features.pipeline import check_backbone
from .predictor import Prediction, ProbabilityPredictor
from .runfolder import (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE, RUN_FILE,
                        SKIPPED_FILE, SPLIT_FILE, RunRequest, history_csv, predictions_csv, prepare_output_dir,
                        run_json_text, skipped_csv, split_csv)
from .training import fitting
from .training.plan import FitContext, feature_request
from .training.results import Fitted, without_failed

# PyTorch, timm and the network are imported where they are used: a lightweight run
# whose backbone the feature cache knows fits its head and writes its model without
# them (about 5 s of imports on a 2-core machine).
if TYPE_CHECKING:
    import torch

    from .backbone.head import ClassifierNet
    from .onnx.runtime import OnnxClassifier

__all__ = ["ImageClassifier", "Prediction", "load", "open_model"]

_TRAINING_PARAMS = tuple(f.name for f in dataclasses.fields(TrainingConfig))


class ImageClassifier(ProbabilityPredictor):
    """A pretrained backbone, frozen, with a new head trained on your images.

    Parameters mirror the ``headstart train`` options (``--fine-tune-epochs`` is
    ``fine_tune_epochs``...); see :class:`headstart.config.TrainingConfig` for
    their meaning. ``verbose``: 0 silent, 1 progress and one line per epoch.

    Attributes set by :meth:`fit` (or :func:`load`) end in ``_``:
    ``classes_``, ``config_``, ``net_``, ``metrics_``, ``history_``,
    ``split_``, ``skipped_`` and ``predictions_`` (the final model's
    probabilities for the val and test images, in ``split_`` order). ``cache_dir`` is where the lightweight workflow
    keeps features (default: the user's cache folder); it is not saved with the model.
    """

    # Every parameter is a keyword of __init__, stored as given (scikit-learn's estimator contract).
    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = None,
                 image_size: int | None = None, workflow: str = "auto", engine: str = "auto",
                 flip_features: bool = False, class_weight: str | None = None, epochs: int = 5,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 32,
                 label_smoothing: float = 0.0, augment: str = "light", dropout: float = 0.2,
                 patience: int = 3, fine_tune_epochs: int | None = None, fine_tune_lr: float = 1e-5,
                 unfreeze_last: int | None = None, val_fraction: float = 0.2, test_fraction: float = 0.0,
                 seed: int = 0, device: str = "auto", precision: str = "auto", workers: int | None = None,
                 cache_dir: str | Path | None = None, verbose: int = 1):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.workflow = workflow
        self.engine = engine
        self.flip_features = flip_features
        self.class_weight = class_weight
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.dropout = dropout
        self.patience = patience
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_lr = fine_tune_lr
        self.unfreeze_last = unfreeze_last
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.device = device
        self.precision = precision
        self.workers = workers
        self.cache_dir = cache_dir
        self.verbose = verbose

    # Set by fit and load: the network, or after a fit without PyTorch, its tensors (NumPy).
    _net: ClassifierNet | None = None
    _state: dict[str, np.ndarray] | None = None

    # -- scikit-learn's parameter protocol -------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in (*_TRAINING_PARAMS, "cache_dir", "verbose")}

    def set_params(self, **params) -> ImageClassifier:
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise UsageError(f"ImageClassifier has no parameter {name!r}. "
                                 f"Expected one of: {', '.join(valid)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = ImageClassifier().get_params()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return f"ImageClassifier({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def training_config(self) -> TrainingConfig:
        """The validated settings (raises :class:`UsageError` naming a bad one)."""
        return TrainingConfig(**{name: getattr(self, name) for name in _TRAINING_PARAMS})

    # -- training ---------------------------------------------------------------------------
    def fit(self, data: str | Path | DatasetSplit, *, on_epoch: Callable[[dict], None] | None = None,
            console: Console | None = None, checkpoint_dir: str | Path | None = None) -> ImageClassifier:
        """Train on an image folder (one subfolder per class), or on a prepared :class:`DatasetSplit`.

        ``on_epoch`` is called with each epoch's history row. ``console``
        receives progress and messages (default: stderr, at ``verbose``). With
        ``checkpoint_dir``, every completed epoch is checkpointed there, and a
        checkpoint found there is resumed from: an interrupted run, rerun the
        same way, finishes as if it had never stopped.
        """
        started = time.perf_counter()
        config = self.training_config()
        console = console or Console(self.verbose)
        cache = CacheLayout(self.cache_dir)
        check_backbone(feature_request(config), cache)  # a misspelt name fails before any work
        clock = time.perf_counter()
        split = _agreed_split(data if isinstance(data, DatasetSplit) else discover(
            data, config.val_fraction, config.test_fraction, config.seed))
        _report_data(split, console)
        timings = {"data": time.perf_counter() - clock}
        fitted = fitting.fit(split, config, FitContext(cache, console, on_epoch,
                                               Path(checkpoint_dir) if checkpoint_dir is not None else None))
        timings.update(fitted.timings)
        result = fitted.result
        result.seconds = timings["stage1"] + timings.get("fine_tune", 0.0)

        self._net, self._state = fitted.net, fitted.state
        self.classes_ = split.classes
        self.config_ = ModelConfig(classes=split.classes, backbone=fitted.spec,
                                   head=HeadSpec(num_classes=len(split.classes), dropout=config.dropout),
                                   preprocessing=fitted.preprocessing, training=config, versions=library_versions())
        self.history_ = result.history
        split, head_proba = without_failed(split, result.failed, fitted.head_proba)
        self.split_ = split
        self.skipped_ = split.skipped + [Skipped(p, r) for p, r in result.failed.items()]
        clock = time.perf_counter()
        self.metrics_ = self._final_metrics(split, fitted, head_proba)
        timings["evaluation"] = time.perf_counter() - clock
        self.metrics_["timings"] = {**timings, "total": time.perf_counter() - started}
        return self

    def _final_metrics(self, split: DatasetSplit, fitted: Fitted, head_proba: dict[str, np.ndarray]) -> dict:
        """The run's metrics; sets ``predictions_``, the final model's probabilities per split."""
        result = fitted.result
        metrics: dict = {
            "workflow": fitted.workflow,
            "train_seconds": result.seconds,
            "counts": split.counts(),
            "skipped": len(self.skipped_),
            "stage1": result.stage1.summary() if result.stage1 else None,
            "fine_tune": None,
            **fitted.head_info,
        }
        if result.fine_tune is not None:
            metrics["fine_tune"] = {**result.fine_tune.summary(), "kept": result.fine_tune_kept}
        stage1_only = result.fine_tune is None or not result.fine_tune_kept
        self.predictions_ = {}
        for name, samples in (("val", split.val), ("test", split.test)):
            if not samples:
                continue
            # The lightweight head's probabilities come straight from the cached features,
            # unless fine-tuning changed the backbone they came from.
            proba = head_proba[name] if stage1_only and name in head_proba else self._sharded_proba(samples)
            self.predictions_[name] = proba
            metrics[name] = self._metrics_of(samples, proba)
        return metrics

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "config_"):
            raise NotFittedError("this ImageClassifier is not fitted yet: call fit() or headstart.load() first")

    @property
    def net_(self) -> ClassifierNet:
        """The network. After a fit without PyTorch, it is built from the fitted
        tensors on first use (that is when PyTorch and timm are imported)."""
        self._check_fitted()
        if self._net is None:
            import torch

            from .backbone.saved import build_network

            net = build_network(self.config_)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self._state.items()})
            self._net, self._state = net.eval(), None
        return self._net

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        """Predictions for ``paths`` in order, streamed batch by batch (constant memory).

        With ``tta``, the probabilities of each image and of its mirror image are
        averaged (test-time augmentation: one more forward pass per image).
        """
        from .data.loader import ImageDataset, make_loader

        paths = [Path(p) for p in paths]
        runtime = self._inference()
        if not paths:
            return
        dataset = ImageDataset.for_eval(paths, None, self.config_.preprocessing)
        loader = make_loader(dataset, batch_size or self.batch_size, workers=self.workers,
                             gpu=runtime[1].type == "cuda")
        for batch in loader:
            probs = {}
            if batch.indices:
                probs = dict(zip(batch.indices, _probabilities(runtime, batch.images, tta)))
            errors = dict(batch.failed)
            for index in sorted([*probs, *errors]):
                yield Prediction(paths[index], probs.get(index), errors.get(index))

    def _inference(self) -> tuple[ClassifierNet, torch.device, torch.dtype]:
        """The network on its device in eval mode, with the device and the compute dtype."""
        from .device import prepare, resolve_device, resolve_precision

        self._check_fitted()
        device = resolve_device(self.device)
        return prepare(self.net_, device).eval(), device, resolve_precision(self.precision, device)

    @property
    def preprocessing(self):
        """How images become the network's input (:class:`headstart.config.Preprocessing`)."""
        self._check_fitted()
        return self.config_.preprocessing

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N, 3, H, W) already resized and cropped."""
        import torch

        return _probabilities(self._inference(), torch.from_numpy(np.ascontiguousarray(batch)))

    def evaluate_samples(self, samples: Sequence[Sample], tta: bool = False) -> dict:
        """Metrics (:func:`headstart.evaluate.classification_metrics`) on labelled samples."""
        return self._metrics_of(samples, self._sharded_proba(samples, tta))

    def _sharded_proba(self, samples: Sequence[Sample], tta: bool = False) -> np.ndarray:
        """``predict_proba``, each rank of a data-parallel run predicting its share in whole batches."""
        return distributed.map_shards(lambda paths: self.predict_proba(paths, tta=tta), [s.path for s in samples],
                                      align=self.batch_size)

    def _metrics_of(self, samples: Sequence[Sample], proba: np.ndarray) -> dict:
        from .evaluate import classification_metrics  # scikit-learn: not needed to open an .onnx model

        labels = np.array([s.label for s in samples])
        ok = ~np.isnan(proba).any(axis=1)
        metrics = classification_metrics(labels[ok], proba[ok], self.classes_)
        metrics["undecodable"] = int((~ok).sum())
        return metrics

    def evaluate(self, data: str | Path, tta: bool = False) -> dict:
        """Metrics on a labelled folder; with split folders, on its test (else val) split."""
        self._check_fitted()
        split = discover(data, val_fraction=0.0)
        unknown = [c for c in split.classes if c not in self.classes_]
        if unknown:
            raise DataError(f"{data} has classes the model does not know: {', '.join(unknown)}")
        samples = (split.test or split.val) if split.presplit else split.train
        remap = [self.classes_.index(c) for c in split.classes]
        return self.evaluate_samples([Sample(s.path, remap[s.label]) for s in samples], tta=tta)

    # -- persistence ------------------------------------------------------------------------
    def run_request(self, data: str | Path) -> RunRequest:
        """What ``run.json`` keeps: the data folder and every setting, enough to rerun or resume."""
        return RunRequest(Path(data).resolve(), {k: v for k, v in self.get_params().items() if k != "verbose"})

    def save(self, directory: str | Path, overwrite: bool = False, report: bool = True) -> Path:
        """Write the model folder; refuses a non-empty folder unless ``overwrite``.

        A model trained in this session also gets its ``report.html`` (with ``report``).
        """
        self._check_fitted()
        directory = prepare_output_dir(directory, overwrite)
        if self._net is None:  # fitted from cached features: the tensors are NumPy arrays
            from safetensors.numpy import save_file

            state = self._state
        else:
            from safetensors.torch import save_file

            from .backbone.saved import saved_tensors

            state = saved_tensors(self._net)
        texts = self._run_texts()
        # All or nothing: a full disk midway leaves the previous model as it was.
        with atomic_files(directory) as new:
            save_file(state, str(new(MODEL_FILE)), metadata={"format": "pt", "headstart": "model"})
            for name, text in texts.items():
                new(name).write_text(text, encoding="utf-8")
        if report and METRICS_FILE in texts:
            from .report.page import write_report

            write_report(directory)
        return directory

    def _run_texts(self) -> dict[str, str]:
        """The run folder's text files this model has: its config, and what fitting produced."""
        texts = {CONFIG_FILE: json_text(self.config_.to_dict())}
        if getattr(self, "metrics_", None) is not None:
            texts[METRICS_FILE] = json_text(self.metrics_)
        if getattr(self, "history_", None):
            texts[HISTORY_FILE] = history_csv(self.history_)
        split = getattr(self, "split_", None)
        if split is not None:
            texts[SPLIT_FILE] = split_csv(split, self.classes_)
            texts[RUN_FILE] = run_json_text(self.run_request(split.root))
            if getattr(self, "predictions_", None):
                texts[PREDICTIONS_FILE] = predictions_csv(self.predictions_, split, self.classes_)
        if hasattr(self, "skipped_"):
            texts[SKIPPED_FILE] = skipped_csv(self.skipped_)
        return texts


def _probabilities(inference: tuple[ClassifierNet, torch.device, torch.dtype], images: torch.Tensor,
                   tta: bool = False) -> np.ndarray:
    """Softmax of the network on a batch; with ``tta``, averaged with the mirror images'."""
    import torch

    from .device import autocast, to_device

    net, device, dtype = inference
    images = to_device(images, device)
    with torch.inference_mode(), autocast(device, dtype):
        proba = torch.softmax(net(images).float(), 1)
        if tta:
            proba = (proba + torch.softmax(net(images.flip(-1)).float(), 1)) / 2
    return proba.cpu().numpy()


def open_model(path: str | Path, verbose: int = 0) -> ImageClassifier | OnnxClassifier:
    """An exported ``.onnx`` file as :class:`OnnxClassifier`; a run folder as :class:`ImageClassifier`.

    Only the run folder imports PyTorch.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        from .onnx.runtime import OnnxClassifier

        return OnnxClassifier(path)
    return load(path, verbose=verbose)


def load(directory: str | Path, device: str = "auto", verbose: int = 1) -> ImageClassifier:
    """Load a saved model folder. Reads safetensors and JSON only: nothing is unpickled."""
    from .backbone.saved import build_network, load_tensors

    directory = Path(directory)
    config_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
    for path in (config_path, model_path):
        if not path.is_file():
            raise ModelFileError(f"not a headstart model folder: {path} is missing")
    raw = read_json(config_path)
    try:
        config = ModelConfig.from_dict(raw)
    except UsageError as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None
    try:
        net = build_network(config)
    except BackboneError as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None
    load_tensors(net, model_path)
    params = {name: getattr(config.training, name) for name in _TRAINING_PARAMS} if config.training else {}
    params.update(device=device, verbose=verbose, workers=None)
    clf = ImageClassifier(**params)
    clf._net = net.eval()
    clf.classes_ = config.classes
    clf.config_ = config
    metrics_path = directory / METRICS_FILE
    clf.metrics_ = read_json(metrics_path) if metrics_path.is_file() else None
    return clf


def _agreed_split(split: DatasetSplit) -> DatasetSplit:
    """Rank 0's split on every rank of a data-parallel run, checked against what each rank sees."""
    chosen = distributed.broadcast(split)
    if len(chosen.samples()) != len(split.samples()):
        raise DataError(f"{split.root} holds {len(split.samples())} usable images here but "
                        f"{len(chosen.samples())} on rank 0: every machine needs the same data at the same path")
    return chosen


def _report_data(split: DatasetSplit, console: Console) -> None:
    how = "split folders" if split.presplit else "a stratified split"
    console.info(f"{len(split.classes)} classes ({', '.join(split.classes[:8])}"
                 f"{', ...' if len(split.classes) > 8 else ''}) from {split.root}, using {how}")
    for skipped in split.skipped:
        console.warn(f"skipping {skipped.path}: {skipped.reason}")
