"""``headstart predict`` and ``headstart evaluate``: a trained model on new images.

``predict`` takes either kind of model, a run folder (PyTorch) or a file written by
``headstart export`` (ONNX Runtime only, so a deployment installs neither PyTorch nor
scikit-learn). Its predictions stream, one image at a time, from the model to a table on
stdout or a CSV or JSON file: 100,000 images never sit in memory at once.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .._console import Console
from .._io import atomic_path, write_json
from ..errors import ExitStatus, UsageError
from .parser import check_output

__all__ = ["predict_command", "evaluate_command"]


def predict_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..data.images import collect_images

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1. Got {args.top_k} instead.")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be in [0, 1]. Got {args.threshold} instead.")
    check_output(args.output, args.overwrite, (".csv", ".json"))
    clf = _open(args, console)
    if args.threshold is not None and not clf.multi_label_:
        raise UsageError(f"--threshold applies to multi-label models; {args.model} predicts one class per image")
    paths = collect_images(args.paths)
    console.info(f"predicting {len(paths)} image(s) with {args.model}")
    top_k = min(args.top_k, len(clf.classes_))
    if clf.multi_label_:
        thresholds = clf.thresholds_ if args.threshold is None else np.full(len(clf.classes_), args.threshold)
        rows = _label_set_rows(clf, paths, thresholds, args.batch_size, args.tta, console)
    else:
        rows = _prediction_rows(clf, paths, top_k, args.batch_size, args.tta, console)
    if args.output is None:
        count, failed = _print_table(rows, console)
    elif args.output.suffix.lower() == ".csv":
        count, failed = (_write_label_sets_csv(rows, args.output, clf.classes_) if clf.multi_label_
                         else _write_predictions_csv(rows, args.output, top_k))
    else:
        count, failed = _write_predictions_json(rows, args.output)
    where = f", written to {args.output}" if args.output else ""
    console.info(f"{count} prediction(s){where}; {failed} image(s) could not be read")
    return ExitStatus.SUCCESS


def evaluate_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..evaluate import format_metrics

    check_output(args.output, args.overwrite, (".json",))
    if args.model.suffix == ".onnx":
        raise UsageError(f"evaluate takes a run folder, not {args.model}: evaluate the run it was exported from")
    if args.data is None and args.labels is None:
        raise UsageError("evaluate: give the labelled image folder DATA, or --labels CSV")
    clf = _open(args, console)
    metrics = clf.evaluate(args.data, tta=args.tta, labels=args.labels, label_sep=args.label_sep)
    for skipped in metrics["skipped"]:
        console.warn(f"skipping {skipped['path']}: {skipped['reason']}")
    console.result(format_metrics(metrics, title=f"{args.model} on {args.labels or args.data}"))
    if args.output:
        write_json(args.output, metrics)
        console.info(f"metrics written to {args.output}")
    return ExitStatus.SUCCESS


def _open(args: argparse.Namespace, console: Console):
    """The model of ``args.model`` (a run folder, or an exported file that runs with ONNX Runtime
    alone), a run folder's set to run on the chosen hardware."""
    from ..model import ImageClassifier, open_model

    clf = open_model(args.model, verbose=console.verbosity)
    if isinstance(clf, ImageClassifier):  # ONNX Runtime picks its own hardware: no such settings
        clf.set_params(device=args.device, precision=args.precision, workers=args.workers)
    return clf


def _prediction_rows(clf, paths: list[Path], top_k: int, batch_size: int, tta: bool,
                     console: Console) -> Iterator[dict]:
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


def _label_set_rows(clf, paths: list[Path], thresholds: np.ndarray, batch_size: int, tta: bool,
                    console: Console) -> Iterator[dict]:
    """A multi-label model's rows: the predicted label set, and every class's probability."""
    predictions = clf.iter_predict(paths, batch_size=batch_size, tta=tta)
    for p in console.progress(predictions, total=len(paths), desc="predict"):
        if p.probabilities is None:
            console.warn(f"cannot read {p.path}: {p.error}")
            yield {"path": str(p.path), "labels": None, "probabilities": None, "error": p.error}
            continue
        chosen = [c for c, q, t in zip(clf.classes_, p.probabilities, thresholds) if q >= t]
        yield {"path": str(p.path), "labels": chosen, "error": None,
               "probabilities": {c: round(float(q), 6) for c, q in zip(clf.classes_, p.probabilities)}}


def _write_label_sets_csv(rows: Iterator[dict], path: Path, classes: tuple[str, ...]) -> tuple[int, int]:
    """One row per image: its label set (``;``-separated) and one probability column per class."""
    count = failed = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels", *(f"p_{c}" for c in classes), "error"])
        for row in rows:
            count += 1
            failed += row["error"] is not None
            proba = row["probabilities"] or {}
            writer.writerow([row["path"], ";".join(row["labels"] or ()),
                             *(f"{proba[c]:.6f}" if c in proba else "" for c in classes), row["error"] or ""])
    return count, failed


def _print_table(rows: Iterator[dict], console: Console) -> tuple[int, int]:
    count = failed = 0
    for row in rows:
        count += 1
        if row["error"]:
            failed += 1
            console.result(f"{row['path']}\t-\t-\tERROR: {row['error']}")
            continue
        if "labels" in row:  # multi-label: the label set, then each class's probability
            shown = "  ".join(f"{c} {q:.3f}" for c, q in sorted(row["probabilities"].items(), key=lambda x: -x[1]))
            console.result(f"{row['path']}\t{';'.join(row['labels']) or '(none)'}\t{shown}")
            continue
        others = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top_k"][1:])
        console.result(f"{row['path']}\t{row['class']}\t{row['probability']:.4f}" + (f"\t{others}" if others else ""))
    return count, failed


def _write_predictions_csv(rows: Iterator[dict], path: Path, top_k: int) -> tuple[int, int]:
    """One row per image; the runners-up in their own columns, so any class name is safe."""
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
