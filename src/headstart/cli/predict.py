"""``headstart predict``: a trained model on new images.

``predict`` takes either kind of model, a run folder (PyTorch) or a file written by
``headstart export`` (run by its format's runtime alone, ONNX Runtime for ``.onnx``, so a
deployment installs neither PyTorch nor scikit-learn). Its predictions stream, one image at a time, from the model to a table on
stdout or a CSV or JSON file: 100,000 images never sit in memory at once.

Under torchrun each rank predicts a contiguous share of the images, in whole batches (so each
row is the one a single process computes), and rank 0 writes every row, in input order, to the
one output: a rank's rows are held in its memory until then (about 200 bytes an image).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._console import Console
from .._io import TEXT_ERRORS, atomic_path, csv_cell, json_line
from ..config import LABEL_SEP
from ..errors import DataError, ExitStatus, UsageError
from ..trust import TrustPolicy, reject_option
from .parser import check_output

__all__ = ["predict_command", "open_predictor"]


def predict_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1. Got {args.top_k} instead.")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be in [0, 1]. Got {args.threshold} instead.")
    if distributed.is_main():
        check_output(args.output, args.overwrite, (".csv", ".json"))
    reject = reject_option(args.reject, "--reject")
    if args.explain is not None and args.explain.exists() and not args.explain.is_dir():
        raise UsageError(f"--explain {args.explain}: expected a folder, and it is a file")
    clf = open_predictor(args, console)
    if args.threshold is not None and not clf.multi_label_:
        raise UsageError(f"--threshold applies to multi-label models; {args.model} predicts one class per image")
    trust = TrustPolicy.of(clf.head_, clf.classes_, reject, args.coverage, ("--reject", "--coverage"))
    if args.explain is not None and not hasattr(clf, "explain"):
        raise UsageError(f"--explain needs a run folder (PyTorch): {args.model}, an exported model, outputs "
                         "probabilities alone")
    with tempfile.TemporaryDirectory(prefix="headstart-") as downloads:
        # Every rank takes rank 0's inputs: the same images, in the same order, shared out.
        inputs = distributed.broadcast(_inputs(args.paths, Path(downloads)) if distributed.is_main() else None)
        if all(i.path is None for i in inputs):  # nothing to predict is a user error, not a table of errors
            first = inputs[0]
            raise DataError(first.error if first.name in first.error else f"{first.error}: {first.name}")
        console.info(f"predicting {len(inputs)} image(s) with {args.model}")
        top_k = min(args.top_k, len(clf.classes_))
        if clf.multi_label_:
            thresholds = clf.thresholds_ if args.threshold is None else np.full(len(clf.classes_), args.threshold)
            describe = _label_set(clf.classes_, thresholds)
        else:
            describe = _top_k(clf.classes_, top_k, trust)
        rows = _prediction_rows(clf, list(distributed.shard(inputs, args.batch_size)), describe, args.batch_size,
                                args.tta, console)
        if distributed.world().size > 1:
            shares = distributed.gather_objects(list(rows))
            if not distributed.is_main():
                return ExitStatus.SUCCESS
            rows = (row for share in shares for row in share)
        rows = _warn_unreadable(rows, console)
        if args.output is None:
            count, failed = _print_table(rows, console)
        elif args.output.suffix.lower() == ".csv":
            count, failed = (_write_label_sets_csv(rows, args.output, clf.classes_) if clf.multi_label_
                             else _write_predictions_csv(rows, args.output, top_k, trust))
        else:
            count, failed = _write_predictions_json(rows, args.output)
        if args.explain is not None:
            _write_maps(clf, [i.path for i in inputs if i.path is not None], args, console)
    where = f", written to {args.output}" if args.output else ""
    console.info(f"{count - failed} prediction(s){where}; {failed} image(s) could not be read")
    # One row per input; the status says whether anything at all could be predicted.
    return ExitStatus.DATA if failed == count else ExitStatus.SUCCESS


@dataclass(frozen=True)
class _Input:
    """One row to come: the name it is shown under, the file to read, or why there is none."""

    name: str
    path: Path | None
    error: str | None = None


def _inputs(arguments: list[str], downloads: Path) -> list[_Input]:
    """Files as given (a missing one becomes an error row), folders as their images (recursive,
    sorted; image-like files that cannot be used, such as SVG, become error rows with the reason),
    URLs downloaded into ``downloads``."""
    from ..data.download import download, is_url
    from ..data.images import IMAGE_EXTENSIONS, image_files

    inputs = []
    for argument in arguments:
        if is_url(argument):
            try:
                inputs.append(_Input(argument, download(argument, downloads)))
            except DataError as exc:
                inputs.append(_Input(argument, None, str(exc)))
            continue
        path = Path(argument)
        if path.is_dir():
            unusable: dict[Path, str] = {}
            found = image_files(path, unusable)
            skipped = [_Input(str(p), None, f"skipped: {reason}") for p, reason in unusable.items()]
            inputs += [_Input(str(p), p) for p in found] + skipped or [
                _Input(argument, None, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {argument}")]
        elif path.exists():
            inputs.append(_Input(argument, path))
        else:
            inputs.append(_Input(argument, None, "no such file or folder"))
    return inputs


def open_predictor(args: argparse.Namespace, console: Console):
    """The model of ``args.model`` (a run folder, or an exported file that its format's runtime
    runs alone), a run folder's set to run on the chosen hardware."""
    from ..model import ImageClassifier, open_model

    clf = open_model(args.model, verbose=console.verbosity)
    if isinstance(clf, ImageClassifier):  # an exported model's runtime picks its own hardware
        clf.set_params(device=args.device, precision=args.precision, workers=args.workers)
    return clf


def _prediction_rows(clf, inputs: list[_Input], describe, batch_size: int, tta: bool,
                     console: Console) -> Iterator[dict]:
    """One row per input, in order; the model sees only the inputs there is a file for.
    ``describe(probabilities)`` gives a readable image's columns."""
    readable = [i.path for i in inputs if i.path is not None]
    predictions = iter(clf.iter_predict(readable, batch_size=batch_size, tta=tta))
    for item in console.progress(inputs, total=len(inputs), desc="predict"):
        p = next(predictions) if item.path is not None else None
        error = item.error if p is None else p.error
        if p is None or p.probabilities is None:
            yield {"path": item.name, "class": None, "probability": None, "top_k": [], "error": error}
            continue
        yield {"path": item.name, **describe(p.probabilities), "error": None}


def _top_k(classes: tuple[str, ...], k: int, trust: TrustPolicy = TrustPolicy()):
    """A single-label model's columns: the most probable class (``unknown`` when ``--reject``
    rejects the image, whose score is then a column of its own), the ``k`` most probable, and
    with ``--coverage`` the prediction set, most probable first."""
    from ..trust import UNKNOWN

    def describe(probabilities: np.ndarray) -> dict:
        order = probabilities.argsort()[::-1]
        top = [{"class": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order[:k]]
        row = {"class": top[0]["class"], "probability": top[0]["probability"], "top_k": top}
        judged = trust.judge(probabilities)
        if trust.threshold is not None:
            row.update({"class": UNKNOWN if judged.unknown else row["class"], "score": round(judged.score, 6)})
        if judged.chosen is not None:
            row["set"] = [classes[i] for i in judged.chosen]
        return row

    return describe


def _label_set(classes: tuple[str, ...], thresholds: np.ndarray):
    """A multi-label model's columns: the predicted label set, and every class's probability."""
    def describe(probabilities: np.ndarray) -> dict:
        return {"labels": [c for c, q, t in zip(classes, probabilities, thresholds) if q >= t],
                "probabilities": {c: round(float(q), 6) for c, q in zip(classes, probabilities)}}

    return describe


def _warn_unreadable(rows: Iterator[dict], console: Console) -> Iterator[dict]:
    """The rows, as they go, each unreadable input named in a warning (on rank 0, for every rank's rows)."""
    for row in rows:
        if row["error"]:
            console.warn(f"cannot read {row['path']}: {row['error']}")
        yield row


def _write_label_sets_csv(rows: Iterator[dict], path: Path, classes: tuple[str, ...]) -> tuple[int, int]:
    """One row per image: its label set (``;``-separated) and one probability column per class."""
    count = failed = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
        writer = csv.writer(f)
        writer.writerow([csv_cell(c) for c in ("path", "labels", *(f"p_{c}" for c in classes), "error")])
        for row in rows:
            count += 1
            failed += row["error"] is not None
            proba = row.get("probabilities") or {}
            writer.writerow([csv_cell(v) for v in (row["path"], LABEL_SEP.join(row.get("labels") or ()),
                                                   *(f"{proba[c]:.6f}" if c in proba else "" for c in classes),
                                                   row["error"] or "")])
    return count, failed

def _print_table(rows: Iterator[dict], console: Console) -> tuple[int, int]:
    count = failed = 0
    for row in rows:
        count += 1
        if row["error"]:
            failed += 1
            console.result(f"{row['path']}\t-\t-\tERROR: {row['error']}")
            continue
        # Every class and probability its own tab-separated cell, as `cut -f` and spreadsheets read them.
        if "labels" in row:  # multi-label: the label set, then each class and its probability
            ranked = sorted(row["probabilities"].items(), key=lambda x: -x[1])
            shown = "".join(f"\t{c}\t{q:.4f}" for c, q in ranked)
            console.result(f"{row['path']}\t{LABEL_SEP.join(row['labels']) or '(none)'}{shown}")
            continue
        others = "".join(f"	{t['class']}	{t['probability']:.4f}" for t in row["top_k"][1:])
        trust = "".join(f"	{name} {_trust_cell(row, name) or '(none)'}" for name in ("score", "set") if name in row)
        console.result(f"{row['path']}	{row['class']}	{row['probability']:.4f}{trust}{others}")
    return count, failed


def _write_predictions_csv(rows: Iterator[dict], path: Path, top_k: int, trust: TrustPolicy = TrustPolicy()
                           ) -> tuple[int, int]:
    """One row per image; the runners-up in their own columns, so any class name is safe; with
    ``--reject`` the score, with ``--coverage`` the prediction set (``;``-separated)."""
    count = failed = 0
    ranks = range(2, top_k + 1)
    extra = [name for name, asked in (("score", trust.threshold), ("set", trust.quantile)) if asked is not None]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "probability", *extra, *(f"{c}_{k}" for k in ranks
                                                                  for c in ("class", "probability")), "error"])
        for row in rows:
            count += 1
            failed += row["error"] is not None
            cells = [(t["class"], f"{t['probability']:.6f}") for t in row["top_k"]]
            cells += [("", "")] * (top_k - len(cells))
            first = (row["class"] or "", cells[0][1])
            writer.writerow([csv_cell(v) for v in (row["path"], *first, *(_trust_cell(row, name) for name in extra),
                                                   *(v for pair in cells[1:] for v in pair), row["error"] or "")])
    return count, failed


def _trust_cell(row: dict, name: str) -> str:
    """The score or the prediction set of a row, as a CSV cell (empty for an image that failed)."""
    if name not in row:
        return ""
    return f"{row['score']:.6f}" if name == "score" else LABEL_SEP.join(row["set"])


def _write_maps(clf, paths: list[Path], args: argparse.Namespace, console: Console) -> None:
    """Each readable image's network input with its class activation map over it, as a PNG in
    ``--explain`` (named after the image; ``-2``, ``-3``... when names repeat)."""
    import warnings

    from PIL import Image

    from ..trust.cam import overlays

    folder = args.explain
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = 0
    for start in console.progress(range(0, len(paths), args.batch_size), desc="explain (batches)"):
        chunk = paths[start:start + args.batch_size]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # predict has already named each unreadable image
            pictures = overlays(clf, chunk, args.batch_size)
        for path, picture in zip(chunk, pictures):
            if picture is None:
                continue
            name = _free_name(path.stem, taken)
            target = folder / f"{name}.png"
            if target.exists() and not args.overwrite:
                raise UsageError(f"--explain {target} exists: choose another folder or pass --overwrite")
            with atomic_path(target) as tmp:
                Image.fromarray(picture).save(tmp, format="PNG")
            written += 1
    console.info(f"{written} class activation map(s) written to {folder}")


def _free_name(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... the first not in ``taken`` (which it joins)."""
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return name


def _write_predictions_json(rows: Iterator[dict], path: Path) -> tuple[int, int]:
    count = failed = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        # Streamed item by item, so 100,000 predictions never sit in memory at once.
        f.write("[")
        for row in rows:
            f.write(("," if count else "") + "\n  " + json_line(row))
            count += 1
            failed += row["error"] is not None
        f.write("\n]\n")
    return count, failed
