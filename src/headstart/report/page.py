"""``report.html``: what a run learned, in one self-contained page.

Built from the run folder's files (``config.json``, ``metrics.json``,
``history.csv``, ``predictions.csv``, ``skipped.csv``, ``run.json``), so
``headstart report RUN`` can rebuild it at any time; the model itself is loaded
only to map where it looked in its most confident mistakes. The plots are
written beside it in ``plots/`` and embedded in the page, with thumbnails of
the images it shows: the page opens offline, anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _html as h
from .._console import Console
from .._io import write_text
from ..errors import UsageError
from ..record import SplitMetrics
from ..runfolder import METRICS_FILE, PLOTS_DIR, REPORT_FILE, SKIPPED_FILE
from . import plots
from .record import PageData, _finite, _float, _image_path, _num, read_run

if TYPE_CHECKING:
    from ..evaluate import Evaluation

__all__ = ["PageData", "read_run", "write_report", "write_evaluation_report"]

EVALUATED = "evaluated"  # the one "split" of an evaluation page
TOP_LOSSES = 12
MISTAKES_SHOWN = 16
SKIPPED_SHOWN = 50


def write_report(directory: str | Path, console: Console | None = None,
                 explainer: Callable[[], object] | None = None) -> Path:
    """Write ``report.html`` and its plots into the run folder; returns the page's path.
    ``explainer`` gives the run's model, to map where it looked in its mistakes (:class:`PageData`)."""
    run = dataclasses.replace(read_run(directory), explainer=explainer)
    plot_dir = run.directory / PLOTS_DIR
    plot_dir.mkdir(exist_ok=True)
    sections = [_header(run), _data_section(run), _settings_section(run), _backbones_section(run),
                _stages_section(run, plot_dir)]
    sections += _evaluation_sections(run, plot_dir)
    sections += [_trust_section(run, plot_dir), _timings_section(run)]
    title = f"headstart report: {run.directory.name}"
    path = run.directory / REPORT_FILE
    write_text(path, h.page(title, "\n".join(sections)))
    if console is not None:
        console.info(f"report: {path}")
    return path


def write_evaluation_report(evaluation: Evaluation, classes: Sequence[str], path: str | Path, title: str,
                            explainer: Callable[[], object] | None = None) -> Path:
    """The page of ``headstart evaluate --report``: the training report's metrics, plots, most
    confused classes, mistakes and top losses, for the images evaluated (plots embedded only)."""
    path = Path(path)
    run = PageData(path.parent, tuple(classes), False, {EVALUATED: evaluation.metrics},
                   evaluation.prediction_rows(classes), evaluation.data, explainer=explainer)
    notes = [f"<h1>{h.escape(title)}</h1>",
             f"<p>{len(evaluation.samples)} image(s) scored: {h.escape(evaluation.scope)}.</p>"]
    if evaluation.left_out:
        notes.append(f'<p class="warn">{evaluation.left_out} image(s) the model was trained on were left out.</p>')
    if evaluation.validated_on:
        notes.append(f'<p class="warn">{evaluation.validated_on} of the scored images are the validation split '
                     "that chose the model: their score is slightly optimistic.</p>")
    with tempfile.TemporaryDirectory(prefix="headstart-plots-") as plot_dir:
        sections = _evaluation_sections(run, Path(plot_dir))
    write_text(path, h.page(title, "\n".join([*notes, *sections])))
    return path


# -- sections ---------------------------------------------------------------------------

def _header(run: PageData) -> str:
    record = run.record
    final = record.metrics.final()
    final = f"{_split_name(final[0])} {final[1].headline()}" if final else ""
    made = datetime.datetime.fromtimestamp((run.directory / METRICS_FILE).stat().st_mtime)
    return (f"<h1>{h.escape(run.directory.name)}</h1>"
            f"<p>{len(run.classes)} classes, backbone <code>{h.escape(record.config.backbone.architecture)}</code>, "
            f"{h.escape(record.metrics.workflow)} workflow. <b>{h.escape(final)}</b></p>"
            f'<p class="muted">Run folder {h.escape(str(run.directory.resolve()))}, trained '
            f"{made:%Y-%m-%d %H:%M}. Data: {h.escape(str(run.data_root or 'unknown'))}.</p>")


def _data_section(run: PageData) -> str:
    counts = run.record.metrics.counts
    splits = [s for s in ("train", "val", "test") if sum(counts.get(s, {}).values())]
    rows = [[c, *(counts[s].get(c, 0) for s in splits), sum(counts[s].get(c, 0) for s in splits)]
            for c in run.classes]
    rows.append([h.Raw("<b>all</b>"), *(sum(counts[s].values()) for s in splits),
                 sum(sum(counts[s].values()) for s in splits)])
    numeric = range(1, len(splits) + 2)
    parts = ["<h2>Data</h2>", h.table(["class", *splits, "total"], rows, numeric=numeric)]
    if run.skipped:
        shown = run.skipped[:SKIPPED_SHOWN]
        more = len(run.skipped) - len(shown)
        parts.append(f'<p class="warn">{len(run.skipped)} file(s) skipped, listed in {SKIPPED_FILE}'
                     f"{f'; the first {len(shown)} here' if more else ''}:</p>")
        parts.append(h.table(["file", "reason"], [[s.get("path", ""), s.get("reason", "")] for s in shown]))
    else:
        parts.append('<p class="muted">No file was skipped.</p>')
    return "\n".join(parts)


def _settings_section(run: PageData) -> str:
    config, m = run.record.config, run.record.metrics
    backbone, pre = config.backbone, config.preprocessing
    size = "x".join(map(str, pre.input_size[1:]))
    rows = [["backbone", f"{backbone.name} (timm {backbone.architecture})"],
            ["weights", backbone.weights], ["features", backbone.num_features],
            ["input", f"{size} px, {pre.interpolation}, crop {pre.crop_pct}, "
                      f"mean {list(pre.mean)}, std {list(pre.std)}"],
            ["workflow", m.workflow]]
    if m.features:  # the engine that really computed the features, not "auto"
        rows.append(["feature engine", m.features.engine])
    if m.head:
        rows.append(["head L2 strength", f"C={m.head.C:g} (chosen on validation loss"
                     + ("; then refitted on train + val)" if m.head.refitted else ")")])
    rows += [[name.replace("_", " "), value] for name, value in run.record.used_settings().items()]
    versions = ", ".join(f"{k} {v}" for k, v in config.versions.items())
    return ("<h2>Settings</h2>" + h.table(["setting", "value"], rows)
            + '<p class="muted">The settings this workflow used ("auto" where headstart chose at run time, as '
            + 'above for the workflow and engine); run.json keeps every one asked for. '
            + f"{h.escape(versions)}</p>")


def _backbones_section(run: PageData) -> str:
    """The comparison --backbone auto chose from (backbones.csv), when there was one."""
    if not run.backbones:
        return ""
    rows = [[h.Raw("&#9733;" if b["chosen"] == "True" else ""), b["backbone"], f"{b['input_size']} px",
             f"{_float(b['parameters']) / 1e6:.1f} M", _pct(_float(b["val_accuracy"])), _num(_float(b["val_loss"])),
             f"{_float(b['images_per_second']):.1f}", "yes" if b["within_budget"] == "True" else "no"]
            for b in run.backbones]
    return ("<h2>Backbones compared</h2>"
            + h.table(["", "backbone", "input", "params", "val accuracy", "val loss", "img/s", "within budget"],
                      rows, numeric=range(2, 8))
            + '<p class="muted">--backbone auto fitted the lightweight head on each backbone\'s features of '
            "these training images and trained with the best on validation (&#9733;) within the time budget; "
            "backbones.csv has every column.</p>")


def _stages_section(run: PageData, plot_dir: Path) -> str:
    m = run.record.metrics
    stage1, fine = m.stage1, m.fine_tune
    rows = []
    for name, stage in (("stage 1: head on the frozen backbone", stage1), ("fine-tuning", fine)):
        if stage:
            kept = fine.verdict() if stage is fine else ""
            rows.append([name, _pct(stage.val_accuracy), _num(stage.val_loss), stage.epochs_run, stage.best_epoch,
                         "yes" if stage.stopped_early else "no", kept])
    parts = ["<h2>Training: stage 1 and fine-tuning</h2>",
             h.table(["stage", "val accuracy", "val loss", "epochs", "best epoch", "stopped early", "kept"],
                     rows, numeric=(1, 2, 3, 4))]
    if fine and fine.reason:
        parts.append(f"<p>Fine-tuning {h.escape(fine.verdict())}; it {h.escape(fine.reason)}.</p>")
        if fine.kept and fine.share is not None and fine.share < 1:
            parts.append("<p>Of the blends of fine-tuned and stage-1 weights tried, this was the best on "
                         "validation (WiSE-FT).</p>")
        if fine.likely_cause:
            parts.append(f"<p>Likely cause: {h.escape(fine.likely_cause)}.</p>")
    elif fine and stage1 and _finite(fine.val_accuracy) and _finite(stage1.val_accuracy):
        gain = 100 * (fine.val_accuracy - stage1.val_accuracy)
        parts.append(f"<p>Fine-tuning changed validation accuracy by <b>{gain:+.2f} points</b> "
                     f"({h.escape(fine.verdict())}).</p>")
    elif not fine:
        parts.append('<p class="muted">Fine-tuning was not run (--fine-tune-epochs 0).</p>')
    if m.head and m.head.search:
        path = plots.save(plots.regularization_path(list(m.head.search), m.head.C), plot_dir / "l2_search.png")
        parts.append(h.image(path, "validation loss and accuracy against the L2 strength"))
    if len(run.record.history) > 1:  # one row (a lightweight head alone) is a point, not a curve
        kept = fine.kept if fine else None
        path = plots.save(plots.learning_curves(list(run.record.history), kept), plot_dir / "learning_curves.png")
        parts.append(h.image(path, "learning curves"))
    return "\n".join(parts)


def _evaluation_sections(run: PageData, plot_dir: Path) -> list[str]:
    if run.multi_label:
        from .multilabel import evaluation_sections  # it builds on this module's helpers

        return evaluation_sections(run, plot_dir)
    m = run.splits
    evaluated = list(m)
    if not evaluated:
        return ["<h2>Metrics</h2><p>No validation or test images: nothing to measure the model on.</p>"]
    parts = ["<h2>Metrics</h2>", _summary_table(m, evaluated)]
    if run.record is not None and (warning := run.record.metrics.disagreement()):
        parts.append(f'<p class="warn">{h.escape(warning[0].upper() + warning[1:])}.</p>')
    if "val" in evaluated:
        parts.append('<p class="muted">The interval is the 95% Wilson interval of accuracy over these images. '
                     "The validation split also chose the model (the head's L2 strength, early stopping, "
                     "whether fine-tuning was kept), so its score is slightly optimistic"
                     + (": the test split's is the unbiased one.</p>" if "test" in evaluated else
                        "; keep a test split (--test-fraction, or a test/ folder) for an unbiased one.</p>"))
    for name in evaluated:
        parts.append(f"<h3>Per class, {_split_name(name)}</h3>")
        parts.append(_per_class_table(m[name]))
    # The plots describe one split: test when there is one (the unbiased estimate), else val.
    main = evaluated[-1]
    title = _split_name(main)
    if len(run.classes) > 2 and m[main].most_confused:
        parts.append(f"<h3>Most confused classes, {title}</h3>" + h.table(
            ["true class", "predicted as", "images", "of the true class"],
            [[c.true, c.predicted, c.count, _pct(c.fraction_of_true)] for c in m[main].most_confused],
            numeric=(2, 3)))
    parts.append(f"<h2>Plots ({title})</h2>")
    matrix = [list(row) for row in m[main].confusion_matrix]
    figures = [(plots.confusion(matrix, run.classes, False, title), "confusion_counts"),
               (plots.confusion(matrix, run.classes, True, title), "confusion_normalised"),
               (plots.per_class_f1(m[main].to_dict(), title), "per_class_f1")]
    rows = [r for r in run.predictions if r.get("split") == main and r.get("predicted")]
    y_true, proba = _probabilities(rows, run.classes)
    if len(rows):
        figures.append((plots.reliability_diagram(y_true, proba, split=title), "reliability"))
        if len(run.classes) == 2 and len(np.unique(y_true)) == 2:
            figures.append((plots.roc_pr_curves(y_true, proba, run.classes, title), "roc_pr"))
    for figure, name in figures:
        parts.append(h.image(plots.save(figure, plot_dir / f"{name}.png"), name.replace("_", " ")))
    parts.append(_mistakes_section(run, rows, y_true, proba, title, plot_dir))
    parts.append(_top_losses_section(run, rows, y_true, proba, title))
    return parts


def _summary_table(m: dict[str, SplitMetrics], evaluated: Sequence[str]) -> str:
    names = [("accuracy", "accuracy", _pct), ("accuracy_ci95", "accuracy, 95% interval", _interval),
             ("balanced_accuracy", "balanced accuracy", _pct),
             ("log_loss", "log loss", _num), ("expected_calibration_error", "calibration error (ECE)", _num),
             ("roc_auc", "ROC-AUC", _num), ("pr_auc", "PR-AUC", _num)]
    if m[evaluated[0]].top_k is not None:
        names.append(("top_k_accuracy", f"top {m[evaluated[0]].top_k} accuracy", _pct))
    rows = [[label, *(fmt(getattr(m[s], key)) for s in evaluated)] for key, label, fmt in names
            if any(getattr(m[s], key) is not None for s in evaluated)]
    rows.append(["images", *(m[s].count for s in evaluated)])
    return h.table(["metric", *map(_split_name, evaluated)], rows, numeric=range(1, len(evaluated) + 1))


def _per_class_table(metrics: SplitMetrics) -> str:
    rows = [[c, _num(v.precision, 3), _num(v.recall, 3), _num(v.f1, 3), v.support]
            for c, v in metrics.per_class.items()]
    return h.table(["class", "precision", "recall", "F1", "images"], rows, numeric=(1, 2, 3, 4))


def _mistakes_section(run: PageData, rows: list[dict], y_true: np.ndarray, proba: np.ndarray, title: str,
                      plot_dir: Path) -> str:
    wrong = np.flatnonzero(proba.argmax(axis=1) != y_true)
    wrong = wrong[np.argsort(-proba[wrong].max(axis=1), kind="stable")][:MISTAKES_SHOWN]
    heading = f"<h2>Most confidently wrong ({title})</h2>"
    (plot_dir / "confident_mistakes.png").unlink(missing_ok=True)  # a rebuilt report has no stale grid
    if not len(wrong):
        return heading + '<p class="ok">No misclassified image.</p>'
    paths = [_image_path(run, rows[i]["path"]) for i in wrong]
    pictures = _where_it_looked(run, paths)
    mistakes = [plots.Mistake(path, rows[i]["class"], rows[i]["predicted"], float(proba[i].max()), picture)
                for path, i, picture in zip(paths, wrong, pictures)]
    path = plots.save(plots.confident_mistakes(mistakes, title), plot_dir / "confident_mistakes.png")
    note = ('<p class="muted">Each image as the network saw it, with the class activation map of its '
            "(wrong) predicted class over it: where the evidence for that class was.</p>"
            if any(p is not None for p in pictures) else "")
    return heading + note + h.image(path, "most confidently wrong images")


def _where_it_looked(run: PageData, paths: list[Path]) -> list[np.ndarray | None]:
    """The network inputs of ``paths`` with their predicted class's activation map over them;
    Nones without a model to ask, or one whose backbone has no spatial map (a transformer's tokens)."""
    if run.explainer is None:
        return [None] * len(paths)
    from ..trust.cam import overlays

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unreadable image is already shown as such
            return overlays(run.explainer(), paths)
    except UsageError:
        return [None] * len(paths)


def _top_losses_section(run: PageData, rows: list[dict], y_true: np.ndarray, proba: np.ndarray,
                        title: str) -> str:
    p_true = proba[np.arange(len(rows)), y_true]
    losses = -np.log(np.clip(p_true, 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[:TOP_LOSSES]
    table = h.table(["image", "file", "true class", "predicted", "p(true class)", "loss"],
                    [[h.thumbnail(_image_path(run, rows[i]["path"]), rows[i]["path"]), rows[i]["path"],
                      rows[i]["class"], rows[i]["predicted"], _num(p_true[i], 3), _num(losses[i], 3)]
                     for i in order], numeric=(4, 5))
    return (f"<h2>Top losses ({title})</h2><p class=\"muted\">The images the model finds hardest: "
            f"the lowest probability given to their true class. Wrong labels often hide here.</p>{table}")


def _trust_section(run: PageData, plot_dir: Path) -> str:
    """How far a single-label run's probabilities can be trusted (:mod:`headstart.trust`): its
    calibration, with the reliability diagram before it, and on test images, its prediction sets'
    coverage and the share of known images ``--reject auto`` keeps."""
    from ..trust import apply_temperature, prediction_sets, rejected
    from ..trust.reject import KEEP_KNOWN

    head, calibration = run.record.config.head, run.record.metrics.calibration
    if run.multi_label or not head.conformal_scores:
        return ""
    parts = ["<h2>Trust: calibration, prediction sets, \"none of these\"</h2>"]
    if calibration is None:
        parts.append('<p class="muted">Not calibrated: --no-calibrate, or too few validation images.</p>')
    else:
        parts.append(f"<p>Temperature <b>{calibration.temperature:.3f}</b>, fitted on {calibration.images} "
                     f"validation images: the expected calibration error on the {_split_name(calibration.split)} "
                     f"images is {_num(calibration.ece_before)} without it, <b>{_num(calibration.ece_after)}</b> "
                     "with it (below 1 the probabilities were too soft, above 1 too sharp).</p>")
    name = "test" if "test" in run.splits else "val"
    rows = [r for r in run.predictions if r.get("split") == name and r.get("predicted")]
    y_true, proba = _probabilities(rows, run.classes)
    if not len(rows):
        return "\n".join(parts)
    if calibration is not None:
        before = apply_temperature(proba, 1 / calibration.temperature)  # the calibrated softmax, undone
        figure = plots.reliability_diagram(y_true, before, split=f"{_split_name(name)}, before calibration")
        parts.append(h.image(plots.save(figure, plot_dir / "reliability_before.png"), "reliability before"))
    if name != "test":
        parts.append('<p class="muted">Prediction sets are calibrated on the validation images: keep a test '
                     "split to measure their coverage.</p>")
        return "\n".join(parts)
    table = []
    for coverage in (0.8, 0.9, 0.95):
        sets = prediction_sets(proba, np.array(head.conformal_scores), coverage)
        table.append([f"{coverage:.0%}", _pct(sets[np.arange(len(y_true)), y_true].mean()),
                      f"{sets.sum(axis=1).mean():.2f}"])
    kept = 1 - rejected(proba, head.reject_threshold).mean() if head.reject_threshold is not None else math.nan
    parts.append("<h3>Prediction sets on the test images</h3>" + h.table(
        ["coverage asked (--coverage)", "coverage measured", "mean classes per set"], table, numeric=(1, 2)))
    parts.append(f"<p>--reject auto (top probability below {_num(head.reject_threshold)}) keeps {_pct(kept)} "
                 f"of the test images, all of known classes (it was set to keep {_pct(KEEP_KNOWN)} of the "
                 "validation images).</p>")
    return "\n".join(parts)


def _timings_section(run: PageData) -> str:
    m = run.record.metrics
    labels = {"data": "finding and checking the images", "stage1": "stage 1 (head)",
              "fine_tune": "fine-tuning", "evaluation": "evaluation", "total": "total"}
    rows = [[labels.get(k, k), f"{v:.1f} s"] for k, v in m.timings.items() if _finite(v)]
    if m.features:
        f = m.features
        rows.append(["features", f"{f.seconds:.1f} s: {f.computed} computed with {f.engine}, "
                                 f"{f.cached} from the cache"])
    if m.head:
        rows.append(["head fit", f"{m.head.seconds:.2f} s (L2 C={m.head.C:g})"])
    per_stage: dict[str, list[float]] = {}
    for row in run.record.history:
        per_stage.setdefault(row.get("stage", "?"), []).append(row.get("seconds", math.nan))
    for stage, seconds in per_stage.items():
        if len(seconds) > 1:
            rows.append([f"{stage} epochs", f"{len(seconds)} x {np.nanmedian(seconds):.1f} s (median)"])
    return "<h2>Timings</h2>" + h.table(["step", "time"], rows)


# -- helpers ----------------------------------------------------------------------------

def _probabilities(rows: list[dict], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[r["class"]] for r in rows], dtype=int)
    proba = np.array([[_float(r.get(f"p_{c}")) for c in classes] for r in rows], dtype=float)
    return y_true, proba.reshape(len(rows), len(classes))


def _split_name(name: str) -> str:
    return {"val": "validation", "test": "test", EVALUATED: "evaluated images"}.get(name, name)


def _interval(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_finite, value)):
        return f"{value[0]:.2%} - {value[1]:.2%}"
    return "n/a"


def _pct(value) -> str:
    return f"{value:.2%}" if _finite(value) else "n/a"
