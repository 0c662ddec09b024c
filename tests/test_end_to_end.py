"""End to end on real photos (../shared/datasets/hymenoptera_data) with the embedded backbone."""

import csv
import json
from pathlib import Path

import pytest

import headstart
from headstart.record import read_metrics
from headstart.errors import ExitStatus

from conftest import shared_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["auto", "standard"])
def hymenoptera_run(request, tmp_path_factory) -> tuple[Path, Path, int, str]:
    from headstart._console import Console
    from headstart.cli import main
    import io

    data = shared_dataset("hymenoptera_data")
    out = tmp_path_factory.mktemp("e2e") / "run"
    err = io.StringIO()
    status = main(["train", str(data), "--out", str(out), "--workflow", request.param,
                   "--epochs", "3", "--fine-tune-epochs", "1",
                   "--unfreeze-last", "2", "--batch-size", "32"], Console(err=err, out=io.StringIO()))
    return data, out, status, err.getvalue()


def test_train_on_real_photos_beats_90_percent(hymenoptera_run):
    data, out, status, log = hymenoptera_run
    assert status == ExitStatus.SUCCESS, log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["train"] == {"ants": 124, "bees": 121}
    assert metrics["stage1"]["val_accuracy"] >= 0.90
    # The guard: the final model is never worse on validation than stage 1.
    assert metrics["val"]["accuracy"] >= metrics["stage1"]["val_accuracy"] - 1e-9
    assert metrics["fine_tune"]["kept"] in (True, False)
    assert ("fine-tuning kept: it " in log) or ("keeping the stage-1 weights" in log)
    stages = [row["stage"] for row in csv.DictReader(open(out / "history.csv"))]
    assert stages.count("fine-tune") == 1
    assert stages[0] == ("head" if metrics["workflow"] == "lightweight" else "frozen")


def test_predict_real_photos_one_row_each(hymenoptera_run, tmp_path: Path):
    data, out, _, _ = hymenoptera_run
    clf = headstart.load(out, verbose=0)
    bees = sorted((data / "val" / "bees").glob("*.jpg"))
    predictions = clf.predict(bees)
    assert len(predictions) == len(bees) == 83
    assert (predictions == "bees").mean() >= 0.85


def test_evaluate_real_photos(hymenoptera_run):
    data, out, _, _ = hymenoptera_run
    metrics = headstart.load(out, verbose=0).evaluate(data)
    saved = json.loads((out / "metrics.json").read_text())["val"]
    assert metrics["count"] == 153
    if read_metrics(out).trained_on_val():  # refitted on the val/ photos: the saved figures are from before
        assert metrics["accuracy"] >= saved["accuracy"] - 0.01
    else:
        assert metrics["accuracy"] == pytest.approx(saved["accuracy"], abs=0.01)


# Predicting runs the same way whichever workflow trained the model: one run is enough here.
@pytest.mark.parametrize("hymenoptera_run", ["auto"], indirect=True)
def test_predict_a_thousand_photos_writes_a_thousand_rows(hymenoptera_run, cli, tmp_path: Path):
    _, out, _, _ = hymenoptera_run
    folder = shared_dataset("cats_and_dogs_filtered") / "validation"
    preds = tmp_path / "preds.csv"
    status, captured = cli("predict", out, folder, "--output", preds, "--batch-size", "64")
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 1000 == len({r["path"] for r in rows})
    assert all(r["class"] in ("ants", "bees") and not r["error"] for r in rows)


def test_onnx_export_agrees_with_pytorch_on_real_photos(hymenoptera_run, cli, tmp_path: Path):
    _, out, _, _ = hymenoptera_run
    model = tmp_path / "model.onnx"
    status, captured = cli("export", out, "--out", model, "--check-images", "153")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "parity on 153 image(s)" in captured.stderr and "top-1 agreement 100.00%" in captured.stderr
