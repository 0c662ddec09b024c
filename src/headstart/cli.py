"""The ``headstart`` command: arguments in, an :class:`ExitStatus` out.

``main(argv)`` never calls ``sys.exit`` and never lets a user error escape as a
traceback: it prints ``headstart: error: ...`` on one line and returns the
error's status. ``--traceback`` shows the stack for bug reports.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gc
import json
import random
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__
from ._console import Console
from .config import AUGMENTATIONS, CLASS_WEIGHTS, ENGINES, PRECISIONS, WORKFLOWS, TrainingConfig
from .errors import ExitStatus, HeadstartError, UsageError

__all__ = ["main", "run", "build_parser"]


_DEFAULT = TrainingConfig()  # the options' defaults are the configuration's: one place


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors reported in headstart's one-line form."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{self.prog}: {message}")


def _unfreeze(value: str) -> int | None:
    if value == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or 'all', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 block, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="headstart", description="Transfer learning for image folders: a pretrained "
                     "backbone, frozen, with a new head trained on your images.")
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print results and errors only")
    parser.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    t = commands.add_parser("train", help="train a classifier on a folder of images, one subfolder per class")
    t.add_argument("data", type=Path, metavar="DATA", nargs="?", help="image folder: one subfolder per "
                   "class, or train/ and val/ (or validation/) split folders, optionally test/")
    t.add_argument("--out", type=Path, help="run folder to write (default: runs/<timestamp>)")
    t.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    t.add_argument("--resume", type=Path, metavar="RUN", help="finish an interrupted run, from its last "
                   "completed epoch, with the settings it was started with")
    g = t.add_argument_group("backbone")
    g.add_argument("--backbone", default=_DEFAULT.backbone,
                   help="efficientnet_lite0/1/2 (embedded weights, no download) or any timm model name")
    g.add_argument("--weights", metavar="FILE", help="local weights (.safetensors, or a .pth state_dict)")
    g.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the backbone's own)")
    g = t.add_argument_group("stage 1: the head on the frozen backbone")
    g.add_argument("--workflow", choices=WORKFLOWS, default=_DEFAULT.workflow,
                   help="lightweight: backbone features computed once (cached), head fitted on them in "
                   "seconds; standard: the whole model runs on every batch, with augmentation; "
                   "auto (default): lightweight, plus fine-tuning on a GPU")
    g.add_argument("--engine", choices=ENGINES, default=_DEFAULT.engine,
                   help="lightweight: what runs the backbone (auto: ONNX Runtime on a CPU, "
                   "mixed precision on a GPU)")
    g.add_argument("--flip-features", action="store_true",
                   help="lightweight: add the mirror images' features as training samples")
    g.add_argument("--class-weight", choices=[w for w in CLASS_WEIGHTS if w], default=_DEFAULT.class_weight,
                   help="weight classes inversely to their frequency, for imbalanced data")
    g.add_argument("--cache-dir", type=Path, help="where features are cached (default: the user cache folder)")
    g.add_argument("--epochs", type=int, default=_DEFAULT.epochs, help="standard workflow: epochs of stage 1")
    g.add_argument("--lr", type=float, default=_DEFAULT.lr)
    g.add_argument("--weight-decay", type=float, default=_DEFAULT.weight_decay)
    g.add_argument("--batch-size", type=int, default=_DEFAULT.batch_size)
    g.add_argument("--label-smoothing", type=float, default=_DEFAULT.label_smoothing)
    g.add_argument("--augment", choices=AUGMENTATIONS, default=_DEFAULT.augment)
    g.add_argument("--dropout", type=float, default=_DEFAULT.dropout)
    g.add_argument("--patience", type=int, default=_DEFAULT.patience, help="early stopping on validation loss (0: off)")
    g = t.add_argument_group("stage 2: fine-tuning (kept only if validation improves)")
    g.add_argument("--fine-tune-epochs", type=int, default=_DEFAULT.fine_tune_epochs, metavar="N",
                   help="0 skips it (default: 2 on a GPU with --workflow auto, else 0)")
    g.add_argument("--fine-tune-lr", type=float, default=_DEFAULT.fine_tune_lr)
    g.add_argument("--unfreeze-last", type=_unfreeze, default=_DEFAULT.unfreeze_last, metavar="K|all",
                   help="unfreeze the last K blocks of the backbone, or all (default)")
    g = t.add_argument_group("data and hardware")
    g.add_argument("--val-fraction", type=float, default=_DEFAULT.val_fraction, help="used when DATA has no val/ folder")
    g.add_argument("--test-fraction", type=float, default=_DEFAULT.test_fraction, help="used when DATA has no test/ folder")
    g.add_argument("--seed", type=int, default=_DEFAULT.seed)
    _add_hardware(g)

    p = commands.add_parser("predict", help="classify images with a trained model")
    p.add_argument("model", type=Path, metavar="RUN|MODEL.onnx",
                   help="a run folder written by 'headstart train', or a file written by 'headstart export'")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--top-k", type=int, default=1, metavar="K")
    p.add_argument("--output", type=Path, metavar="FILE", help="write predictions to FILE (.csv or .json)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tta", action="store_true", help="average with the mirror image's prediction")
    _add_hardware(p)

    r = commands.add_parser("report", help="rebuild a run's report.html (metrics, plots, mistakes) from its files")
    r.add_argument("run", type=Path, metavar="RUN", help="a run folder written by 'headstart train'")

    c = commands.add_parser("cache", help="show or clear the lightweight workflow's feature cache")
    c.add_argument("action", choices=("info", "clear"))
    c.add_argument("--cache-dir", type=Path, help="the cache folder (default: the user cache folder)")

    x = commands.add_parser("export", help="export a trained model as one self-describing ONNX file")
    x.add_argument("model", type=Path, metavar="RUN", help="a run folder written by 'headstart train'")
    x.add_argument("--format", choices=("onnx",), default="onnx")
    x.add_argument("--out", type=Path, metavar="FILE", help="the file to write (default: RUN/model.onnx)")
    x.add_argument("--overwrite", action="store_true", help="allow replacing an existing file")
    x.add_argument("--check-images", type=int, default=200, metavar="N",
                   help="validation images to check parity on (default: 200)")
    x.add_argument("--int8", action="store_true", help="also write MODEL.int8.onnx, statically quantized "
                   "with ONNX Runtime and calibrated on training images")
    x.add_argument("--max-drop", type=float, default=0.5, metavar="POINTS",
                   help="refuse the int8 model if it loses more validation accuracy (default: 0.5)")
    x.add_argument("--calibration-images", type=int, default=100, metavar="N")

    v = commands.add_parser("serve", help="serve a model over HTTP: an API and a web page")
    v.add_argument("model", type=Path, metavar="RUN|MODEL.onnx")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--max-batch", type=int, default=32, help="images per forward pass, across requests")
    v.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long an image waits for others to batch with (0: no micro-batching)")
    v.add_argument("--max-upload-mb", type=float, default=20.0)
    v.add_argument("--max-images", type=int, default=16, help="images per request")
    v.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for the model")

    e = commands.add_parser("evaluate", help="measure a trained model on a labelled image folder")
    e.add_argument("model", type=Path, metavar="RUN")
    e.add_argument("data", type=Path, metavar="DATA", help="one subfolder per class (with split "
                   "folders, test/ is used, else val/)")
    e.add_argument("--output", type=Path, metavar="FILE", help="also write the metrics as JSON")
    e.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    e.add_argument("--tta", action="store_true", help="average with the mirror image's prediction")
    _add_hardware(e)

    from .inspection import InspectSettings  # light: the options' defaults live there, in one place

    i_default = InspectSettings()
    i = commands.add_parser("inspect", help="find unreadable, duplicated, leaked and likely mislabelled images")
    i.add_argument("data", type=Path, metavar="DATA", help="image folder: one subfolder per class, or "
                   "train/ and val/ (or validation/) split folders, optionally test/")
    i.add_argument("--out", type=Path, help="folder for inspect.csv and inspect.html "
                   "(default: runs/inspect-<timestamp>; never inside DATA)")
    i.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    i.add_argument("--backbone", default=i_default.backbone,
                   help="the features compared (same as training's to reuse its cached features)")
    i.add_argument("--weights", metavar="FILE", help="local weights (.safetensors, or a .pth state_dict)")
    i.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the backbone's own)")
    i.add_argument("--engine", choices=ENGINES, default=i_default.engine, help="what runs the backbone")
    i.add_argument("--cache-dir", type=Path, help="where features are cached (default: the user cache folder)")
    i.add_argument("--near-duplicate", type=float, default=i_default.near_duplicate, metavar="SIM",
                   help=f"cosine similarity of features from which two images count as near-duplicates "
                   f"(default: {i_default.near_duplicate})")
    i.add_argument("--folds", type=int, default=i_default.folds,
                   help="cross-validation folds for the out-of-fold probabilities behind label errors")
    _add_hardware(i, precision=False)  # the engine sets the precision of feature extraction
    return parser


def _add_hardware(group, precision: bool = True) -> None:
    group.add_argument("--device", default=_DEFAULT.device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    if precision:
        group.add_argument("--precision", default=_DEFAULT.precision, choices=PRECISIONS,
                           help="auto: bf16 where the hardware runs it natively, else fp32 (fp16 on older GPUs)")
    group.add_argument("--workers", type=int, default=None, help="image decoding processes "
                       "(default: one per core, at most 4)")


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> ExitStatus:
    """Run the command line ``argv``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    console = console or Console()
    try:
        args = build_parser().parse_args(argv)
        if args.quiet:
            console.verbosity = 0
        return _COMMANDS[args.command](args, console)
    except HeadstartError as exc:
        if show_traceback:
            raise
        console.error(str(exc))
        return exc.exit_status
    except KeyboardInterrupt:
        console.error("interrupted")
        return ExitStatus.INTERRUPTED
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA_OF or show_traceback:
            raise
        console.error(f"this command needs {exc.name}: pip install 'headstart[{_EXTRA_OF[exc.name]}]'")
        return ExitStatus.USAGE
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a bug
        if show_traceback:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        console.error(f"cannot write or read{where}: {exc.strerror or exc}")
        return ExitStatus.IO
    except SystemExit as exc:  # --help and --version
        return ExitStatus(exc.code or 0)


# The modules an install may lack, and the extra of pyproject.toml that brings each.
_EXTRA_OF = {**dict.fromkeys(("torch", "torchvision", "timm", "sklearn", "scipy", "threadpoolctl", "safetensors",
                              "onnx", "platformdirs", "matplotlib"), "train"),
             **dict.fromkeys(("fastapi", "uvicorn", "multipart"), "serve")}


def run() -> None:
    """Console-script entry point."""
    status = main()
    # Every file is written and closed by now. At exit Python's last garbage collection
    # walks the millions of objects PyTorch, timm and SciPy created at import (1.5 s
    # measured); frozen objects are skipped, and nothing of ours waits on that collection.
    gc.freeze()
    sys.exit(int(status))


def _training_kwargs(args: argparse.Namespace) -> dict:
    from .model import ImageClassifier

    names = ImageClassifier().get_params()
    return {k: v for k, v in vars(args).items() if k in names and k != "verbose"}


def _default_run_dir(prefix: str = "") -> Path:
    stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / stamp, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path


def _train(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ._io import write_json
    from .checkpoint import CHECKPOINT_FILE, RUN_FILE
    from .model import ImageClassifier, prepare_output_dir

    if args.resume is not None:
        out = args.resume
        data, params = _read_run(out / RUN_FILE)
        clf = ImageClassifier(**params, verbose=console.verbosity)
    else:
        if args.data is None:
            raise UsageError("train: give the image folder DATA, or --resume RUN")
        data = args.data.resolve()
        clf = ImageClassifier(**_training_kwargs(args), verbose=console.verbosity)
        clf.training_config()  # a bad option fails before any work
        out = prepare_output_dir(args.out or _default_run_dir(), args.overwrite)
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # --overwrite starts afresh, never resumes
        write_json(out / RUN_FILE, clf.run_record(data))
    try:
        with _terminate_as_interrupt():
            clf.fit(data, console=console, checkpoint_dir=out)
    except KeyboardInterrupt:
        console.error(f"interrupted: {out} keeps the last completed epoch; "
                      f"continue with: headstart train --resume {out}")
        return ExitStatus.INTERRUPTED
    clf.save(out, overwrite=True)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    console.info(_summary(clf, out))
    return ExitStatus.SUCCESS


def _read_run(path: Path) -> tuple[Path, dict]:
    from .model import ImageClassifier

    if not path.is_file():
        raise UsageError(f"--resume: {path} not found: not a run folder written by 'headstart train'")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        data, params = Path(saved["data"]), dict(saved["params"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--resume: {path} is damaged ({exc})") from None
    unknown = set(params) - set(ImageClassifier().get_params())
    if unknown:
        raise UsageError(f"--resume: {path} has unknown settings: {', '.join(sorted(unknown))}")
    return data, params


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """``kill`` (SIGTERM) stops training like Ctrl-C: cleanly, with the last epoch kept."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary(clf, out: Path) -> str:
    m = clf.metrics_
    lines = ["", "done:"]
    if m["stage1"] and m["stage1"]["val_accuracy"] == m["stage1"]["val_accuracy"]:
        lines.append(f"  stage 1 (frozen backbone): val accuracy {m['stage1']['val_accuracy']:.2%}")
    if m["fine_tune"]:
        verdict = "kept" if m["fine_tune"]["kept"] else "not kept: stage-1 weights restored"
        lines.append(f"  fine-tuning: val accuracy {m['fine_tune']['val_accuracy']:.2%} ({verdict})")
    if "val" in m:
        lines.append(f"  final model: val accuracy {m['val']['accuracy']:.2%}")
    if "test" in m:
        lines.append(f"  final model: test accuracy {m['test']['accuracy']:.2%}")
    if m["skipped"]:
        lines.append(f"  {m['skipped']} file(s) skipped: see {out / 'skipped.csv'}")
    lines.append(f"  training time {m['train_seconds']:.0f} s; model saved in {out}")
    lines.append(f"  see what it learned: {out / 'report.html'}")
    lines.append(f"  predict with: headstart predict {out} IMAGES...")
    return "\n".join(lines)


def _load(args: argparse.Namespace, console: Console):
    from .runtime import OnnxClassifier, open_model

    clf = open_model(args.model, verbose=console.verbosity)
    if not isinstance(clf, OnnxClassifier):  # an exported model runs on ONNX Runtime: no such settings
        clf.set_params(device=args.device, precision=args.precision, workers=args.workers)
    return clf


def _check_output(path: Path | None, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"--output {path}: expected a file ending in {' or '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise UsageError(f"--output {path} exists: choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: folder {path.parent} does not exist")


def _predict(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .images import collect_images

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1. Got {args.top_k} instead.")
    _check_output(args.output, args.overwrite, (".csv", ".json"))
    clf = _load(args, console)
    paths = collect_images(args.paths)
    console.info(f"predicting {len(paths)} image(s) with {args.model}")
    rows = _prediction_rows(clf, paths, min(args.top_k, len(clf.classes_)), args.batch_size, args.tta, console)
    if args.output is None:
        count, failed = _print_table(rows, console)
    elif args.output.suffix.lower() == ".csv":
        count, failed = _write_predictions_csv(rows, args.output, min(args.top_k, len(clf.classes_)))
    else:
        count, failed = _write_predictions_json(rows, args.output)
    where = f", written to {args.output}" if args.output else ""
    console.info(f"{count} prediction(s){where}; {failed} image(s) could not be read")
    return ExitStatus.SUCCESS


def _prediction_rows(clf, paths, top_k: int, batch_size: int, tta: bool, console: Console) -> Iterator[dict]:
    predictions = clf.iter_predict(paths, batch_size=batch_size, tta=tta)
    for p in console.progress(predictions, total=len(paths), desc="predict"):
        if p.probabilities is None:
            console.warn(f"cannot read {p.path}: {p.error}")
            yield {"path": str(p.path), "class": None, "probability": None, "top_k": [], "error": p.error}
            continue
        order = p.probabilities.argsort()[::-1][:top_k]
        top = [{"class": clf.classes_[i], "probability": round(float(p.probabilities[i]), 6)} for i in order]
        yield {"path": str(p.path), "class": top[0]["class"], "probability": top[0]["probability"],
               "top_k": top, "error": None}


def _print_table(rows: Iterator[dict], console: Console) -> tuple[int, int]:
    count = failed = 0
    for row in rows:
        count += 1
        if row["error"]:
            failed += 1
            console.result(f"{row['path']}\t-\t-\tERROR: {row['error']}")
            continue
        others = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top_k"][1:])
        console.result(f"{row['path']}\t{row['class']}\t{row['probability']:.4f}" + (f"\t{others}" if others else ""))
    return count, failed


def _write_predictions_csv(rows: Iterator[dict], path: Path, top_k: int) -> tuple[int, int]:
    """One row per image; the runners-up in their own columns, so any class name is safe."""
    from ._io import atomic_path

    count = failed = 0
    ranks = range(2, top_k + 1)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "probability", *(f"{c}_{k}" for k in ranks
                                                          for c in ("class", "probability")), "error"])
        for row in rows:
            count += 1
            failed += row["error"] is not None
            cells = [(t["class"], f"{t['probability']:.6f}") for t in row["top_k"]]
            cells += [("", "")] * (top_k - len(cells))
            writer.writerow([row["path"], *cells[0], *(v for pair in cells[1:] for v in pair), row["error"] or ""])
    return count, failed


def _write_predictions_json(rows: Iterator[dict], path: Path) -> tuple[int, int]:
    from ._io import atomic_path

    count = failed = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        # Streamed item by item, so 100,000 predictions never sit in memory at once.
        f.write("[")
        for row in rows:
            f.write(("," if count else "") + "\n  " + json.dumps(row, ensure_ascii=False))
            count += 1
            failed += row["error"] is not None
        f.write("\n]\n")
    return count, failed


def _evaluate(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ._io import write_json
    from .evaluate import format_metrics

    _check_output(args.output, args.overwrite, (".json",))
    if args.model.suffix == ".onnx":
        raise UsageError(f"evaluate takes a run folder, not {args.model}: evaluate the run it was exported from")
    clf = _load(args, console)
    metrics = clf.evaluate(args.data, tta=args.tta)
    console.result(format_metrics(metrics, title=f"{args.model} on {args.data}"))
    if args.output:
        write_json(args.output, metrics)
        console.info(f"metrics written to {args.output}")
    return ExitStatus.SUCCESS


def _report(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .report import write_report

    console.result(str(write_report(args.run)))
    return ExitStatus.SUCCESS


def _inspect(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .features import backbone_on_record, default_cache_dir
    from .inspection import InspectSettings, inspect_folder, load_split, summary_lines, write_inspection
    from .model import prepare_output_dir

    settings = InspectSettings(backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                               engine=args.engine, near_duplicate=args.near_duplicate, folds=args.folds,
                               device=args.device, workers=args.workers)
    cache_dir = args.cache_dir or default_cache_dir()
    # A misspelt name fails before any work; a backbone on record was built before, and timm
    # (with PyTorch) is not imported for it.
    if backbone_on_record(cache_dir, settings.backbone, settings.weights, settings.image_size, settings.device,
                          settings.engine) is None:
        from .backbone import resolve_architecture

        resolve_architecture(settings.backbone)
    split = load_split(args.data)
    out = args.out or _default_run_dir("inspect-")
    if out.resolve().is_relative_to(split.root.resolve()):
        raise UsageError(f"--out {out} is inside DATA ({args.data}): its files would be inspected next "
                         "time; choose a folder outside it")
    out = prepare_output_dir(out, args.overwrite)
    result = inspect_folder(split, settings, cache_dir=cache_dir, console=console)
    leaks = [f for f in result.findings if f.leak]
    for finding in leaks[:10]:
        console.warn(f"{finding.kind.replace('_', ' ')} {finding.path}: {finding.detail}")
    if len(leaks) > 10:
        console.warn(f"{len(leaks) - 10} more duplicate(s) across splits or with conflicting labels")
    for line in summary_lines(result):
        console.result(line)
    for path in write_inspection(result, out):
        console.result(str(path))
    return ExitStatus.SUCCESS


def _cache(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .features import cache_extras, cache_summary, clear_cache, default_cache_dir

    root = args.cache_dir or default_cache_dir()
    if args.action == "clear":
        freed = clear_cache(root)
        console.result(f"cleared {root} ({freed / 1e6:.1f} MB)")
        return ExitStatus.SUCCESS
    entries = cache_summary(root)
    console.result(f"feature cache: {root}")
    if not entries:
        console.result("  empty")
    for e in entries:
        console.result(f"  {e['architecture']} {e['image_size']} px, engine {e['engine']}: "
                       f"{e['features']} features, {e['bytes'] / 1e6:.1f} MB  ({e['folder']})")
    for name, (count, size) in cache_extras(root).items():
        if count:
            console.result(f"  {name}: {count}, {size / 1e6:.1f} MB")
    return ExitStatus.SUCCESS


def _export(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .export import export_classifier, quantize_int8
    from .model import load

    out = args.out or args.model / "model.onnx"
    int8_out = out.with_suffix(".int8.onnx")
    _check_output(out, args.overwrite, (".onnx",))
    if args.int8:
        _check_output(int8_out, args.overwrite, (".onnx",))
    clf = load(args.model, verbose=console.verbosity)
    val = _split_images(args.model, "val", clf.classes_)
    if not val:
        raise UsageError(f"no validation images of {args.model} found to check the export on "
                         "(was the data folder moved?)")
    export_classifier(clf, out, [p for p, _ in val[: args.check_images]], console)
    console.result(str(out))
    if args.int8:
        train = _split_images(args.model, "train", clf.classes_)
        calibration = [p for p, _ in random.Random(0).sample(train, min(len(train), args.calibration_images))]
        quantize_int8(out, int8_out, calibration, [p for p, _ in val], [label for _, label in val],
                      args.max_drop, console)
        console.result(str(int8_out))
    console.info(f"predict with: headstart predict {out} IMAGES...   (needs only onnxruntime, numpy, pillow)")
    return ExitStatus.SUCCESS


def _split_images(run: Path, split: str, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, label) of one split of a run, from its split.csv and the data folder in run.json."""
    from .checkpoint import RUN_FILE

    split_file, run_file = run / "split.csv", run / RUN_FILE
    if not (split_file.is_file() and run_file.is_file()):
        return []
    root = Path(json.loads(run_file.read_text(encoding="utf-8"))["data"])
    with open(split_file, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and r["class"] in classes]
    return [(root / r["path"], classes.index(r["class"])) for r in rows if (root / r["path"]).is_file()]


def _serve(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .serve import ServeConfig, serve

    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
                         max_images=args.max_images, timeout_s=args.timeout)
    console.info(f"serving {args.model} on http://{args.host}:{args.port}/  (API docs: /docs; Ctrl-C stops)")
    serve(args.model, args.host, args.port, config)
    return ExitStatus.SUCCESS


_COMMANDS = {"train": _train, "predict": _predict, "evaluate": _evaluate, "cache": _cache, "report": _report,
             "export": _export, "serve": _serve, "inspect": _inspect}
