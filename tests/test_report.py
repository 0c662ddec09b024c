"""Every run's report: predictions.csv, the plots and report.html, on tiny images and a tiny backbone.

The browser test (tests/test_browser.py) opens a real run's report in Chromium.
"""

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import ExitStatus
from headstart.metrics import calibration_bins, expected_calibration_error
from headstart.report import plots

from conftest import make_image

PLOTS = {"learning_curves.png", "confusion_counts.png", "confusion_normalised.png", "per_class_f1.png",
         "reliability.png", "roc_pr.png"}


@pytest.fixture
def run(cli, tiny_data: Path, tiny_args, tmp_path: Path) -> Path:
    """Stage 1 then one fine-tuning epoch, with val and test splits."""
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--fine-tune-epochs", "1",
                           "--val-fraction", "0.25", "--test-fraction", "0.25")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert str(out / "report.html") in captured.stderr
    return out


def _embedded_images(page: str) -> list[str]:
    return re.findall(r'<img class="(\w+)" alt="([^"]*)" src="data:image/(?:png|jpeg);base64,', page)


def test_training_leaves_predictions_plots_and_a_self_contained_report(run: Path):
    with open(run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["split"] for r in rows].count("val") == metrics["val"]["count"]
    assert [r["split"] for r in rows].count("test") == metrics["test"]["count"]
    for row in rows:
        p = np.array([float(row["p_blue"]), float(row["p_red"])])
        assert abs(p.sum() - 1) < 1e-4
        assert row["predicted"] == ("blue", "red")[int(p.argmax())]
        assert row["class"] in row["path"]  # paths are relative to the data folder: red/red_001.png
    # The saved probabilities are the ones the metrics were computed from.
    test_rows = [r for r in rows if r["split"] == "test"]
    assert np.mean([r["class"] == r["predicted"] for r in test_rows]) == pytest.approx(metrics["test"]["accuracy"])
    assert set(metrics["timings"]) >= {"data", "stage1", "fine_tune", "evaluation", "total"}

    assert PLOTS <= {p.name for p in (run / "plots").iterdir()}
    page = (run / "report.html").read_text()
    assert "src=\"http" not in page and "href=\"http" not in page and "<script" not in page
    alts = {alt for _, alt in _embedded_images(page)}
    assert {"learning curves", "confusion counts", "confusion normalised", "per class f1", "reliability"} <= alts
    for text in ("fine-tuning", "Top losses", "Timings", "test accuracy", "blue", "red", "accuracy, 95% interval",
                 "its score is slightly optimistic", "roc pr"):
        assert text in page
    # The guard's own reason, in the log's words.
    reason = metrics["fine_tune"]["reason"]
    assert re.match(r"(raised|lowered) validation accuracy: |improved validation (calibrated )?loss (at|with) |"
                    r"validation accuracy unchanged|raised validation accuracy only within the noise", reason), reason
    assert f"it {html.escape(reason)}" in page
    # Only the settings the standard workflow and fine-tuning read, with resolved values.
    settings = page[page.index("<h2>Settings</h2>"):page.index("<h2>Training")]
    assert "<td>fine tune epochs</td><td>1</td>" in settings and "flip features" not in settings
    assert "<td>workflow</td><td>standard</td>" in settings


def test_a_refused_fine_tune_says_its_likely_cause(cli, tiny_data: Path, tiny_args, tmp_path: Path, monkeypatch):
    from headstart.training import stages

    monkeypatch.setattr(stages, "guard_verdict", lambda before, after: (False, "refused by the test"))
    out = tmp_path / "refused"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--fine-tune-epochs", "2")
    assert status == ExitStatus.SUCCESS, captured.stderr
    cause = json.loads((out / "metrics.json").read_text())["fine_tune"]["likely_cause"]
    history = list(csv.DictReader(open(out / "history.csv", newline="")))
    losses = [float(r["val_loss"]) for r in history]
    assert f"{losses[-1]:.4f}" in cause  # read from the fine-tuning epochs' validation losses
    assert f"likely cause: {cause}" in captured.stderr
    assert f"Likely cause: {html.escape(cause)}" in (out / "report.html").read_text()


def test_report_command_rebuilds_the_page_and_plots(cli, run: Path):
    first = (run / "report.html").read_text()
    (run / "report.html").unlink()
    for png in (run / "plots").iterdir():
        png.unlink()
    status, captured = cli("report", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert captured.stdout.strip() == str(run / "report.html")
    assert PLOTS <= {p.name for p in (run / "plots").iterdir()}
    assert len(_embedded_images((run / "report.html").read_text())) == len(_embedded_images(first))


def test_a_run_missing_its_predictions_is_refused_naming_the_file(cli, run: Path):
    (run / "predictions.csv").unlink()
    status, captured = cli("report", run)
    assert status == ExitStatus.MODEL and f"{run / 'predictions.csv'} is missing" in captured.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "metrics.json").unlink(), "metrics.json is missing"),
    (lambda run: (run / "config.json").write_text("{"), "config.json is not valid JSON"),
])
def test_report_errors_name_the_file(cli, run: Path, damage, message):
    damage(run)
    status, captured = cli("report", run)
    assert status == ExitStatus.MODEL
    assert message in captured.stderr and len(captured.stderr.strip().splitlines()) == 1


def test_report_of_a_missing_folder(cli, tmp_path: Path):
    status, captured = cli("report", tmp_path / "nowhere")
    assert status == ExitStatus.MODEL and "no such run folder" in captured.stderr


def test_learning_curves_mark_where_fine_tuning_starts():
    history = [{"stage": "frozen", "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5,
                "val_accuracy": 0.6}] * 3 + [{"stage": "fine-tune", "train_loss": 0.5, "val_loss": 0.6,
                                               "train_accuracy": 0.8, "val_accuracy": 0.7}] * 2
    figure = plots.learning_curves(history, fine_tune_kept=False)
    loss, accuracy = figure.axes
    # In the legend, never written across a curve.
    assert len(loss.texts) == 0 and "fine-tuning starts (not kept)" in [t.get_text() for t in loss.get_legend().texts]
    assert loss.lines[-1].get_xdata()[0] == pytest.approx(3.5)  # between epoch 3 (stage 1) and 4
    assert [list(line.get_ydata()) for line in accuracy.lines[:2]] == [[0.5] * 3 + [0.8] * 2,
                                                                        [0.6] * 3 + [0.7] * 2]


def test_confusion_matrix_normalised_by_true_class():
    figure = plots.confusion([[3, 1], [0, 4]], ["cat", "dog"], normalize=True)
    assert [t.get_text() for t in figure.axes[0].texts] == ["75%", "25%", "0%", "100%"]


def test_reliability_bins_agree_with_the_calibration_error():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], size=500)
    y = rng.integers(0, 3, size=500)
    counts, accuracy, confidence = calibration_bins(y, proba)
    assert counts.sum() == 500
    assert np.sum(counts / 500 * np.abs(accuracy - confidence)) == pytest.approx(expected_calibration_error(y, proba))
    figure = plots.reliability_diagram(y, proba)
    assert f"ECE {expected_calibration_error(y, proba):.3f}" in figure.axes[0].get_title()


def test_mistakes_grid_survives_an_unreadable_image(tmp_path: Path):
    broken = tmp_path / "gone.jpg"
    broken.write_bytes(b"")
    figure = plots.confident_mistakes([plots.Mistake(broken, "cat", "dog", 0.9)])
    assert "cannot read the image" in [t.get_text() for t in figure.axes[0].texts]
    assert "predicted: dog (0.90)" in figure.axes[0].get_title()


def test_per_class_f1_shows_the_worst_classes_first_and_at_most_forty():
    f1 = {f"c{i:03d}": {"f1": i / 100, "support": 5} for i in range(100)}
    figure = plots.per_class_f1({"per_class": f1})
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 40 and labels[0] == "c000" and labels[-1] == "c039"
    assert ax.yaxis_inverted() and "the 40 worst of 100 classes" in ax.get_title()


def test_class_names_are_drawn_as_written():
    from matplotlib.cbook import is_math_text

    figure = plots.confusion([[1, 2], [3, 4]], ["$5 bill$", "x_y^z"])
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    # "$5 bill$" would be typeset as a formula: its dollars are escaped, so it is drawn as written.
    assert labels == ["\\$5 bill\\$", "x_y^z"] and not any(is_math_text(t) for t in labels)


@pytest.mark.parametrize("low,high", [(0.99, 1.0), (0.9, 1.0), (0.0, 1.0), (0.995, 1.0)])
def test_percentage_ticks_never_repeat(low, high):
    figure = plots.learning_curves([{"stage": "frozen", "train_accuracy": low, "val_accuracy": high,
                                     "train_loss": 1.0, "val_loss": 0.5},
                                    {"stage": "frozen", "train_accuracy": high, "val_accuracy": high,
                                     "train_loss": 0.5, "val_loss": 0.4}])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    axis = figure.axes[1].yaxis
    labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(labels) == len(set(labels)), labels
    assert all(label.endswith("%") for label in labels)


def test_a_lightweight_run_plots_its_l2_search(cli, tiny_data: Path, tmp_path: Path, tiny_weights: Path):
    from conftest import TINY_BACKBONE

    out = tmp_path / "light"
    status, captured = cli("train", tiny_data, "--out", out, "--backbone", TINY_BACKBONE, "--weights", tiny_weights,
                           "--image-size", "32", "--workers", "0", "--workflow", "lightweight",
                           "--cache-dir", tmp_path / "cache")
    assert status == ExitStatus.SUCCESS, captured.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    search = metrics["head"]["search"]
    assert [row["C"] for row in search] == pytest.approx(list(np.logspace(-4, 1, 6)))
    best = min(search, key=lambda row: row["val_loss"])
    assert best["C"] == metrics["head"]["C"] and 0 <= best["val_accuracy"] <= 1
    page = (out / "report.html").read_text()
    alts = {alt for _, alt in _embedded_images(page)}
    assert "validation loss and accuracy against the L2 strength" in alts
    assert "learning curves" not in alts  # one row of history is a point, not a curve
    settings = page[page.index("<h2>Settings</h2>"):page.index("<h2>Training")]
    assert "feature engine" in settings and "<td>epochs</td>" not in settings and "<td>lr</td>" not in settings


def test_most_confused_pairs_and_the_wilson_interval():
    from headstart.metrics import most_confused, wilson_interval

    pairs = most_confused([[5, 3, 0], [1, 6, 0], [0, 4, 2]], ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 4), ("a", "b", 3), ("b", "a", 1)]
    assert pairs[0]["fraction_of_true"] == pytest.approx(4 / 6)
    low, high = wilson_interval(95, 100)  # the textbook value: 88.82% - 97.85%
    assert low == pytest.approx(0.8882, abs=1e-4) and high == pytest.approx(0.9785, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] > 0.69


def test_a_multi_label_class_with_no_validation_photo_does_not_break_the_report(cli, tiny_args, tmp_path: Path):
    rows = ["path,label,split"]
    for i in range(12):
        for split in ("train", "val"):
            name = f"{split}{i}.png"
            make_image(tmp_path / "img" / name, (200, 30, 30) if i % 2 else (30, 30, 200), seed=i)
            rows.append(f"img/{name},{'red' if i % 2 else 'blue'},{split}")
    make_image(tmp_path / "img" / "rare.png", (30, 200, 30), seed=99)
    rows.append("img/rare.png,red;green,train")  # green: one training photo, none to validate on
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    status, captured = cli("train", "--labels", tmp_path / "labels.csv", "--out", out, *tiny_args, "-q")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "green" in (out / "report.html").read_text()
    status, captured = cli("report", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
