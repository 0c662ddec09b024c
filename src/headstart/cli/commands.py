"""The commands around a model: ``inspect`` and ``backbones`` before training, ``report``,
``export`` and ``serve`` after it, and ``cache`` for the features they share.

Each handler reads its options and hands over to the module that does the work; what is
left here is what only a command line needs: default output paths, refusals before any
work, and the lines printed.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .._console import Console
from ..errors import ExitStatus, UsageError
from .parser import check_output

if TYPE_CHECKING:
    from ..data.dataset import DatasetSplit

__all__ = ["inspect_command", "backbones_command", "report_command", "cache_command", "export_command",
           "serve_command", "compare_command"]


def inspect_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..features.cache import CacheLayout
    from ..features.pipeline import check_backbone
    from ..inspection import InspectSettings, inspect_folder, load_split, summary_lines, write_inspection
    from ..record import label_root
    from ..runfolder import new_run_dir, prepare_output_dir

    settings = InspectSettings(backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                               engine=args.engine, near_duplicate=args.near_duplicate, folds=args.folds,
                               device=args.device, workers=args.workers)
    check_backbone(settings.feature_request, CacheLayout(args.cache_dir))
    split = load_split(label_root(args.data, args.labels), args.labels, args.label_sep)
    if split.label_file is not None:
        console.warn_each([str(s) for s in split.skipped])
    out = _outside_data(args.out or new_run_dir("inspect-"), split, args.data, "inspected")
    out = prepare_output_dir(out, args.overwrite)
    with CacheLayout(args.cache_dir).in_use():
        result = inspect_folder(split, settings, cache_dir=args.cache_dir, console=console)
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


def backbones_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..config import AUTO_BACKBONE, TrainingConfig
    from ..data.labels import load_split
    from ..features.cache import CacheLayout
    from ..record import label_root
    from ..runfolder import new_run_dir, prepare_output_dir
    from ..selection import parse_candidates, require_validation, survey_backbones
    from ..selection.page import survey_table, write_survey

    # The head's settings, checked as train checks them; each candidate replaces the backbone.
    config = TrainingConfig(backbone=AUTO_BACKBONE, candidates=args.candidates, time_budget=args.time_budget,
                            image_size=args.image_size, engine=args.engine, class_weight=args.class_weight,
                            val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                            device=args.device, workers=args.workers)
    cache = CacheLayout(args.cache_dir)
    candidates = parse_candidates(config.candidates, "--backbone", config.image_size, cache)
    # The split train draws, to the image.
    split = load_split(label_root(args.data, args.labels), args.labels, args.label_sep, config.val_fraction,
                       config.test_fraction, config.seed)
    console.warn_each([str(s) for s in split.skipped])
    require_validation(split)
    out = prepare_output_dir(_outside_data(args.out or new_run_dir("backbones-"), split, args.data, "read"),
                             args.overwrite)
    console.info(f"comparing {len(candidates)} backbones on {split.root}: {split.sizes()} "
                 "(test images left out)")
    with cache.in_use():
        survey = survey_backbones(split, candidates, config, cache, console)
    console.result(survey_table(survey))
    console.result(f"best: {survey.reason}")
    for path in write_survey(survey, out):
        console.result(str(path))
    chosen = survey.chosen.candidate
    console.info(f"train with it: headstart train ... --backbone {chosen.name}"
                 + (f" --weights {chosen.weights}" if chosen.weights else ""))
    return ExitStatus.SUCCESS


def _outside_data(out: Path, split: DatasetSplit, data: Path | None, verb: str) -> Path:
    """``out``, refused when it lies inside the image folder: what is written there would be
    ``verb`` as images next time. A label file's images are only those it lists."""
    if split.label_file is None and out.resolve().is_relative_to(split.root.resolve()):
        raise UsageError(f"--out {out} is inside DATA ({data}): its files would be {verb} next "
                         "time; choose a folder outside it")
    return out


def report_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..model import load
    from ..report.page import write_report

    console.result(str(write_report(args.run, explainer=lambda: load(args.run, verbose=0))))
    return ExitStatus.SUCCESS


def cache_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..features.cache import CacheLayout

    cache = CacheLayout(args.cache_dir)
    if args.action == "clear":
        freed = cache.clear()
        console.result(f"cleared {cache.root} ({freed / 1e6:.1f} MB)")
        return ExitStatus.SUCCESS
    entries = cache.summary()
    console.result(f"feature cache: {cache.root}")
    if not entries:
        console.result("  empty")
    for e in entries:
        console.result(f"  {e['architecture']} {e['image_size']} px, engine {e['engine']}: "
                       f"{e['features']} features, {e['bytes'] / 1e6:.1f} MB  ({e['folder']})")
    for name, (count, size) in cache.extras().items():
        if count:
            console.result(f"  {name}: {count}, {size / 1e6:.1f} MB")
    return ExitStatus.SUCCESS


def export_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..export import format_named
    from ..export.files import record_export
    from ..model import load
    from ..record import split_images
    from ..runfolder import MODEL_FILE

    fmt = format_named(args.format)
    if args.int8 and fmt.quantizer is None:
        raise UsageError(f"--int8: --format {fmt.name} has no int8 quantization; export without --int8")
    out = args.output or (args.model / MODEL_FILE).with_suffix(fmt.suffix)
    int8_out = out.with_suffix(".int8" + fmt.suffix)
    check_output(out, args.overwrite, (fmt.suffix,))
    for path in fmt.files(out)[1:] + (fmt.files(int8_out) if args.int8 else []):
        check_output(path, args.overwrite, (path.suffix,), flag=f"--output's {path.suffix} file")
    clf = load(args.model, verbose=console.verbosity)
    if args.int8 and clf.multi_label_:
        raise UsageError("--int8 is not available for multi-label models yet: its check measures accuracy "
                         "of one class per image; export without --int8")
    val = split_images(args.model, "val", clf.classes_)
    if not val:
        raise UsageError(f"no validation images of {args.model} found to check the export on "
                         "(was the data folder moved?)")
    # The run's held-out photos: validation, and test where the run has a test split.
    check = {"val": val[: args.check_images]}
    test = split_images(args.model, "test", clf.classes_)
    if test:
        check["test"] = test[: args.check_images]
    fmt.export(clf, out, check, console, force=args.force)
    console.result(str(out))
    if args.int8:
        console.info(f"{out} is the fp32 model; its int8 copy goes to {int8_out}")
        train = split_images(args.model, "train", clf.classes_)
        # A fixed seed: the same run calibrates the same way, and so quantizes to the same file.
        calibration = [p for p, _ in random.Random(0).sample(train, min(len(train), args.calibration_images))]
        report = fmt.quantizer(out, int8_out, calibration, [p for p, _ in val], [label for _, label in val],
                               math.inf if args.force else args.max_drop, console)
        if report.drop_points > args.max_drop:
            console.warn(f"int8 loses {report.drop_points:.2f} points of validation accuracy (--max-drop "
                         f"{args.max_drop:g}): {int8_out} written anyway (--force)")
        record_export(int8_out, report.entry(fmt.name, args.max_drop))
        console.result(str(int8_out))
    console.info(f"predict with: headstart predict {out} IMAGES...   (needs only {fmt.runtime})")
    return ExitStatus.SUCCESS


def serve_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..model import open_model
    from ..serve import ServeConfig, serve
    from ..trust import TrustPolicy, reject_option

    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
                         max_images=args.max_images, timeout_s=args.timeout,
                         reject=reject_option(args.reject, "--reject"), coverage=args.coverage)
    predictor = open_model(args.model)
    # What the model cannot do is said now, in the options' names, not in every request's answer.
    TrustPolicy.of(predictor.head_, predictor.classes_, config.reject, config.coverage, ("--reject", "--coverage"))
    _check_listen(args.host, args.port)  # a port in use is said now, not after the server's own retries
    console.info(f"serving {args.model} on http://{args.host}:{args.port}/  (API docs: /docs; Ctrl-C stops)")
    serve(predictor, args.host, args.port, config, source=args.model)
    return ExitStatus.SUCCESS


def _check_listen(host: str, port: int) -> None:
    """Refuse a host and port this process cannot listen on (in use, not ours, no such address)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind(address)
    except OSError as exc:
        raise UsageError(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}") from None


def compare_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..compare import compare_runs, comparison_csv, comparison_html, comparison_text

    check_output(args.output, args.overwrite, (".csv",))
    html = args.output.with_suffix(".html") if args.output else None
    check_output(html, args.overwrite, (".html",), flag="--output's page")
    comparison = compare_runs(args.runs)
    console.result(comparison_text(comparison))
    if args.output:
        comparison_csv(comparison, args.output)
        comparison_html(comparison, html)
        console.info(f"written to {args.output} and {html}")
    return ExitStatus.SUCCESS
