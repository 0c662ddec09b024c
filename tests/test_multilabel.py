"""Multi-label classification end to end, on real photos: seeded 2x2 mosaics of cats_and_dogs,
hymenoptera and dtd10 photos (benchmarks/mosaics.py), each labelled with the classes it shows."""

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart._console import Console
from headstart.cli import main
from headstart.errors import ExitStatus

from conftest import REPO, SHARED_DATASETS, TINY_BACKBONE, shared_dataset

sys.path.insert(0, str(REPO / "benchmarks"))
from mosaics import CLASSES, make_mosaics  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory) -> Path:
    """160 mosaics of 128 px: the label file's path."""
    shared_dataset("dtd10")
    return make_mosaics(SHARED_DATASETS, tmp_path_factory.mktemp("mosaics"), 160, size=128, seed=0)


@pytest.fixture(scope="module")
def run(mosaics: Path, tmp_path_factory) -> tuple[Path, int, str]:
    """A lightweight multi-label run with the embedded backbone (the default settings on a CPU)."""
    out = tmp_path_factory.mktemp("ml") / "run"
    err = io.StringIO()
    status = main(["train", "--labels", str(mosaics), "--out", str(out), "--test-fraction", "0.2"],
                  Console(err=err, out=io.StringIO()))
    return out, status, err.getvalue()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_label_file_with_several_labels_trains_a_multi_label_model(run, mosaics: Path):
    out, status, log = run
    assert status == ExitStatus.SUCCESS, log
    assert "8 classes, multi-label" in log
    config = json.loads((out / "config.json").read_text())
    assert config["head"]["multi_label"] is True and config["classes"] == sorted(CLASSES)
    thresholds = config["head"]["thresholds"]
    assert len(thresholds) == 8 and all(0 < t < 1 for t in thresholds)
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics[split]
        assert m["multi_label"] and m["count"] == 32
        # 96 training mosaics of 8 classes, each in about a third of them (mAP by chance: about 0.35).
        assert m["mean_ap"] >= 0.75 and m["macro_f1"] >= 0.6, m
        assert 0 <= m["hamming_loss"] <= 0.2 and set(m["per_class"]) == set(CLASSES)
        assert {"average_precision", "threshold", "f1", "precision", "recall"} <= set(m["per_class"]["cat"])
    # The run remembers its label file, and split.csv holds the label sets.
    request = json.loads((out / "run.json").read_text())
    assert request["labels"] == str(mosaics.resolve()) and request["params"]["multi_label"] is None
    split_rows = _rows(out / "split.csv")
    assert len(split_rows) == 160 and any(";" in r["class"] for r in split_rows)
    predictions = _rows(out / "predictions.csv")
    assert {f"p_{c}" for c in CLASSES} <= set(predictions[0])
    assert any(";" in r["predicted"] for r in predictions)


def test_predict_writes_the_label_set_and_every_probability(run, mosaics: Path, tmp_path: Path, cli):
    out, _, _ = run
    images = sorted((mosaics.parent / "images").glob("*.jpg"))[:6]
    target = tmp_path / "p.csv"
    status, captured = cli("predict", out, *images, "--output", target)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = _rows(target)
    assert [r["path"] for r in rows] == [str(p) for p in images]
    thresholds = json.loads((out / "config.json").read_text())["head"]["thresholds"]
    classes = sorted(CLASSES)
    for row in rows:
        expected = [c for c, t in zip(classes, thresholds) if float(row[f"p_{c}"]) >= t]
        assert (row["labels"].split(";") if row["labels"] else []) == expected
    # --threshold overrides every class's: at 0 each image has every label.
    status, captured = cli("predict", out, *images, "--threshold", "0")
    assert status == ExitStatus.SUCCESS
    assert all(line.split("\t")[1] == ";".join(classes) for line in captured.stdout.splitlines())
    # The Python API: a tuple of class names per image, at the saved thresholds.
    clf = headstart.load(out, verbose=0)
    proba = clf.predict_proba(images)
    assert not np.allclose(proba.sum(axis=1), 1)  # a sigmoid per class, not a softmax
    sets = clf.predict(images)
    assert [";".join(s) for s in sets] == [r["labels"] for r in rows]


def test_evaluate_with_a_label_file(run, mosaics: Path, cli, tmp_path: Path):
    out, _, _ = run
    target = tmp_path / "m.json"
    status, captured = cli("evaluate", out, "--labels", mosaics, "--output", target)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "mAP" in captured.stdout and "Hamming loss" in captured.stdout
    metrics = json.loads(target.read_text())
    # The images the run trained on are left out, as for any evaluation (its split.csv lists them):
    # the validation ones too, since the heads were refitted on them. The test mosaics remain.
    seen = [r for r in csv.DictReader(open(out / "split.csv")) if r["split"] in ("train", "val")]
    assert metrics["left_out_trained_on"] == len(seen)
    assert metrics["count"] == 160 - metrics["left_out_trained_on"]
    assert metrics["mean_ap"] >= 0.8 and metrics["skipped"] == []


def test_the_report_shows_what_a_multi_label_model_learned(run):
    out, _, _ = run
    html = (out / "report.html").read_text()
    for text in ("mAP (mean average precision)", "threshold", "Worst missed and spurious labels",
                 "Missed: a class the image has", "Spurious: a class the image lacks"):
        assert text in html
    for plot in ("per_class_ap_f1.png", "pr_curves.png", "co_occurrence.png"):
        assert (out / "plots" / plot).stat().st_size > 1000


def test_onnx_export_keeps_sigmoids_and_thresholds(run, mosaics: Path, cli, tmp_path: Path):
    from headstart.export.onnx_runtime import OnnxClassifier

    out, _, _ = run
    model = tmp_path / "model.onnx"
    status, captured = cli("export", out, "--out", model, "--check-images", "16")
    assert status == ExitStatus.SUCCESS, captured.stderr
    exported = OnnxClassifier(model)
    clf = headstart.load(out, verbose=0).set_params(precision="fp32")  # the export is checked against fp32
    assert exported.multi_label_ and np.allclose(exported.thresholds_, clf.thresholds_)
    images = sorted((mosaics.parent / "images").glob("*.jpg"))[:8]
    pixels = np.stack([exported.pixels(p) for p in images])
    proba = exported.run(pixels)
    assert np.allclose(proba, clf.run(pixels), atol=1e-4) and not np.allclose(proba.sum(axis=1), 1)
    sets = exported.predict(images)
    assert all(isinstance(s, tuple) and set(s) <= set(CLASSES) for s in sets)


def test_fit_on_paths_with_label_lists_or_an_indicator_matrix(mosaics: Path):
    from sklearn.preprocessing import MultiLabelBinarizer

    rows = _rows(mosaics)
    paths = [mosaics.parent / r["path"] for r in rows]
    label_lists = [r["label"].split(";") if r["label"] else [] for r in rows]
    clf = headstart.ImageClassifier(verbose=0).fit(paths, label_lists)
    assert clf.multi_label_ and clf.classes_ == tuple(sorted(CLASSES))
    binarizer = MultiLabelBinarizer(classes=list(clf.classes_))
    y = binarizer.fit_transform(label_lists)
    again = headstart.ImageClassifier(verbose=0).fit(paths, y, classes=clf.classes_)
    assert again.metrics_.val.mean_ap == pytest.approx(clf.metrics_.val.mean_ap)
    predicted = binarizer.transform(clf.predict(paths[:20]))
    assert (predicted == y[:20]).mean() >= 0.9


def test_standard_workflow_and_fine_tuning_train_with_binary_cross_entropy(mosaics: Path, tiny_args, cli,
                                                                           tmp_path: Path):
    out = tmp_path / "run"
    status, captured = cli("train", "--labels", mosaics, "--out", out, *tiny_args, "--epochs", "1",
                           "--fine-tune-epochs", "1", "--class-weight", "balanced")
    assert status == ExitStatus.SUCCESS, captured.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val_mean_ap" in metrics["stage1"] and "val_mean_ap" in metrics["fine_tune"]
    assert "validation mAP" in captured.stderr or "(mAP" in captured.stderr
    assert metrics["val"]["multi_label"] and 0 <= metrics["val"]["mean_ap"] <= 1
    assert len(json.loads((out / "config.json").read_text())["head"]["thresholds"]) == 8


def test_a_folder_trains_a_multi_label_model_when_asked(tmp_path: Path, tiny_args, cli):
    from conftest import make_folder

    out = tmp_path / "run"
    status, captured = cli("train", make_folder(tmp_path / "d", per_class=9), "--out", out, "--multi-label",
                           *tiny_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert json.loads((out / "config.json").read_text())["head"]["multi_label"] is True


def test_inspect_a_multi_label_file_same_bytes_under_two_label_sets_is_no_conflict(mosaics: Path, tmp_path: Path,
                                                                                   tiny_weights, cli):
    folder = tmp_path / "set"
    shutil.copytree(mosaics.parent, folder)
    rows = _rows(folder / "labels.csv")[:30]
    shutil.copy(folder / rows[0]["path"], folder / "images" / "copy.jpg")
    lines = ["path,label", *(f"{r['path']},{r['label']}" for r in rows), "images/copy.jpg,cat;bee",
             "images/missing.jpg,cat"]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "inspect"
    status, captured = cli("inspect", "--labels", folder / "labels.csv", "--out", out, "--backbone", TINY_BACKBONE,
                           "--weights", tiny_weights, "--image-size", "32", "--engine", "eager", "--workers", "0")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "labels.csv line 33: file not found" in captured.stderr
    findings = _rows(out / "inspect.csv")
    copy = [f for f in findings if f["kind"] == "exact_duplicate"]
    assert len(copy) == 1 and {copy[0]["path"], copy[0]["other_path"]} == {"images/copy.jpg", rows[0]["path"]}
    assert copy[0]["severity"] == "low"
    assert "conflicting" not in copy[0]["detail"]


def test_serve_answers_with_the_label_set_and_every_probability(run, mosaics: Path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from headstart.model import open_model
    from headstart.serve import create_app

    out, _, _ = run
    image = sorted((mosaics.parent / "images").glob("*.jpg"))[0]
    with TestClient(create_app(open_model(out))) as client:
        assert client.get("/model").json()["multi_label"] is True
        answer = client.post("/predict", files=[("files", (image.name, image.read_bytes(), "image/jpeg"))]).json()
    prediction = answer["predictions"][0]
    assert set(prediction["probabilities"]) == set(CLASSES)
    thresholds = dict(zip(sorted(CLASSES), json.loads((out / "config.json").read_text())["head"]["thresholds"]))
    assert prediction["labels"] == [c for c in sorted(CLASSES) if prediction["probabilities"][c] >= thresholds[c]]
