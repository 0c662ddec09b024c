"""``ImageClassifier``: the whole method behind scikit-learn's estimator API.

>>> clf = ImageClassifier(backbone="efficientnet_lite0", fine_tune_epochs=1).fit("data/")
>>> clf.predict(["cat.jpg"])
>>> clf.save("runs/pets")
>>> clf = headstart.load("runs/pets")

A saved model is a folder: ``model.safetensors`` (weights) and ``config.json``
(everything else), plus ``metrics.json``, ``history.csv``, ``split.csv``,
``predictions.csv`` and ``skipped.csv`` for a model trained in this session,
and its ``report.html``. Loading reads only
safetensors and JSON: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._console import Console
from ._io import atomic_files, csv_text, json_text, read_json
from .checkpoint import CHECKPOINT_FILE, RUN_FILE
from .config import BackboneSpec, HeadSpec, ModelConfig, Preprocessing, TrainingConfig, library_versions
from .data import DatasetSplit, Sample, Skipped, discover
from .errors import BackboneError, DataError, ModelFileError, NotFittedError, UsageError
from .evaluate import classification_metrics
from .features import (BackboneRecord, FeatureSet, backbone_on_record, default_cache_dir, extract_features,
                       features_without_pytorch, remember_net)
from .linear import LinearHead, fit_linear_head, probabilities
from .results import HISTORY_COLUMNS, StageResult, TrainResult
from .runtime import Prediction, best_classes, stack_probabilities

# PyTorch, timm and the network are imported where they are used: a lightweight run
# whose backbone the feature cache knows fits its head and writes its model without
# them (about 5 s of imports on a 2-core machine).
if TYPE_CHECKING:
    import torch

    from .head import ClassifierNet

__all__ = ["ImageClassifier", "Prediction", "load", "MODEL_FILE", "CONFIG_FILE"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"

_TRAINING_PARAMS = tuple(f.name for f in dataclasses.fields(TrainingConfig))


class ImageClassifier:
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

    def set_params(self, **params) -> "ImageClassifier":
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
            console: Console | None = None, checkpoint_dir: str | Path | None = None) -> "ImageClassifier":
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
        cache_dir = Path(self.cache_dir or default_cache_dir())
        record = _record_for_fit_without_pytorch(config, cache_dir, checkpoint_dir)
        if record is None:
            from .backbone import resolve_architecture

            resolve_architecture(config.backbone)  # a misspelt name fails before any work
        clock = time.perf_counter()
        split = data if isinstance(data, DatasetSplit) else discover(
            data, config.val_fraction, config.test_fraction, config.seed)
        _report_data(split, console)
        timings = {"data": time.perf_counter() - clock}
        head_spec = HeadSpec(num_classes=len(split.classes), dropout=config.dropout)
        start = time.perf_counter()  # the network path restarts the clock once the backbone is built
        fitted = None
        if record is not None:
            fitted = self._fit_from_record(record, split, config, cache_dir, console, on_epoch)
        if fitted is None:
            fitted = self._fit_network(split, head_spec, config, cache_dir, console, on_epoch, checkpoint_dir,
                                       timings)
        timings.setdefault("stage1", time.perf_counter() - start)
        result = fitted.result
        result.seconds = timings["stage1"] + timings.get("fine_tune", 0.0)

        self.classes_ = split.classes
        self.config_ = ModelConfig(classes=split.classes, backbone=fitted.spec, head=head_spec,
                                   preprocessing=fitted.preprocessing, training=config,
                                   versions=library_versions())
        self.history_ = result.history
        split, head_proba = _without_failed(split, result.failed, fitted.head_proba)
        self.split_ = split
        self.skipped_ = split.skipped + [Skipped(p, r) for p, r in result.failed.items()]
        clock = time.perf_counter()
        self.metrics_ = self._final_metrics(split, result, fitted.workflow, fitted.head_info, head_proba)
        timings["evaluation"] = time.perf_counter() - clock
        self.metrics_["timings"] = {**timings, "total": time.perf_counter() - started}
        return self

    def _fit_from_record(self, record: BackboneRecord, split: DatasetSplit, config: TrainingConfig,
                         cache_dir: Path, console: Console, on_epoch: Callable[[dict], None] | None
                         ) -> _Fitted | None:
        """The lightweight head fitted without PyTorch, on features from the cache or, for the
        images missing there, from the backbone an earlier run exported; None when neither can
        provide them all (then the network is needed)."""
        spec = record.spec

        def ready(engine: str, computing: bool) -> None:
            _report_backbone(config, spec, record.preprocessing, console)
            console.info(f"lightweight workflow on cpu, {_split_sizes(split)}: features from the cache "
                         f"{'and the exported engine ' if computing else ''}({engine}), so the head is fitted "
                         "without loading the backbone")

        features = features_without_pytorch([s.path for s in _all_samples(split)], record, config.engine, cache_dir,
                                            config.flip_features, config.workers, console, ready)
        if features is None:
            return None
        from safetensors.numpy import load_file

        result, info, proba, head = self._head_from_features(features, split, config, console, on_epoch)
        self._net = None
        self._state = {**load_file(str(record.tensors)), "head.fc.weight": head.weight, "head.fc.bias": head.bias}
        return _Fitted("lightweight", spec, record.preprocessing, result, info, proba)

    def _fit_network(self, split: DatasetSplit, head_spec: HeadSpec, config: TrainingConfig, cache_dir: Path,
                     console: Console, on_epoch: Callable[[dict], None] | None,
                     checkpoint_dir: str | Path | None, timings: dict) -> _Fitted:
        """Stage 1 through the network (or on features it extracts), then the guarded fine-tune."""
        import torch

        from . import train as training
        from .backbone import create_backbone
        from .checkpoint import load_checkpoint
        from .head import ClassifierNet, Head
        from .loader import ImageDataset, make_loader, train_transform

        torch.manual_seed(config.seed)
        device = training.resolve_device(config.device)
        workflow, fine_tune_epochs = choose_workflow(config, device.type)
        if fine_tune_epochs and not split.val:
            raise UsageError("fine-tuning is guarded by the validation split, and there is none: "
                             "set --val-fraction above 0 or add a val/ folder")

        backbone, spec, preprocessing = create_backbone(config.backbone, config.weights,
                                                        image_size=config.image_size)
        _report_backbone(config, spec, preprocessing, console)
        net = ClassifierNet(backbone, Head(spec.num_features, head_spec), preprocessing)
        dtype = training.resolve_precision(config.precision, device)
        training.prepare(net, device)
        console.info(f"{workflow} workflow on {device.type} ({str(dtype).removeprefix('torch.')}), "
                     f"{_split_sizes(split)}")

        batch_size = training.bounded_batch_size(config.batch_size, preprocessing.input_size, device, console)
        loaders = {}  # built on first use: the lightweight head needs none, it reads cached features

        def loader(name: str):
            if name not in loaders:
                samples = split.train if name == "train" else split.val
                labels = [s.label for s in samples]
                dataset = (ImageDataset([s.path for s in samples], labels,
                                        train_transform(preprocessing, config.augment)) if name == "train"
                           else ImageDataset.for_eval([s.path for s in samples], labels, preprocessing))
                loaders[name] = make_loader(dataset, batch_size, shuffle=name == "train",
                                            workers=config.workers, seed=config.seed, gpu=device.type == "cuda")
            return loaders[name]

        checkpointing = training.Checkpointing()
        if checkpoint_dir is not None:
            checkpointing.run_dir = Path(checkpoint_dir)
            found = load_checkpoint(checkpointing.run_dir)
            if found is not None:
                checkpointing.state, checkpointing.tensors = found
        start = time.perf_counter()
        if workflow == "lightweight":
            remember_net(cache_dir, config.backbone, config.weights, config.image_size, spec, preprocessing, net)
            features = extract_features([s.path for s in _all_samples(split)], net, spec, preprocessing, cache_dir,
                                        engine=config.engine, device=device, flip=config.flip_features,
                                        workers=config.workers, console=console)
            result, head_info, head_proba, head = self._head_from_features(features, split, config, console,
                                                                           on_epoch)
            with torch.no_grad():
                net.head.fc.weight.copy_(torch.from_numpy(head.weight))
                net.head.fc.bias.copy_(torch.from_numpy(head.bias))
        else:
            result = training.fit(net, loader("train"), loader("val") if split.val else None,
                                  config, device, dtype, console, on_epoch, checkpointing)
            head_info, head_proba = {}, {}
        timings["stage1"] = time.perf_counter() - start
        if fine_tune_epochs:
            training.fine_tune(net, loader("train"), loader("val"), config, fine_tune_epochs, device, dtype,
                               result, console, on_epoch,
                               before=result.stage1.val if workflow == "standard" else None,
                               checkpointing=checkpointing)
            timings["fine_tune"] = time.perf_counter() - start - timings["stage1"]
        self._net, self._state = net.eval(), None
        return _Fitted(workflow, spec, preprocessing, result, head_info, head_proba)

    def _head_from_features(self, features: FeatureSet, split: DatasetSplit, config: TrainingConfig,
                            console: Console, on_epoch: Callable[[dict], None] | None
                            ) -> tuple[TrainResult, dict, dict[str, np.ndarray], LinearHead]:
        """The lightweight workflow's stage 1 on the features of ``_all_samples(split)``: a linear
        head in seconds.

        Returns the training result, what the features and the head took, the
        head's probabilities for the val and test images (NaN rows where an image
        could not be decoded), and the head.
        """
        for path, reason in features.failed.items():
            console.warn(f"skipping {path}: {reason}")
        samples = _all_samples(split)
        labels = np.array([s.label for s in samples])
        bounds = np.cumsum([0, len(split.train), len(split.val), len(split.test)])
        # Positions of each split's decodable images in `samples`.
        usable = {name: np.flatnonzero(features.ok[bounds[i]:bounds[i + 1]]) + bounds[i]
                  for i, name in enumerate(("train", "val", "test"))}
        rows = {name: features.rows(index, labels[index], with_flipped=name == "train")
                for name, index in usable.items()}
        head = fit_linear_head(rows["train"], rows["val"] if len(rows["val"]) else None, len(split.classes),
                               config.class_weight, config.seed)
        result = TrainResult(failed=dict(features.failed))
        row = {"epoch": 1, "stage": "head", "train_loss": head.train.loss, "train_accuracy": head.train.accuracy,
               "val_loss": head.val.loss if head.val else math.nan,
               "val_accuracy": head.val.accuracy if head.val else math.nan, "lr": math.nan,
               "seconds": features.seconds + head.seconds}
        result.history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        result.stage1 = StageResult(head.val, 1, 1, False)
        val_text = f", val loss {head.val.loss:.4f} acc {head.val.accuracy:.2%}" if head.val else ""
        console.info(f"head fitted on features in {head.seconds:.1f} s (L2 C={head.C:g}): "
                     f"train acc {head.train.accuracy:.2%}{val_text}")
        info = {"features": {"engine": features.engine, "computed": features.computed,
                             "cached": len(samples) - features.computed, "seconds": features.seconds},
                "head": {"C": head.C, "seconds": head.seconds}}
        proba = {}
        for i, name in enumerate(("val", "test"), start=1):
            proba[name] = np.full((bounds[i + 1] - bounds[i], len(split.classes)), np.nan)
            proba[name][usable[name] - bounds[i]] = probabilities(rows[name], head.weight, head.bias)
        features.close()
        return result, info, proba, head

    def _final_metrics(self, split: DatasetSplit, result: TrainResult, workflow: str,
                       head_info: dict, head_proba: dict[str, np.ndarray]) -> dict:
        """The run's metrics; sets ``predictions_``, the final model's probabilities per split."""
        metrics: dict = {
            "workflow": workflow,
            "train_seconds": result.seconds,
            "counts": split.counts(),
            "skipped": len(self.skipped_),
            "stage1": _stage_summary(result.stage1),
            "fine_tune": None,
            **head_info,
        }
        if result.fine_tune is not None:
            metrics["fine_tune"] = {**_stage_summary(result.fine_tune), "kept": result.fine_tune_kept}
        stage1_only = result.fine_tune is None or not result.fine_tune_kept
        self.predictions_ = {}
        for name, samples in (("val", split.val), ("test", split.test)):
            if not samples:
                continue
            # The lightweight head's probabilities come straight from the cached features,
            # unless fine-tuning changed the backbone they came from.
            proba = head_proba[name] if stage1_only and name in head_proba \
                else self.predict_proba([s.path for s in samples])
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

            net = _network(self.config_)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self._state.items()})
            self._net, self._state = net.eval(), None
        return self._net

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        """Predictions for ``paths`` in order, streamed batch by batch (constant memory).

        With ``tta``, the probabilities of each image and of its mirror image are
        averaged (test-time augmentation: one more forward pass per image).
        """
        from .loader import ImageDataset, make_loader

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
        from . import train as training

        self._check_fitted()
        device = training.resolve_device(self.device)
        dtype = training.resolve_precision(self.precision, device)
        return training.prepare(self.net_, device).eval(), device, dtype

    @property
    def preprocessing(self):
        """How images become the network's input (:class:`headstart.config.Preprocessing`)."""
        self._check_fitted()
        return self.config_.preprocessing

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N, 3, H, W) already resized and cropped."""
        import torch

        return _probabilities(self._inference(), torch.from_numpy(np.ascontiguousarray(batch)))

    def predict_proba(self, paths: Sequence[str | Path] | str | Path, tta: bool = False) -> np.ndarray:
        """Class probabilities, one row per path (columns in ``classes_`` order).

        A row is NaN for an image that cannot be decoded. ``tta``: see :meth:`iter_predict`.
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self._check_fitted()
        return stack_probabilities(self.iter_predict(paths, tta=tta), len(paths), len(self.classes_))

    def predict(self, paths: Sequence[str | Path] | str | Path, tta: bool = False) -> np.ndarray:
        """The most probable class name per path (None for an image that cannot be decoded)."""
        return best_classes(self.predict_proba(paths, tta=tta), self.classes_)

    def evaluate_samples(self, samples: Sequence[Sample], tta: bool = False) -> dict:
        """Metrics (:func:`headstart.evaluate.classification_metrics`) on labelled samples."""
        return self._metrics_of(samples, self.predict_proba([s.path for s in samples], tta=tta))

    def _metrics_of(self, samples: Sequence[Sample], proba: np.ndarray) -> dict:
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
        if split.presplit:
            samples = split.test or split.val
        else:
            samples = split.train
        remap = [self.classes_.index(c) for c in split.classes]
        return self.evaluate_samples([Sample(s.path, remap[s.label]) for s in samples], tta=tta)

    # -- persistence ------------------------------------------------------------------------
    def run_record(self, data: str | Path) -> dict:
        """What ``run.json`` keeps: the data folder and every setting, enough to rerun or resume."""
        params = {k: str(v) if isinstance(v, Path) else v for k, v in self.get_params().items() if k != "verbose"}
        return {"data": str(Path(data).resolve()), "params": params}

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

            state = _tensors(self._net)
        texts = {CONFIG_FILE: json_text(self.config_.to_dict())}
        if getattr(self, "metrics_", None) is not None:
            texts[METRICS_FILE] = json_text(self.metrics_)
        if getattr(self, "history_", None):
            texts["history.csv"] = csv_text(HISTORY_COLUMNS,
                                            ([row[c] for c in HISTORY_COLUMNS] for row in self.history_))
        split = getattr(self, "split_", None)
        if split is not None:
            texts["split.csv"] = csv_text(("path", "class", "split"),
                                          ((_relative(s.path, split.root), self.classes_[s.label], name)
                                           for name, samples in split.splits().items() for s in samples))
        if split is not None and getattr(self, "predictions_", None):
            texts[PREDICTIONS_FILE] = predictions_csv(self.predictions_, split, self.classes_)
        if hasattr(self, "skipped_"):
            texts["skipped.csv"] = csv_text(("path", "reason"), ((str(s.path), s.reason) for s in self.skipped_))
        if split is not None:
            texts[RUN_FILE] = json_text(self.run_record(split.root))
        # All or nothing: a full disk midway leaves the previous model as it was.
        with atomic_files(directory) as new:
            save_file(state, str(new(MODEL_FILE)), metadata={"format": "pt", "headstart": "model"})
            for name, text in texts.items():
                new(name).write_text(text, encoding="utf-8")
        if report and METRICS_FILE in texts:
            from .report import write_report

            write_report(directory)
        return directory


def predictions_csv(predictions: dict[str, np.ndarray], split: DatasetSplit, classes: Sequence[str]) -> str:
    """One row per evaluated image: its split, true and predicted class, and every class's probability
    (empty where the image could not be decoded), so a report can be rebuilt without the model."""
    header = ("path", "split", "class", "predicted", *(f"p_{c}" for c in classes))

    def rows():
        for name, proba in predictions.items():
            for sample, row in zip(split.splits()[name], proba):
                decoded = not np.isnan(row).any()
                yield (_relative(sample.path, split.root), name, classes[sample.label],
                       classes[int(row.argmax())] if decoded else "",
                       *(f"{p:.6g}" if decoded else "" for p in row))

    return csv_text(header, rows())


def _probabilities(inference: tuple[ClassifierNet, torch.device, torch.dtype], images: torch.Tensor,
                   tta: bool = False) -> np.ndarray:
    """Softmax of the network on a batch; with ``tta``, averaged with the mirror images'."""
    import torch

    from . import train as training

    net, device, dtype = inference
    images = training.to_device(images, device)
    with torch.inference_mode(), training.autocast(device, dtype):
        proba = torch.softmax(net(images).float(), 1)
        if tta:
            proba = (proba + torch.softmax(net(images.flip(-1)).float(), 1)) / 2
    return proba.cpu().numpy()


def choose_workflow(config: TrainingConfig, device_type: str) -> tuple[str, int]:
    """The workflow for stage 1 and the number of fine-tuning epochs, for ``auto`` settings.

    ``auto`` fits the head on cached features (lightweight): the most accuracy
    per minute on any device. Fine-tuning runs when asked for, and by default
    for 2 epochs on a GPU, where it is affordable.
    """
    workflow = "lightweight" if config.workflow == "auto" else config.workflow
    epochs = config.fine_tune_epochs
    if epochs is None:
        epochs = 2 if config.workflow == "auto" and device_type == "cuda" else 0
    return workflow, epochs


def prepare_output_dir(directory: str | Path, overwrite: bool) -> Path:
    """Create ``directory``; refuse one that holds files unless ``overwrite``: nothing is lost silently."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output {directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise UsageError(f"output folder {directory} is not empty: choose another --out or pass --overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def load(directory: str | Path, device: str = "auto", verbose: int = 1) -> ImageClassifier:
    """Load a saved model folder. Reads safetensors and JSON only: nothing is unpickled."""
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
        net = _network(config)
    except BackboneError as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None
    _load_state(net, model_path)
    params = {name: getattr(config.training, name) for name in _TRAINING_PARAMS} if config.training else {}
    params.update(device=device, verbose=verbose, workers=None)
    clf = ImageClassifier(**params)
    clf._net = net.eval()
    clf.classes_ = config.classes
    clf.config_ = config
    metrics_path = directory / METRICS_FILE
    clf.metrics_ = read_json(metrics_path) if metrics_path.is_file() else None
    return clf


def _load_state(net: ClassifierNet, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file: {exc}") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise ModelFileError(f"{path} does not match its config.json: {len(missing)} missing, "
                             f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape tensors (e.g. {first})")
    net.load_state_dict(state)


def _network(config: ModelConfig) -> ClassifierNet:
    """The network ``config`` describes, randomly initialised: its weights come from a saved model."""
    from .backbone import build_architecture
    from .head import ClassifierNet, Head

    return ClassifierNet(build_architecture(config.backbone), Head(config.backbone.num_features, config.head),
                         config.preprocessing)


def _tensors(net: ClassifierNet) -> dict[str, torch.Tensor]:
    """The network's tensors as saved: on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


@dataclasses.dataclass
class _Fitted:
    """What stage 1 (and fine-tuning) produced, whichever way the model was fitted."""

    workflow: str
    spec: BackboneSpec
    preprocessing: Preprocessing
    result: TrainResult
    head_info: dict
    head_proba: dict[str, np.ndarray]


def _record_for_fit_without_pytorch(config: TrainingConfig, cache_dir: Path, checkpoint_dir: str | Path | None
                                    ) -> BackboneRecord | None:
    """The feature cache's record of the backbone, when this fit may run without PyTorch: the
    lightweight workflow without fine-tuning, on the CPU, not resuming a checkpoint, with weights
    the cache can identify. Whether the features can be had without PyTorch is checked next."""
    if choose_workflow(config, "cpu") != ("lightweight", 0):
        return None
    if checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_FILE).exists():
        return None
    return backbone_on_record(cache_dir, config.backbone, config.weights, config.image_size, config.device,
                              config.engine)


def _all_samples(split: DatasetSplit) -> list[Sample]:
    """Train, val and test samples, in that order: the order of the lightweight workflow's features."""
    return split.train + split.val + split.test


def _without_failed(split: DatasetSplit, failed: dict[Path, str], proba: dict[str, np.ndarray]
                    ) -> tuple[DatasetSplit, dict[str, np.ndarray]]:
    """The split, and the per-split probability rows, without the images that failed to decode.

    Those were never trained or validated on: the saved split and counts leave them
    out, as skipped.csv lists them.
    """
    decoded = {name: np.array([s.path not in failed for s in samples], dtype=bool)
               for name, samples in split.splits().items()}
    kept = dataclasses.replace(split, **{name: [s for s, ok in zip(samples, decoded[name]) if ok]
                                         for name, samples in split.splits().items()})
    return kept, {name: rows[decoded[name]] for name, rows in proba.items()}


def _stage_summary(stage: StageResult | None) -> dict | None:
    if stage is None:
        return None
    val = stage.val
    return {
        "val_accuracy": val.accuracy if val else math.nan,
        "val_loss": val.loss if val else math.nan,
        "epochs_run": stage.epochs_run,
        "best_epoch": stage.best_epoch,
        "stopped_early": stage.stopped_early,
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _split_sizes(split: DatasetSplit) -> str:
    return f"{len(split.train)} train / {len(split.val)} val / {len(split.test)} test images"


def _report_backbone(config: TrainingConfig, spec: BackboneSpec, preprocessing: Preprocessing,
                     console: Console) -> None:
    console.info(f"backbone {config.backbone} ({spec.weights}), {spec.num_features} features, "
                 f"input {preprocessing.image_size} px")


def _report_data(split: DatasetSplit, console: Console) -> None:
    how = "split folders" if split.presplit else "a stratified split"
    console.info(f"{len(split.classes)} classes ({', '.join(split.classes[:8])}"
                 f"{', ...' if len(split.classes) > 8 else ''}) from {split.root}, using {how}")
    for skipped in split.skipped:
        console.warn(f"skipping {skipped.path}: {skipped.reason}")
