"""``ImageClassifier``: the whole method behind scikit-learn's estimator API.

>>> clf = ImageClassifier(backbone="efficientnet_lite0", fine_tune_epochs=1).fit("data/")
>>> clf.predict(["cat.jpg"])
>>> clf = ImageClassifier().fit(["a.jpg", "b.jpg", ...], [["beach", "dog"], ["dog"], ...])  # multi-label
>>> clf.save("runs/pets")
>>> clf = headstart.load("runs/pets")

The estimator stores its parameters and delegates: fitting is
:func:`headstart.training.fitting.fit`'s, the run folder's layout is
:mod:`headstart.runfolder`'s. A saved model is read from safetensors and
JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import distributed
from ._console import Console
from ._io import TEXT_ERRORS, atomic_files, file_problem
from .callbacks import Callback, CallbackList
from .config import AUTO_BACKBONE, LABEL_SEP, HeadSpec, ModelConfig, TrainingConfig, library_versions
from .data.dataset import Sample, Skipped
from .data.labels import to_split
from .embed import Suggestion, embed_images, suggest_images
from .errors import BackboneError, ModelFileError, NotFittedError, UsageError
from .export import format_for_file
from .features.cache import CacheLayout
from .features.pipeline import check_backbone
from .predictor import Prediction, Predictor, ProbabilityPredictor, expand_images
from .record import (RunMetrics, RunRecord, RunRequest, read_config, read_history, read_metrics, read_request,
                     run_texts)
from .runfolder import CONFIG_FILE, METRICS_FILE, MODEL_FILE, RUN_FILE, check_finished, prepare_output_dir
from .evaluate import fit_metrics, tuned_config
from .selection import select_backbone
from .training import fitting
from .training.plan import FitContext, feature_request, fine_tune_rate
from .training.results import without_failed

# PyTorch, timm and the network are imported where they are used: a lightweight run
# whose backbone the feature cache knows fits its head and writes its model without
# them (about 5 s of imports on a 2-core machine).
if TYPE_CHECKING:
    import torch

    from .backbone.head import ClassifierNet

__all__ = ["ImageClassifier", "Prediction", "load", "open_model"]

_TRAINING_PARAMS = tuple(f.name for f in dataclasses.fields(TrainingConfig))


class ImageClassifier(ProbabilityPredictor):
    """A pretrained backbone, frozen, with a new head trained on your images.

    Parameters mirror the ``headstart train`` options (``--fine-tune-epochs`` is
    ``fine_tune_epochs``...); see :class:`headstart.config.TrainingConfig` for
    their meaning. ``verbose``: 0 silent, 1 progress and one line per epoch.

    Attributes set by :meth:`fit` (or :func:`load`) end in ``_``:
    ``classes_``, ``config_``, ``net_``, ``metrics_``, ``history_`` (one dict per epoch, with
    :data:`headstart.runfolder.HISTORY_COLUMNS`: ``pandas.DataFrame(clf.history_)`` tabulates it),
    ``split_``, ``skipped_``, ``multi_label_``, ``thresholds_`` and ``predictions_`` (the final model's
    probabilities for the val and test images, in ``split_`` order), and with ``backbone="auto"``, ``backbones_``
    (the ``candidates`` compared, a dict each as in ``backbones.csv``). ``cache_dir`` is where the lightweight
    workflow keeps features (default: the user's cache folder); it is not saved with the model.
    """

    # Every parameter is a keyword of __init__, stored as given (scikit-learn's estimator contract).
    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = None,
                 image_size: int | None = None, workflow: str = "auto", engine: str = "auto",
                 flip_features: bool = False, class_weight: str | None = None, multi_label: bool | None = None,
                 epochs: int = 5,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 32,
                 label_smoothing: float = 0.1, augment: str = "light", dropout: float = 0.2,
                 patience: int = 3, fine_tune_epochs: int | None = None, fine_tune_lr: float | None = None,
                 unfreeze_last: int | None = 4, layer_decay: float = 1.0, blend: bool = True, refit: bool = True,
                 calibrate: bool = True,
                 val_fraction: float = 0.2, test_fraction: float = 0.0,
                 seed: int = 0, device: str = "auto", precision: str = "auto", workers: int | None = None,
                 candidates: Sequence[str] = (), time_budget: float | None = None,
                 cache_dir: str | Path | None = None, verbose: int = 1):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.workflow = workflow
        self.engine = engine
        self.flip_features = flip_features
        self.class_weight = class_weight
        self.multi_label = multi_label
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
        self.layer_decay = layer_decay
        self.blend, self.refit, self.calibrate = blend, refit, calibrate
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.device = device
        self.precision = precision
        self.workers = workers
        self.candidates, self.time_budget = candidates, time_budget
        self.cache_dir = cache_dir
        self.verbose = verbose

    # Set by fit and load: the network, or after a fit without PyTorch, its tensors (NumPy).
    _net: ClassifierNet | None = None
    _state: dict[str, np.ndarray] | None = None
    _callbacks: CallbackList | None = None  # the last fit's, told when its model is saved
    record_: RunRecord | None = None

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
    def fit(self, data, y=None, *, classes: Sequence[str] | None = None, callbacks: Sequence[Callback] = (),
            console: Console | None = None, checkpoint_dir: str | Path | None = None) -> ImageClassifier:
        """Train on an image folder (one subfolder per class), on image paths and labels ``y``, on a
        DataFrame with ``path`` and ``label`` columns, or on a :class:`DatasetSplit` (from
        :func:`headstart.data.read_label_file`...). ``y``: a class name per path, or (multi-label)
        a list of names per path, or an indicator matrix whose columns ``classes`` names, as from
        ``MultiLabelBinarizer``. A model is multi-label (a sigmoid per class, thresholds tuned on
        validation) when any image has several labels, or with ``multi_label=True``.

        ``callbacks``: :class:`headstart.callbacks.Callback` objects, told when the fit starts, at
        each epoch's end, when it ends (with :attr:`record_`), is interrupted or fails, and when the
        model is saved. ``console`` receives progress and messages (default: stderr, at ``verbose``).
        With ``checkpoint_dir``, every completed epoch is checkpointed there, and a checkpoint found
        there is resumed from: an interrupted run, rerun the same way, finishes as if it had never stopped.
        """
        self._callbacks = CallbackList(callbacks)
        try:
            self._fit(data, y, classes, console or Console(self.verbose), checkpoint_dir)
        except KeyboardInterrupt:
            self._callbacks.on_interrupt()
            raise
        except BaseException as exc:
            self._callbacks.on_error(exc)
            raise
        self._callbacks.on_fit_end(self.record_)
        return self

    def _fit(self, data, y, classes: Sequence[str] | None, console: Console, checkpoint_dir: str | Path | None
             ) -> None:
        started = time.perf_counter()
        config = self.training_config()
        cache = CacheLayout(self.cache_dir)
        if config.backbone != AUTO_BACKBONE:  # candidates are checked before they are compared
            check_backbone(feature_request(config), cache)  # a misspelt name fails before any work
        clock = time.perf_counter()
        split = fitting.agreed_split(to_split(data, y, classes, config.multi_label, val_fraction=config.val_fraction,
                                              test_fraction=config.test_fraction, seed=config.seed))
        fitting.report_split(split, console, config.val_fraction)
        request = self.run_request(split.root, split.label_file, split.label_sep)
        self._callbacks.on_fit_start(request)
        timings = {"data": time.perf_counter() - clock}
        run_dir, self.backbones_ = Path(checkpoint_dir) if checkpoint_dir is not None else None, None
        if config.backbone == AUTO_BACKBONE:  # the best candidate on this split's validation images
            config, self.backbones_ = select_backbone(split, config, cache, console, run_dir)
            timings["backbones"] = time.perf_counter() - clock - timings["data"]
        # The rate the training photos call for, so config.json says what ran (run.json keeps what was asked).
        config = dataclasses.replace(config, fine_tune_lr=fine_tune_rate(config, len(split.train)))
        epochs = itertools.count(1)
        fitted = fitting.fit(split, config, FitContext(
            cache, console, lambda row: self._callbacks.on_epoch_end(next(epochs), row), run_dir))
        timings.update(fitted.timings)
        result = fitted.result
        result.seconds = timings["stage1"] + timings.get("fine_tune", 0.0)

        self._net, self._state = fitted.net, fitted.state
        self.classes_ = split.classes
        head = HeadSpec(num_classes=len(split.classes), dropout=config.dropout, multi_label=split.multi_label,
                        thresholds=fitted.thresholds)
        self.config_ = ModelConfig(classes=split.classes, backbone=fitted.spec, head=head,
                                   preprocessing=fitted.preprocessing, training=config, versions=library_versions())
        split, held_out_proba = without_failed(split, result.failed, fitted.held_out_proba)
        self.split_ = split
        self.skipped_ = split.skipped + [Skipped(p, r) for p, r in result.failed.items()]
        clock = time.perf_counter()
        metrics, self.predictions_ = fit_metrics(self, split, fitted, held_out_proba, self._sharded_proba, config.calibrate)
        self.config_ = tuned_config(self.config_, metrics.calibration, split, self.predictions_)
        timings["evaluation"] = time.perf_counter() - clock
        metrics = dataclasses.replace(metrics, timings={**timings, "total": time.perf_counter() - started})
        self.record_ = RunRecord(self.config_, metrics, request, tuple(result.history), run_dir)

    @property
    def metrics_(self) -> RunMetrics | None:
        """What fitting measured (``record_.metrics``); None for a model saved without its metrics."""
        self._check_fitted()
        return self.record_.metrics if self.record_ is not None else None

    @property
    def history_(self) -> list[dict]:
        """One dict per epoch (``record_.history``), as ``history.csv`` holds them."""
        self._check_fitted()
        return list(self.record_.history) if self.record_ is not None else []

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "config_"):
            raise NotFittedError("this ImageClassifier is not fitted yet: call fit() or headstart.load() first")

    @property
    def head_(self) -> HeadSpec:
        self._check_fitted()
        return self.config_.head

    @property
    def multi_label_(self) -> bool:
        return self.head_.multi_label

    @property
    def thresholds_(self) -> np.ndarray | None:
        self._check_fitted()
        return np.array(self.config_.head.decision_thresholds()) if self.multi_label_ else None

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
        from .backbone.inference import stream_probabilities

        runtime, paths = self._inference(), [Path(p) for p in paths]  # an unfitted model fails, paths or not
        if not paths:
            return
        for path, proba, error in stream_probabilities(runtime, self.head_, paths, self.config_.preprocessing,
                                                       batch_size or self.batch_size, tta, self.workers):
            yield Prediction(path, proba, error)

    def _inference(self) -> tuple[ClassifierNet, torch.device, torch.dtype]:
        """The network on its device in eval mode, with the device and the compute dtype."""
        from .device import predicting_precision, prepare, resolve_device

        self._check_fitted()
        device = resolve_device(self.device)
        return prepare(self.net_, device).eval(), device, predicting_precision(self.precision, device)

    @property
    def preprocessing(self):
        """How images become the network's input (:class:`headstart.config.Preprocessing`)."""
        self._check_fitted()
        return self.config_.preprocessing

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N, 3, H, W) already resized and cropped."""
        import torch

        from .backbone.head import probabilities

        return probabilities(*self._inference(), torch.from_numpy(np.ascontiguousarray(batch)), head=self.head_)

    def explain(self, paths: Sequence[str | Path] | str | Path, batch_size: int | None = None) -> np.ndarray:
        """Where the model looked: each image's class activation map, as :func:`headstart.trust.cam.class_maps`
        (``paths`` as ``predict_proba`` takes them)."""
        from .trust.cam import class_maps

        return class_maps(self._inference(), self.preprocessing, expand_images(paths), batch_size or self.batch_size)

    def _sharded_proba(self, samples: Sequence[Sample], tta: bool = False) -> np.ndarray:
        """``predict_proba``, each rank of a data-parallel run predicting its share in whole batches."""
        return distributed.map_shards(lambda paths: self.predict_proba(paths, tta=tta), [s.path for s in samples],
                                      align=self.batch_size)

    def evaluate(self, data: str | Path | None, tta: bool = False, labels: str | Path | None = None,
                 label_sep: str = LABEL_SEP) -> dict:
        """Metrics on a labelled folder, or a label file's images (``labels``; relative paths from
        ``data`` if given): its test (else val, else train) split with split folders, else every
        image; images this model was fitted on in this session are left out, and unusable label
        rows are listed in ``skipped`` (:func:`headstart.evaluate.evaluate_folder`)."""
        from .evaluate import evaluate_folder

        self._check_fitted()
        split = getattr(self, "split_", None)
        seen = {s.path.resolve(): name for name in ("train", "val") for s in split.splits()[name]} if split else None
        return evaluate_folder(self, data, seen, tta=tta, labels=(labels, label_sep)).to_dict()

    def embed(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Each image's embedding, the backbone's pooled features (:func:`headstart.embed.embed_images`)."""
        return embed_images(self, paths)

    def suggest(self, paths: Sequence[str | Path], n: int) -> list[Suggestion]:
        """The ``n`` images to label next (:func:`headstart.embed.suggest_images`)."""
        return suggest_images(self, paths, n)

    # -- persistence ------------------------------------------------------------------------
    def run_request(self, data: str | Path, labels: str | Path | None = None, label_sep: str = LABEL_SEP) -> RunRequest:
        """What ``run.json`` keeps: the data folder (and label file) and every setting, enough to rerun or resume."""
        return RunRequest(Path(data).resolve(), {k: v for k, v in self.get_params().items() if k != "verbose"},
                          Path(labels).resolve() if labels is not None else None, label_sep)

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
        texts = run_texts(self)
        # All or nothing: a full disk midway leaves the previous model as it was.
        with atomic_files(directory) as new:
            save_file(state, str(new(MODEL_FILE)), metadata={"format": "pt", "headstart": "model"})
            for name, text in texts.items():
                new(name).write_text(text, encoding="utf-8", errors=TEXT_ERRORS)
        if report and getattr(self, "split_", None) is not None:
            from .report.page import write_report

            write_report(directory, explainer=lambda: self)
        if self._callbacks is not None:
            self._callbacks.on_save(directory)
        return directory


def open_model(path: str | Path, verbose: int = 0) -> Predictor:
    """A run folder as :class:`ImageClassifier`; an exported file as what its format runs it with
    (:func:`headstart.export.format_for_file`). Only the run folder imports PyTorch.
    """
    fmt = format_for_file(path)
    return load(path, verbose=verbose) if fmt is None else fmt.opener(Path(path))


def load(directory: str | Path, device: str = "auto", verbose: int = 1) -> ImageClassifier:
    """Load a saved model folder. Reads safetensors and JSON only: nothing is unpickled."""
    from .backbone.saved import build_network, load_tensors

    directory = Path(directory)
    check_finished(directory)
    config = read_config(directory)
    model_path = directory / MODEL_FILE
    problem = file_problem(model_path)  # missing, or a FIFO or device that reading would hang on
    if problem is not None:
        raise ModelFileError(f"not a headstart model folder: {model_path} {problem}")
    try:
        net = build_network(config)
    except BackboneError as exc:
        raise ModelFileError(f"{directory / CONFIG_FILE}: {exc}") from None
    load_tensors(net, model_path)
    params = {name: getattr(config.training, name) for name in _TRAINING_PARAMS} if config.training else {}
    params.update(device=device, verbose=verbose, workers=None)
    clf = ImageClassifier(**params)
    clf._net = net.eval()
    clf.classes_ = config.classes
    clf.config_ = config
    if (directory / METRICS_FILE).is_file():
        request = read_request(directory) if (directory / RUN_FILE).is_file() else None
        clf.record_ = RunRecord(config, read_metrics(directory), request, read_history(directory), directory)
    return clf
