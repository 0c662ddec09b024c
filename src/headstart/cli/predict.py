"""``headstart predict`` and ``headstart evaluate``: a trained model on new images.

``predict`` takes either kind of model, a run folder (PyTorch) or a file written by
``headstart export`` (ONNX Runtime only, so a deployment installs neither PyTorch nor
scikit-learn). Its predictions stream, one image at a time, from the model to a table on
stdout or a CSV or JSON file: 100,000 images never sit in memory at once.

Under torchrun each rank predicts a contiguous share of the images, in whole batches (so each
row is the one a single process computes), and rank 0 writes every row, in input order, to the
one output: a rank's rows are held in its memory until then (about 200 bytes an image).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from pathlib import Path

from .._console import Console
from .._io import atomic_path, write_json
from ..errors import ExitStatus, UsageError
from .parser import check_output

__all__ = ["predict_command", "evaluate_command"]


def predict_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed
    from ..data.images import collect_images

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1. Got {args.top_k} instead.")
    if distributed.is_main():
        check_output(args.output, args.overwrite, (".csv", ".json"))
    clf = _open(args, console)
    # Every rank takes rank 0's list: the same images, in the same order, shared out.
    paths = distributed.broadcast(collect_images(args.paths) if distributed.is_main() else None)
    console.info(f"predicting {len(paths)} image(s) with {args.model}")
    top_k = min(args.top_k, len(clf.classes_))
    rows = _prediction_rows(clf, list(distributed.shard(paths, args.batch_size)), top_k, args.batch_size, args.tta,
                            console)
    if distributed.world().size > 1:
        shares = distributed.gather_objects(list(rows))
        if not distributed.is_main():
            return ExitStatus.SUCCESS
        rows = (row for share in shares for row in share)
    rows = _warn_unreadable(rows, console)
    if args.output is None:
        count, failed = _print_table(rows, console)
    elif args.output.suffix.lower() == ".csv":
        count, failed = _write_predictions_csv(rows, args.output, top_k)
    else:
        count, failed = _write_predictions_json(rows, args.output)
    where = f", written to {args.output}" if args.output else ""
    console.info(f"{count} prediction(s){where}; {failed} image(s) could not be read")
    return ExitStatus.SUCCESS


def evaluate_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed
    from ..evaluate import format_metrics

    if distributed.is_main():
        check_output(args.output, args.overwrite, (".json",))
    if args.model.suffix == ".onnx":
        raise UsageError(f"evaluate takes a run folder, not {args.model}: evaluate the run it was exported from")
    clf = _open(args, console)
    metrics = clf.evaluate(args.data, tta=args.tta)  # each rank predicts its share; all get the metrics
    if not distributed.is_main():
        return ExitStatus.SUCCESS
    console.result(format_metrics(metrics, title=f"{args.model} on {args.data}"))
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
            yield {"path": str(p.path), "class": None, "probability": None, "top_k": [], "error": p.error}
            continue
        order = p.probabilities.argsort()[::-1][:top_k]
        top = [{"class": clf.classes_[i], "probability": round(float(p.probabilities[i]), 6)} for i in order]
        yield {"path": str(p.path), "class": top[0]["class"], "probability": top[0]["probability"],
               "top_k": top, "error": None}


def _warn_unreadable(rows: Iterator[dict], console: Console) -> Iterator[dict]:
    for row in rows:
        if row["error"]:
            console.warn(f"cannot read {row['path']}: {row['error']}")
        yield row


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
