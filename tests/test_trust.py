"""Predictions a user can trust (headstart.trust): the temperature fitted on validation and applied
by every runtime, prediction sets with their coverage, "unknown" below a threshold, class
activation maps; the functions alone on synthetic probabilities, then a fitted model and predict."""

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.config import HeadSpec
from headstart.errors import ExitStatus, UsageError
from headstart.record import read_metrics
from headstart.report.page import read_run
from headstart.trust import (UNKNOWN, apply_temperature, conformal_quantile, conformity_scores, decide,
                             fit_temperature, keeping_threshold, known_scores, prediction_sets, rejected)

from conftest import TINY_BACKBONE, make_folder, make_image


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _synthetic(n: int, classes: int = 5, seed: int = 0, sharpness: float = 1.0):
    """Labels drawn from softmax(logits), and the probabilities of a model with ``sharpness`` times those logits."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 2
    truth = _softmax(logits)
    labels = np.array([rng.choice(classes, p=p) for p in truth])
    return _softmax(logits * sharpness), labels


@pytest.mark.parametrize("sharpness", [0.5, 2.0])
def test_temperature_undoes_over_and_under_confidence(sharpness: float):
    proba, labels = _synthetic(3000, sharpness=sharpness)
    temperature = fit_temperature(proba, labels)
    assert temperature == pytest.approx(sharpness, rel=0.1)  # softmax(sharpness * logits / sharpness) is the truth
    calibrated = apply_temperature(proba, temperature)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-9)
    assert (calibrated.argmax(axis=1) == proba.argmax(axis=1)).all()  # accuracy never changes


def test_temperature_needs_enough_images_and_keeps_unreadable_rows():
    proba, labels = _synthetic(10, sharpness=3.0)
    assert fit_temperature(proba, labels) == 1.0
    proba[0] = np.nan
    scaled = apply_temperature(proba, 2.0)
    assert np.isnan(scaled[0]).all() and not np.isnan(scaled[1:]).any()


def test_prediction_sets_cover_the_true_class_over_many_seeded_splits():
    """Split conformal prediction's guarantee: coverage >= 0.9 on average over calibration draws,
    and at most 0.9 + 1/(n + 1); the sets grow with the coverage asked for."""
    proba, labels = _synthetic(1000, seed=1)
    rng = np.random.default_rng(2)
    coverages, sizes = [], []
    for _ in range(200):
        order = rng.permutation(len(labels))
        val, new = order[:300], order[300:]
        sets = prediction_sets(proba[new], conformity_scores(proba[val], labels[val]), 0.9)
        coverages.append(sets[np.arange(len(new)), labels[new]].mean())
        sizes.append(sets.sum(axis=1).mean())
    assert 0.9 - 0.005 <= np.mean(coverages) <= 0.9 + 1 / 301 + 0.005
    smaller = prediction_sets(proba, conformity_scores(proba, labels), 0.5)
    assert 1 <= smaller.sum(axis=1).mean() < np.mean(sizes) < proba.shape[1]


def test_prediction_sets_always_name_a_class_and_take_every_class_without_enough_scores():
    proba = np.array([[0.6, 0.3, 0.1], [np.nan, np.nan, np.nan]])
    assert conformal_quantile(np.array([0.2, 0.4]), 0.9) == 1.0  # rank ceil(3 * 0.9) = 3 > 2 scores
    assert prediction_sets(proba, np.array([0.2, 0.4]), 0.9).tolist() == [[True] * 3, [False] * 3]
    assert prediction_sets(proba, np.full(50, 0.01), 0.9)[0].tolist() == [True, False, False]
    with pytest.raises(UsageError, match="'coverage' must be a number in \\(0, 1\\)"):
        conformal_quantile(np.array([0.2]), 1.5)


def test_auto_rejection_keeps_95_percent_of_known_images():
    proba, _ = _synthetic(1000, seed=3)
    threshold = keeping_threshold(known_scores(proba))
    kept = 1 - rejected(proba, threshold).mean()
    assert 0.95 <= kept < 0.96
    assert keeping_threshold(np.array([np.nan])) is None


def test_decide_marks_unknown_images_and_names_sets():
    head = HeadSpec(3, conformal_scores=(0.1, 0.2, 0.5, 0.6), reject_threshold=0.5)
    proba = np.array([[0.9, 0.05, 0.05], [0.45, 0.4, 0.15], [np.nan] * 3])
    classes = ("cat", "dog", "fox")
    assert decide(proba, classes, head, reject="auto").tolist() == ["cat", UNKNOWN, None]
    assert decide(proba, classes, head, coverage=0.7).tolist() == [("cat",), ("cat", "dog"), None]
    assert decide(proba, classes, head, reject=0.3, coverage=0.7).tolist() == [("cat",), ("cat", "dog"), None]
    assert decide(proba, classes, head, reject=0.5, coverage=0.7).tolist() == [("cat",), (), None]
    # most probable first, as predict and serve list them, not in the classes' order
    assert decide(np.array([[0.4, 0.45, 0.15]]), classes, head, coverage=0.7).tolist() == [("dog", "cat")]
    with pytest.raises(UsageError, match="already one of this model's classes"):
        decide(proba, ("cat", "dog", UNKNOWN), head, reject=0.5)
    with pytest.raises(UsageError, match="'reject' must be 'auto' or a probability"):
        decide(proba, classes, head, reject=2)
    with pytest.raises(UsageError, match="multi-label"):
        decide(proba, classes, HeadSpec(3, multi_label=True), coverage=0.9)
    with pytest.raises(UsageError, match="needs the validation scores"):
        decide(proba, classes, HeadSpec(3), coverage=0.9)


def test_head_refuses_a_temperature_that_is_not_positive():
    with pytest.raises(UsageError, match="'temperature' must be a positive number"):
        HeadSpec(2, temperature=0.0)
    with pytest.raises(UsageError, match="'conformal_scores' must be numbers in \\[0, 1\\]"):
        HeadSpec(2, conformal_scores=(1.5,))


# -- a fitted model --------------------------------------------------------------------------------
def _hard_folder(root: Path, per_class: int = 30) -> Path:
    """Two classes of nearly the same colour: a tiny random backbone confuses some, so the
    temperature has something to correct."""
    for name, colour in (("plum", (120, 90, 110)), ("mauve", (110, 90, 120))):
        for i in range(per_class):
            make_image(root / name / f"{name}_{i:03d}.png", colour, seed=i)
    return root


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, tiny_weights: Path) -> Path:
    root = tmp_path_factory.mktemp("trust")
    # Not refitted: predictions.csv's validation rows are then the saved model's own.
    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    workflow="lightweight", engine="eager", val_fraction=0.4, batch_size=16,
                                    workers=0, verbose=0, refit=False)
    return clf.fit(_hard_folder(root / "data")).save(root / "run")


def test_fit_calibrates_on_validation_and_every_runtime_agrees(calibrated_run: Path):
    config = json.loads((calibrated_run / "config.json").read_text())["head"]
    calibration = read_metrics(calibrated_run).calibration
    assert calibration.temperature == config["temperature"] != 1.0
    assert calibration.split == "val" and calibration.images == 24
    assert len(config["conformal_scores"]) == 24 and 0 < config["reject_threshold"] < 1
    report = (calibrated_run / "report.html").read_text()
    assert f"Temperature <b>{calibration.temperature:.3f}</b>" in report and 'alt="reliability before"' in report
    model = headstart.load(calibrated_run, verbose=0).set_params(precision="fp32", workers=0)
    with open(calibrated_run / "predictions.csv") as f:  # the final model's validation probabilities, saved
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    saved = np.array([[float(r["p_mauve"]), float(r["p_plum"])] for r in rows])
    data = calibrated_run.parent / "data"
    np.testing.assert_allclose(model.predict_proba([data / r["path"] for r in rows]), saved, atol=1e-4)
    raw = headstart.load(calibrated_run, verbose=0).set_params(precision="fp32", workers=0)
    raw.config_ = dataclasses.replace(raw.config_, head=dataclasses.replace(raw.config_.head, temperature=1.0))
    assert not np.allclose(raw.predict_proba([data / r["path"] for r in rows]), saved, atol=1e-3)


def test_no_calibrate_keeps_the_raw_probabilities_and_still_names_sets(cli, tiny_args, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=20)
    status, captured = cli("train", data, "--out", tmp_path / "run", *tiny_args, "--epochs", "1",
                           "--val-fraction", "0.5", "--no-calibrate")
    assert status == ExitStatus.SUCCESS, captured.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["calibrate"] is False and config["head"]["temperature"] == 1.0
    assert len(config["head"]["conformal_scores"]) == 20
    assert read_metrics(tmp_path / "run").calibration is None


def test_class_activation_maps_are_exact(calibrated_run: Path):
    """The head is average pooling plus one dense layer: a map's mean plus the class's bias is its logit."""
    import torch

    from headstart.data.images import network_input

    model = headstart.load(calibrated_run, verbose=0).set_params(precision="fp32", workers=0)
    images = sorted((calibrated_run.parent / "data").rglob("*.png"))[:5]
    maps = model.explain(images)
    assert maps.shape[0] == 5 and maps.ndim == 3
    with torch.inference_mode():
        logits = model.net_.eval()(torch.from_numpy(np.stack([network_input(p, model.preprocessing)
                                                              for p in images]))).numpy()
    bias = model.net_.head.fc.bias.detach().numpy()
    best = logits.argmax(axis=1)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)) + bias[best], logits[np.arange(5), best], atol=1e-4)


def test_predict_rejects_names_sets_and_explains(cli, calibrated_run: Path, tmp_path: Path):
    data = calibrated_run.parent / "data"
    out, maps = tmp_path / "p.csv", tmp_path / "maps"
    status, captured = cli("predict", calibrated_run, data / "plum", "--reject", "auto", "--coverage", "0.9",
                           "--explain", maps, "--output", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "class", "probability", "score", "set", "error"]
    assert all(r["class"] in ("plum", "mauve", UNKNOWN) for r in rows)
    assert all((r["class"] == UNKNOWN) == (r["set"] == "") for r in rows)
    assert all(float(r["score"]) == float(r["probability"]) for r in rows)
    assert sorted(p.name for p in maps.iterdir()) == sorted(f"{Path(r['path']).stem}.png" for r in rows)
    model = headstart.load(calibrated_run, verbose=0)
    api = model.predict(data / "plum", reject="auto")
    assert [r["class"] for r in rows] == list(api)
    status, captured = cli("predict", calibrated_run, data / "plum", "--reject", "often")
    assert status == ExitStatus.USAGE and "'--reject' must be 'auto' or a probability" in captured.stderr


def test_exported_model_keeps_the_temperature_and_refuses_to_explain(cli, calibrated_run: Path, tmp_path: Path):
    from headstart.export.onnx_runtime import OnnxClassifier

    onnx = tmp_path / "m.onnx"
    assert cli("export", calibrated_run, "--output", onnx)[0] == ExitStatus.SUCCESS
    images = sorted((calibrated_run.parent / "data").rglob("*.png"))[:8]
    model = headstart.load(calibrated_run, verbose=0).set_params(precision="fp32", workers=0)
    exported = OnnxClassifier(onnx)
    np.testing.assert_allclose(exported.predict_proba(images), model.predict_proba(images), atol=1e-4)
    for name in ("temperature", "conformal_scores", "reject_threshold"):
        assert getattr(exported.head_, name) == getattr(model.head_, name)
    assert list(exported.predict(images, coverage=0.9)) == list(model.predict(images, coverage=0.9))
    status, captured = cli("predict", onnx, images[0], "--explain", tmp_path / "maps")
    assert status == ExitStatus.USAGE and "--explain needs a run folder" in captured.stderr


def test_serve_answers_scores_unknown_and_prediction_sets(cli, calibrated_run: Path, monkeypatch):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    import headstart.serve
    from headstart.model import open_model
    from headstart.serve import ServeConfig, create_app

    images = sorted((calibrated_run.parent / "data").rglob("*.png"))[:6]
    model = headstart.load(calibrated_run, verbose=0)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    with TestClient(create_app(open_model(calibrated_run), ServeConfig(max_images=8, reject="auto"))) as client:
        plain = client.post("/predict", files=files).json()["predictions"]  # the server's default: reject auto
        asked = client.post("/predict?reject=0.99&coverage=0.9", files=files).json()["predictions"]
        refused = client.post("/predict?coverage=2", files=files)
    proba = model.predict_proba(images)
    assert [e["score"] for e in plain] == pytest.approx(proba.max(axis=1).tolist(), abs=1e-5)
    assert [e["class"] for e in plain] == list(model.predict(images, reject="auto"))
    assert [e["class"] for e in asked] == list(model.predict(images, reject=0.99))
    assert UNKNOWN in [e["class"] for e in asked]  # 0.99 is above every score of this hard folder
    assert [tuple(e["prediction_set"]) for e in asked] == list(model.predict(images, reject=0.99, coverage=0.9))
    assert refused.status_code == 400 and "'coverage' must be" in refused.json()["error"]

    monkeypatch.setattr(headstart.serve, "serve", lambda *args, **kwargs: None)
    status, captured = cli("serve", calibrated_run, "--reject", "often")
    assert status == ExitStatus.USAGE and "'--reject' must be 'auto' or a probability" in captured.stderr


def test_the_report_maps_where_the_model_looked_in_its_confident_mistakes(cli, calibrated_run: Path, tmp_path: Path):
    from headstart.data.images import network_input
    from headstart.report.page import _where_it_looked
    from headstart.trust.cam import overlay

    note = "with the class activation map of its"
    assert note in (calibrated_run / "report.html").read_text()  # written by save, the model at hand
    assert cli("report", calibrated_run)[0] == ExitStatus.SUCCESS  # rebuilt: the model is loaded for the maps
    assert note in (calibrated_run / "report.html").read_text()
    images = sorted((calibrated_run.parent / "data").rglob("*.png"))[:2]
    model = headstart.load(calibrated_run, verbose=0)
    run = dataclasses.replace(read_run(calibrated_run), explainer=lambda: model)
    pictures = _where_it_looked(run, images)
    for image, picture, cam in zip(images, pictures, model.explain(images)):  # the predicted class's map
        np.testing.assert_array_equal(picture, overlay(network_input(image, model.preprocessing), cam))
    onnx, page = tmp_path / "m.onnx", tmp_path / "evaluation.html"
    assert cli("export", calibrated_run, "--output", onnx)[0] == ExitStatus.SUCCESS
    status, captured = cli("evaluate", onnx, calibrated_run.parent / "data", "--report", page)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "Most confidently wrong" in page.read_text() and note not in page.read_text()  # an export has no maps
