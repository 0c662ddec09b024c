"""The ``headstart`` command line's grammar: each command's options and their defaults
(:mod:`.registry` names the commands and builds the parser from these pieces).

An option's default is read from the configuration it fills (:class:`TrainingConfig` for
``train``, :class:`InspectSettings` for ``inspect``), so the command line and the Python API
never disagree. The parser is built before every command, ``headstart predict MODEL.onnx``
included: nothing imported here may pull in PyTorch or scikit-learn.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..config import AUGMENTATIONS, CLASS_WEIGHTS, ENGINES, FINE_TUNE_RATES, PRECISIONS, WORKFLOWS, TrainingConfig
from ..data.dataset import LABEL_SEP
from ..errors import UsageError
from .values import port_number, unfreeze_count

if TYPE_CHECKING:
    from ..inspection import InspectSettings

__all__ = ["main_parser", "add_train", "add_predict", "add_evaluate", "add_inspect", "add_backbones", "add_report",
           "add_export", "add_serve", "add_compare", "add_cache", "add_launch", "check_output"]

_DEFAULT = TrainingConfig()
(_MANY_PHOTOS, _HIGH_RATE), (_, _LOW_RATE) = FINE_TUNE_RATES


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors reported in headstart's one-line form."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        # "headstart train" -> "train: ...": the console already says "headstart: error:".
        command = self.prog.removeprefix("headstart").strip()
        raise UsageError(f"{command}: {message}" if command else message)


class _Repeated(argparse.Action):
    """A repeatable option, gathered in a tuple as the configuration holds it (argparse's "append"
    gathers a list, and the option's default would then differ from the configuration's)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, (*getattr(namespace, self.dest), values))


def _common() -> argparse.ArgumentParser:
    """-q and --traceback, accepted after the command too (``headstart predict -q ...``).

    SUPPRESS as default: a subcommand that does not see the flag leaves the main parser's value.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print results and errors only")
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error")
    return common


def _command(commands, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand with its help line, the shared flags and an example or two under its options."""
    return commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                               epilog="examples:\n" + examples, parents=[_common()],
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def main_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``headstart`` parser with its own options, and the group its commands' parsers join
    (:func:`headstart.cli.registry.build_parser` adds them)."""
    parser = _Parser(prog="headstart", description="Transfer learning for image folders: a pretrained "
                     "backbone, frozen, with a new head trained on your images.")
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print results and errors only")
    parser.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    return parser, commands


def check_output(path: Path | None, overwrite: bool, suffixes: tuple[str, ...], flag: str = "--output") -> None:
    """Refuse an output file before any work: wrong kind, already there, or nowhere to go."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: expected a file ending in {' or '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise UsageError(f"{flag} {path} exists: choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")


def add_train(commands, name: str) -> argparse.ArgumentParser:
    t = _command(commands, name, "train a classifier on a folder of images, one subfolder per class",
                 "  headstart train photos/ --out runs/pets\n"
                 "  headstart train photos/ --out runs/pets --fine-tune-epochs 2 --track mlflow\n"
                 "  headstart train --resume runs/pets")
    t.add_argument("data", type=Path, metavar="DATA", nargs="?", help="image folder: one subfolder per "
                   "class, or train/ and val/ (or validation/) split folders, optionally test/; with "
                   "--labels, the folder the label file's relative paths start from")
    _add_labels(t)
    t.add_argument("--out", type=Path, help="run folder to write (default: runs/<timestamp>)")
    t.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    t.add_argument("--resume", type=Path, metavar="RUN", help="finish an interrupted run, from its last "
                   "completed epoch, with the settings it was started with")
    t.add_argument("--track", choices=("mlflow", "tensorboard"), action="append",
                   help="also log settings, per-epoch and final metrics: mlflow logs them with the report and "
                   "the model to MLflow (MLFLOW_TRACKING_URI, else MLflow's local default), tensorboard writes "
                   "event files into RUN/tensorboard; repeat for both (pip install 'headstart[track]')")
    g = t.add_argument_group("backbone")
    _add_backbone(g, _DEFAULT, auto="; auto: compare the --candidate backbones first (as 'headstart "
                  "backbones' does) and train the best")
    g.add_argument("--candidate", action=_Repeated, dest="candidates", default=_DEFAULT.candidates, metavar="NAME[=FILE]",
                   help="with --backbone auto: a backbone to compare, repeatable, with local weights as "
                   "NAME=FILE (default: efficientnet_lite0/1/2); the best validation accuracy is trained")
    _add_time_budget(g)
    g = t.add_argument_group("stage 1: the head on the frozen backbone")
    g.add_argument("--workflow", choices=WORKFLOWS, default=_DEFAULT.workflow,
                   help="lightweight: backbone features computed once (cached), head fitted on them in "
                   "seconds; standard: the whole model runs on every batch, with augmentation; "
                   "auto (default): lightweight, plus fine-tuning on a GPU")
    g.add_argument("--flip-features", action="store_true",
                   help="lightweight: add the mirror images' features as training samples")
    g.add_argument("--class-weight", choices=[w for w in CLASS_WEIGHTS if w], default=_DEFAULT.class_weight,
                   help="weight classes inversely to their frequency, for imbalanced data (multi-label: "
                   "each class's positives weigh negatives/positives)")
    g.add_argument("--multi-label", action="store_const", const=True, default=_DEFAULT.multi_label,
                   help="a sigmoid per class, several labels (or none) per image; chosen anyway when "
                   "an image has several labels")
    g.add_argument("--epochs", type=int, default=_DEFAULT.epochs, help="standard workflow: epochs of stage 1")
    g.add_argument("--lr", type=float, default=_DEFAULT.lr,
                   help=f"standard workflow: peak learning rate of AdamW (default: {_DEFAULT.lr:g})")
    g.add_argument("--weight-decay", type=float, default=_DEFAULT.weight_decay,
                   help=f"standard workflow and fine-tuning: AdamW's decay (default: {_DEFAULT.weight_decay:g})")
    g.add_argument("--batch-size", type=int, default=_DEFAULT.batch_size,
                   help=f"images per batch (default: {_DEFAULT.batch_size}; lowered to fit GPU memory)")
    g.add_argument("--label-smoothing", type=float, default=_DEFAULT.label_smoothing,
                   help="standard workflow and fine-tuning, one label per image: label smoothing of the "
                   f"loss (default: {_DEFAULT.label_smoothing:g}; it keeps a gradient for fine-tuning after a "
                   "head that fits its training images exactly; multi-label losses are not smoothed)")
    g.add_argument("--augment", choices=AUGMENTATIONS, default=_DEFAULT.augment,
                   help="standard workflow and fine-tuning: light = random resized crop and flip, "
                   "strong adds rotation and colour jitter")
    g.add_argument("--dropout", type=float, default=_DEFAULT.dropout,
                   help=f"dropout before the head's dense layer (default: {_DEFAULT.dropout:g})")
    g.add_argument("--patience", type=int, default=_DEFAULT.patience, help="early stopping on validation loss (0: off)")
    g.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep the raw probabilities: no temperature fitted on the validation images at the end "
                   "(single-label models; see the trust guide)")
    g.add_argument("--no-refit", dest="refit", action="store_false",
                   help="keep the model the validation photos chose, trained without them; by default, once they "
                   "have chosen, the lightweight head (at its L2 strength) and a kept fine-tune (for its epochs, "
                   "blended as chosen) are trained again on the training and validation photos together")
    g = t.add_argument_group("stage 2: fine-tuning (kept only if validation improves)")
    g.add_argument("--fine-tune-epochs", type=int, default=_DEFAULT.fine_tune_epochs, metavar="N",
                   help="0 skips it (default: 2 on a GPU with --workflow auto, else 0)")
    g.add_argument("--fine-tune-lr", type=float, default=_DEFAULT.fine_tune_lr, metavar="LR",
                   help="AdamW's peak rate for fine-tuning, reached after a warm-up over a tenth of the steps, "
                   f"then decayed on a cosine (default: {_LOW_RATE:g} below {_MANY_PHOTOS:,} training photos, "
                   f"{_HIGH_RATE:g} from {_MANY_PHOTOS:,})")
    g.add_argument("--unfreeze-last", type=unfreeze_count, default=_DEFAULT.unfreeze_last, metavar="K|all",
                   help="unfreeze the last K blocks of the backbone, or all (default: "
                   f"{_DEFAULT.unfreeze_last}, of EfficientNet-Lite's 8)")
    g.add_argument("--layer-decay", type=float, default=_DEFAULT.layer_decay, metavar="F",
                   help="each block's rate is F times the next block's, the head's --fine-tune-lr "
                   f"(default: {_DEFAULT.layer_decay:g})")
    g.add_argument("--no-blend", dest="blend", action="store_false",
                   help="keep the fine-tuned weights as they are, without trying their blends with "
                   "stage 1's (averages of the two, the best on validation kept)")
    g = t.add_argument_group("data and hardware")
    g.add_argument("--val-fraction", type=float, default=_DEFAULT.val_fraction, help="used when DATA has no val/ folder")
    g.add_argument("--test-fraction", type=float, default=_DEFAULT.test_fraction, help="used when DATA has no test/ folder")
    g.add_argument("--seed", type=int, default=_DEFAULT.seed,
                   help="seeds the split, the head's initialisation and the batch order (default: 0)")
    _add_hardware(g, _DEFAULT)
    return t


def add_inspect(commands, name: str) -> argparse.ArgumentParser:
    # Here, not at the top: only building the parser needs inspect's defaults. The package
    # imports nothing heavy, so reading them costs no PyTorch.
    from ..inspection import InspectSettings

    default = InspectSettings()
    i = _command(commands, name, "find unreadable, duplicated, leaked and likely mislabelled images",
                 "  headstart inspect photos/\n  headstart inspect photos/ --out check --near-duplicate 0.95\n"
                 "  headstart inspect --labels labels.csv")
    i.add_argument("data", type=Path, metavar="DATA", nargs="?", help="image folder: one subfolder per class, or "
                   "train/ and val/ (or validation/) split folders, optionally test/; with --labels, the "
                   "folder the label file's relative paths start from")
    _add_labels(i)
    i.add_argument("--out", type=Path, help="folder for inspect.csv and inspect.html "
                   "(default: runs/inspect-<timestamp>; never inside DATA)")
    i.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    _add_backbone(i, default)
    i.add_argument("--near-duplicate", type=float, default=default.near_duplicate, metavar="SIM",
                   help=f"cosine similarity of features from which two images count as near-duplicates "
                   f"(default: {default.near_duplicate})")
    i.add_argument("--folds", type=int, default=default.folds,
                   help="cross-validation folds for the out-of-fold probabilities behind label errors")
    _add_hardware(i, default, precision=False)  # the engine sets the precision of feature extraction
    return i


def add_backbones(commands, name: str) -> argparse.ArgumentParser:
    b = _command(commands, name, "compare backbones on a data set: the lightweight head's validation "
                 "accuracy on each one's cached features, its speed and size",
                 "  headstart backbones photos/\n"
                 "  headstart backbones photos/ --backbone efficientnet_lite0 --backbone resnet50=r50.safetensors\n"
                 "  headstart backbones photos/ --time-budget 15 --out runs/which-backbone")
    b.add_argument("data", type=Path, metavar="DATA", nargs="?", help="image folder, as for train; with "
                   "--labels, the folder the label file's relative paths start from")
    _add_labels(b)
    b.add_argument("--out", type=Path, help="folder for backbones.csv, .html and .png (default: "
                   "runs/backbones-<timestamp>)")
    b.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    g = b.add_argument_group("candidates")
    g.add_argument("--backbone", action=_Repeated, dest="candidates", default=_DEFAULT.candidates, metavar="NAME[=FILE]",
                   help="a backbone to compare, repeatable: efficientnet_lite0/1/2 or a timm name, with "
                   "local weights as NAME=FILE (default: the three embedded ones)")
    _add_extraction(g, _DEFAULT)
    _add_time_budget(g)
    g = b.add_argument_group("split and head, as train draws and fits them")
    g.add_argument("--val-fraction", type=float, default=_DEFAULT.val_fraction, help="used when DATA has no val/ folder")
    g.add_argument("--test-fraction", type=float, default=_DEFAULT.test_fraction,
                   help="held out and not looked at, as train holds them out (when DATA has no test/ folder)")
    g.add_argument("--seed", type=int, default=_DEFAULT.seed, help="seeds the split (default: 0)")
    g.add_argument("--class-weight", choices=[w for w in CLASS_WEIGHTS if w], default=_DEFAULT.class_weight,
                   help="weight classes inversely to their frequency, for imbalanced data")
    _add_hardware(g, _DEFAULT, precision=False)
    return b


def _add_model(parser) -> None:
    """The model argument of the commands that run a trained model, PyTorch or exported."""
    parser.add_argument("model", type=Path, metavar="RUN|MODEL.onnx",
                        help="a run folder written by 'headstart train', or a file written by 'headstart export'")


def _add_labels(parser) -> None:
    """The options of a label file, which train, evaluate and inspect share."""
    parser.add_argument("--labels", type=Path, metavar="CSV", help="labels from a CSV file: columns path "
                        "(relative to DATA, else to the CSV's folder, or absolute), label, optional split "
                        "(train/val/test); a run's split.csv is one")
    parser.add_argument("--label-sep", default=LABEL_SEP, metavar="SEP",
                        help="separates several labels in one cell of --labels (default: %(default)s)")


def _add_backbone(group, default: TrainingConfig | InspectSettings, auto: str = "") -> None:
    """The options that pick the features, and so the feature cache, which train and inspect
    share; ``default`` is the command's configuration (theirs agree on these values), ``auto``
    what ``--backbone auto`` does, where it is accepted."""
    group.add_argument("--backbone", default=default.backbone,
                       help="efficientnet_lite0/1/2 (embedded weights, no download) or any timm model "
                       "name; train and inspect with the same one share their cached features" + auto)
    group.add_argument("--weights", metavar="FILE", help="local weights (.safetensors, or a .pth state_dict)")
    _add_extraction(group, default)


def _add_extraction(group, default: TrainingConfig | InspectSettings) -> None:
    """How features are computed and where they are cached, whatever the backbone."""
    group.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the backbone's own)")
    group.add_argument("--engine", choices=ENGINES, default=default.engine,
                       help="what runs the backbone to compute features, for inspect and train's "
                       "lightweight workflow (auto: ONNX Runtime on a CPU, mixed precision on a GPU)")
    group.add_argument("--cache-dir", type=Path, help="where features are cached (default: the user cache folder)")


def _add_time_budget(group) -> None:
    group.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="the most seconds a backbone may take to extract the features of 1,000 images on "
                       "this machine, as the comparison measures it (what every later run pays per 1,000 "
                       "images, whatever the data set's size); default: no limit")


def _add_hardware(group, default: TrainingConfig | InspectSettings = _DEFAULT, precision: bool = True) -> None:
    """The options that place the work: train, predict, evaluate and inspect share them."""
    group.add_argument("--device", default=default.device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    if precision:
        group.add_argument("--precision", default=default.precision, choices=PRECISIONS,
                           help="auto: bf16 where the hardware runs it natively, else fp32 (fp16 on older GPUs)")
    group.add_argument("--workers", type=int, default=None, help="image decoding processes "
                       "(default: one per core, at most 4)")


def add_launch(parser) -> None:
    """The options that start torchrun on this machine, for the commands that run data-parallel."""
    g = parser.add_argument_group("several processes (torchrun on this machine; see the README for several "
                                  "machines)")
    g.add_argument("--nproc", type=int, metavar="N", help="run on N processes (on CPUs, they share the cores)")
    g.add_argument("--devices", metavar="LIST", help="one process per GPU of LIST, e.g. 0,1,2,3")


def add_predict(commands, name: str) -> argparse.ArgumentParser:
    p = _command(commands, name, "classify images with a trained model",
                 "  headstart predict runs/pets photo.jpg more_photos/\n"
                 "  headstart predict runs/pets/model.onnx https://example.org/cat.jpg\n"
                 "  headstart predict runs/pets photos/ --top-k 3 --output preds.csv\n"
                 "  headstart predict runs/pets photos/ --reject auto --coverage 0.9 --explain maps/")
    _add_model(p)
    # str, not Path: Path would turn "https://host/a.jpg" into "https:/host/a.jpg".
    p.add_argument("paths", nargs="+", metavar="PATH|URL", help="image files, folders (recursive) "
                   "or http(s) URLs; one row per image, an error row for one that cannot be had")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="the K most probable classes per image")
    p.add_argument("--output", type=Path, metavar="FILE", help="write predictions to FILE (.csv or .json)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--tta", action="store_true", help="average with the mirror image's prediction")
    p.add_argument("--threshold", type=float, metavar="P", help="multi-label models: predict every class "
                   "with probability >= P (default: each class's threshold, tuned on validation)")
    g = p.add_argument_group("trust (single-label models)")
    g.add_argument("--reject", metavar="auto|P", help="mark an image 'unknown' when its highest "
                   "probability (its score column) is below P; auto: the threshold that keeps 95%% of the "
                   "validation images")
    g.add_argument("--coverage", type=float, metavar="C", help="also write each image's prediction set: the "
                   "smallest set of classes holding the true one with probability C, such as 0.9 (split "
                   "conformal prediction on the validation images)")
    g.add_argument("--explain", type=Path, metavar="DIR", help="write into DIR, per image, the network's input "
                   "with the class activation map of its predicted class over it (run folders only)")
    _add_hardware(p)
    return p


def add_evaluate(commands, name: str) -> argparse.ArgumentParser:
    e = _command(commands, name, "measure a trained model on a labelled image folder or label file",
                 "  headstart evaluate runs/pets photos/\n"
                 "  headstart evaluate runs/pets/model.onnx new_photos/ --output metrics.json --report eval.html\n"
                 "  headstart evaluate runs/pets --labels labels.csv")
    _add_model(e)
    e.add_argument("data", type=Path, metavar="DATA", nargs="?", help="one subfolder per class (with split "
                   "folders, test/ is used, else val/); with --labels, where its relative paths start")
    _add_labels(e)
    e.add_argument("--include-training-images", action="store_true",
                   help="also score the images the run was trained on (by default they are left out, "
                   "as its split.csv lists them: their score flatters the model)")
    e.add_argument("--output", type=Path, metavar="FILE", help="also write the metrics as JSON")
    e.add_argument("--report", type=Path, metavar="FILE", help="also write an HTML page: metrics, plots, "
                   "most confused classes and the most confidently wrong images")
    e.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output or --report")
    e.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    e.add_argument("--tta", action="store_true", help="average with the mirror image's prediction")
    _add_hardware(e)
    return e


def add_report(commands, name: str) -> argparse.ArgumentParser:
    r = _command(commands, name, "rebuild a run's report.html (metrics, plots, mistakes) from its files",
                 "  headstart report runs/pets")
    r.add_argument("run", type=Path, metavar="RUN", help="a run folder written by 'headstart train'")
    return r


def add_cache(commands, name: str) -> argparse.ArgumentParser:
    c = _command(commands, name, "show or clear the lightweight workflow's feature cache",
                 "  headstart cache info\n  headstart cache clear")
    c.add_argument("action", choices=("info", "clear"), help="info: what is cached; clear: remove it all")
    c.add_argument("--cache-dir", type=Path, help="the cache folder (default: the user cache folder)")
    return c


def add_export(commands, name: str) -> argparse.ArgumentParser:
    x = _command(commands, name, "export a trained model as one self-describing file, checked against it",
                 "  headstart export runs/pets\n  headstart export runs/pets --output pets.onnx --int8\n"
                 "  headstart export runs/pets --format openvino")
    x.add_argument("model", type=Path, metavar="RUN", help="a run folder written by 'headstart train'")
    x.add_argument("--format", default="onnx", metavar="NAME",
                   help="onnx (default), openvino (.xml and .bin), tflite, coreml (.mlpackage)")
    x.add_argument("--output", type=Path, metavar="FILE",
                   help="the fp32 model's file (default: RUN/model.onnx, or the format's suffix); "
                   "--int8 writes its int8 copy beside it, FILE.onnx -> FILE.int8.onnx")
    # The name before --output was the common spelling of predict and evaluate: still accepted, unlisted.
    x.add_argument("--out", type=Path, dest="output", help=argparse.SUPPRESS)
    x.add_argument("--overwrite", action="store_true", help="allow replacing an existing file")
    x.add_argument("--check-images", type=int, default=200, metavar="N",
                   help="validation (and test) images to check parity on, per split (default: 200)")
    x.add_argument("--force", action="store_true", help="write the file even when it fails its check "
                   "(below 99.5%% top-1 agreement, or an int8 copy past --max-drop); export.json says so")
    x.add_argument("--int8", action="store_true", help="also write an int8 copy beside the fp32 file (pets.onnx -> "
                   "pets.int8.onnx, or .int8.xml), statically quantized (ONNX Runtime; NNCF for openvino) and "
                   "calibrated on training images; refused with exit 7 past --max-drop")
    x.add_argument("--max-drop", type=float, default=0.5, metavar="POINTS",
                   help="refuse the int8 copy if it loses more points of validation accuracy than this "
                   "(default: 0.5); the fp32 file is kept")
    x.add_argument("--calibration-images", type=int, default=100, metavar="N",
                   help="training images that calibrate the int8 ranges (default: 100)")
    return x


def add_serve(commands, name: str) -> argparse.ArgumentParser:
    v = _command(commands, name, "serve a model over HTTP: an API and a web page",
                 "  headstart serve runs/pets\n  headstart serve runs/pets/model.onnx --port 8080")
    _add_model(v)
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    v.add_argument("--port", type=port_number, default=8000, help="port to listen on (default: 8000)")
    v.add_argument("--max-batch", type=int, default=32, help="images per forward pass, across requests")
    v.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long an image waits for others to batch with (0: no micro-batching)")
    v.add_argument("--max-upload-mb", type=float, default=20.0, help="largest file accepted (default: 20 MB)")
    v.add_argument("--max-images", type=int, default=16, help="images per request")
    v.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take to arrive, and to wait for the model")
    g = v.add_argument_group("trust (single-label models; a request's ?reject= and ?coverage= override these)")
    g.add_argument("--reject", metavar="auto|P", help="answer 'unknown' for an image whose highest probability "
                   "(its score) is below P; auto: the threshold that keeps 95%% of the validation images")
    g.add_argument("--coverage", type=float, metavar="C", help="also answer each image's prediction set, holding "
                   "the true class with probability C (split conformal prediction)")
    return v


def add_compare(commands, name: str) -> argparse.ArgumentParser:
    c = _command(commands, name, "put the settings and metrics of runs side by side",
                 "  headstart compare runs/a runs/b runs/c\n  headstart compare runs/* --output cmp.csv")
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders written by 'headstart train'")
    c.add_argument("--output", type=Path, metavar="FILE.csv",
                   help="also write the table as CSV, and beside it an HTML page (FILE.html)")
    c.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    return c
