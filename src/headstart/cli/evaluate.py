"""``headstart evaluate``: a trained model (run folder or exported file) scored on labelled images.

The scoring itself, and what it leaves out, is :mod:`headstart.evaluate`'s; this handler refuses
outputs it would overwrite, warns about images that flatter the model, and prints the metrics.
Under torchrun each rank predicts its share and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse

from .._console import Console
from .._io import write_json
from ..errors import ExitStatus, UsageError
from .parser import check_output
from .predict import open_predictor

__all__ = ["evaluate_command"]


def evaluate_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed
    from ..evaluate import evaluate_folder, run_folder_of, seen_images
    from ..metrics import format_metrics

    if distributed.is_main():
        check_output(args.output, args.overwrite, (".json",))
        check_output(args.report, args.overwrite, (".html",), flag="--report")
    if args.data is None and args.labels is None:
        raise UsageError("evaluate: give the labelled image folder DATA, or --labels CSV")
    clf = open_predictor(args, console)
    if args.report and clf.multi_label_:
        raise UsageError(f"--report: the evaluation page is for single-label models; {args.model} is multi-label "
                         "(its metrics are printed, and --output writes them)")
    run = None if args.include_training_images else run_folder_of(args.model)
    seen = seen_images(run, clf.classes_) if run is not None else None
    if run is None and not args.include_training_images:
        console.info(f"{args.model} has no split.csv beside it: images it was trained on cannot be told apart")
    evaluation = evaluate_folder(clf, args.data, seen, tta=args.tta, batch_size=args.batch_size, console=console,
                                 labels=(args.labels, args.label_sep))  # each rank predicts its share
    if not distributed.is_main():
        return ExitStatus.SUCCESS
    console.warn_each([str(s) for s in evaluation.skipped], str(args.output or ""))
    if evaluation.left_out:
        console.warn(f"left out {evaluation.left_out} image(s) the model was trained on, or copies of them "
                     f"({run / 'split.csv'}): "
                     "their score would flatter it; --include-training-images scores them too")
    if evaluation.validated_on:
        console.warn(f"{evaluation.validated_on} of the scored images are the run's validation split, which "
                     "chose the model: their score is slightly optimistic")
    console.result(format_metrics(evaluation.metrics.to_dict(), title=f"{args.model} on {evaluation.scope}"))
    if args.output:
        write_json(args.output, evaluation.to_dict())
        console.info(f"metrics written to {args.output}")
    if args.report:
        from ..report.page import write_evaluation_report

        write_evaluation_report(evaluation, clf.classes_, args.report, f"{args.model} on {evaluation.scope}",
                                (lambda: clf) if hasattr(clf, "explain") else None)
        console.info(f"report written to {args.report}")
    return ExitStatus.SUCCESS
