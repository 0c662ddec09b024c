"""The lightweight workflow: feature cache, engines, and the linear head."""

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.backbone.pretrained import create_backbone
from headstart.config import BackboneRequest, Preprocessing
from headstart.data.decode_ahead import DecodeAhead
from headstart.data.images import network_input
from headstart.errors import ExitStatus
from headstart.features import rows as feature_rows
from headstart.features.cache import CacheLayout
from headstart.features.engines import TOLERANCE, PooledFeatures, create_engine, feature_error
from headstart.features.neighbours import near_copies
from headstart.features.pipeline import FeatureRequest, extract_features
from headstart.features.rows import FeatureMatrix, Rows
from headstart.training.linear import fit_linear_head, fit_logistic, linear_probabilities, smoothed_scale
from headstart._console import Console

from conftest import TINY_BACKBONE, make_folder, make_image, shared_dataset


@pytest.fixture
def tiny_net():
    """A random-init tiny backbone as the pipeline takes it: module, spec, preprocessing."""
    torch.manual_seed(0)
    return create_backbone(BackboneRequest(TINY_BACKBONE, image_size=32), pretrained=False)


def extract(paths, tiny_net, cache_dir, engine="auto", flip=False):
    request = FeatureRequest(BackboneRequest(TINY_BACKBONE, image_size=32), engine, "cpu", flip, workers=0)
    return extract_features(paths, request, CacheLayout(cache_dir), Console(0), backbone=tiny_net).features


def test_features_are_computed_once_then_read_back(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=6).rglob("*.png"))
    first = extract(paths, tiny_net, tmp_path / "cache")
    assert first.computed == 12 and first.to_array().shape == (12, 256) and first.engine == "onnx"
    again = extract(paths, tiny_net, tmp_path / "cache")
    assert again.computed == 0
    # float16 storage: equal to what was computed, to half precision
    np.testing.assert_allclose(again.to_array(), first.to_array(), rtol=1e-3, atol=1e-3)


def test_a_changed_or_added_image_is_recomputed_alone(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=4).rglob("*.png"))
    before = extract(paths, tiny_net, tmp_path / "cache")
    make_image(paths[0], (250, 250, 250), seed=99)  # new content
    os.utime(paths[0], ns=(1, 1))  # and surely a new identity
    added = make_image(tmp_path / "d" / "red" / "new.png", (200, 40, 40), seed=42)
    after = extract([*paths, added], tiny_net, tmp_path / "cache")
    assert after.computed == 2
    assert not np.allclose(after.to_array()[0], before.to_array()[0])
    np.testing.assert_allclose(after.to_array()[1:8], before.to_array()[1:], rtol=1e-3, atol=1e-3)


def test_a_corrupted_entry_is_detected_and_rebuilt(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=3).rglob("*.png"))
    good = extract(paths, tiny_net, tmp_path / "cache")
    (db_path,) = (tmp_path / "cache" / "features").glob("*/features.sqlite")
    db = sqlite3.connect(db_path)
    (path, data), *_ = db.execute("SELECT path, data FROM features").fetchall()
    flipped_bits = bytes([data[0] ^ 0xFF]) + data[1:]
    with db:
        db.execute("UPDATE features SET data = ? WHERE path = ?", (flipped_bits, path))
        db.execute("UPDATE features SET data = ? WHERE rowid = 2", (b"short",))
    db.close()
    again = extract(paths, tiny_net, tmp_path / "cache")
    assert again.computed == 2
    np.testing.assert_allclose(again.to_array(), good.to_array(), rtol=1e-3, atol=1e-3)


def test_a_damaged_cache_database_is_rebuilt(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=2).rglob("*.png"))
    extract(paths, tiny_net, tmp_path / "cache")
    (db_path,) = (tmp_path / "cache" / "features").glob("*/features.sqlite")
    for extra in db_path.parent.glob("features.sqlite-*"):
        extra.unlink()
    db_path.write_bytes(b"this is not a database" * 100)
    assert extract(paths, tiny_net, tmp_path / "cache").computed == 4


def test_another_extractor_gets_another_cache(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=2).rglob("*.png"))
    extract(paths, tiny_net, tmp_path / "cache")
    assert extract(paths, tiny_net, tmp_path / "cache", engine="eager").computed == 4
    assert extract(paths, tiny_net, tmp_path / "cache", engine="eager").computed == 0


def test_mirror_features_are_cached_too(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=2).rglob("*.png"))
    flipped = extract(paths, tiny_net, tmp_path / "cache", flip=True)
    mirrored = flipped.flipped.read(np.arange(4))
    assert mirrored.shape == flipped.to_array().shape
    assert not np.allclose(mirrored, flipped.to_array())
    assert extract(paths, tiny_net, tmp_path / "cache", flip=True).computed == 0
    # --flip-features' extra rows are what the mirror photos themselves give.
    from PIL import Image, ImageOps

    mirrors = [tmp_path / "m" / f"{i}.png" for i in range(len(paths))]
    for source, target in zip(paths, mirrors):
        target.parent.mkdir(exist_ok=True)
        ImageOps.mirror(Image.open(source)).save(target)
    np.testing.assert_allclose(extract(mirrors, tiny_net, tmp_path / "cache").to_array(), mirrored, atol=2e-2)


def test_undecodable_images_are_marked(tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=2).rglob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])
    result = extract([*paths, broken], tiny_net, tmp_path / "cache")
    assert result.ok.tolist() == [True] * 4 + [False]
    array = result.to_array()
    assert np.isnan(array[-1]).all() and not np.isnan(array[:-1]).any()
    assert broken in result.failed


TINY_INPUT = Preprocessing(input_size=(3, 32, 32), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                           crop_pct=0.875)


def take_all(ahead: DecodeAhead, size: int) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    taken = [ahead.take(i, min(i + size, len(ahead.paths))) for i in range(0, len(ahead.paths), size)]
    return np.concatenate([t[0] for t in taken]), sum((t[1] for t in taken), []), sum((t[2] for t in taken), [])


def test_decoding_ahead_gives_every_image_in_order_as_the_network_takes_it(tmp_path: Path):
    paths = sorted(make_folder(tmp_path / "d", per_class=5).rglob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])
    paths = [*paths[:4], broken, *paths[4:]]
    ahead = DecodeAhead(paths, TINY_INPUT, processes=2, ahead=3)  # fewer slots than images: slots are reused
    try:
        pixels, positions, failures = take_all(ahead, 2)
    finally:
        ahead.close()
    assert positions == [i for i in range(len(paths)) if i != 4]
    assert [i for i, _ in failures] == [4] and "truncated" in failures[0][1]
    np.testing.assert_array_equal(pixels, np.stack([network_input(paths[i], TINY_INPUT) for i in positions]))


def test_images_of_a_killed_decoding_child_are_decoded_by_the_parent(tmp_path: Path):
    paths = sorted(make_folder(tmp_path / "d", per_class=6).rglob("*.png"))
    ahead = DecodeAhead(paths, TINY_INPUT, processes=2, ahead=2)  # the children wait on a tiny ring
    ahead._children[1].kill()
    try:
        pixels, positions, failures = take_all(ahead, 2)
    finally:
        ahead.close()
    assert positions == list(range(len(paths))) and not failures
    np.testing.assert_array_equal(pixels, np.stack([network_input(p, TINY_INPUT) for p in paths]))


@pytest.mark.parametrize("engine,limit", [("onnx", 1e-4), ("bf16", TOLERANCE)])
def test_engines_match_eager_fp32(tmp_path: Path, tiny_net, engine: str, limit: float):
    backbone, _, pre = tiny_net
    module = PooledFeatures(backbone, pre)
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    make = lambda name: create_engine(name, module, pre.input_size, torch.device("cpu"),  # noqa: E731
                                      lambda n: tmp_path / f"{n}.onnx", None, Console(0))
    reference = make("eager")(images)
    assert feature_error(make(engine)(images), reference) <= limit
    assert reference.shape == (5, 256)


class _TwoLayers(torch.nn.Module):
    """A backbone of two convolutions: torch.compile costs seconds per layer it builds kernels for."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8),
                                          torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def test_the_compile_engine_builds_kernels_that_match_eager_fp32(tmp_path: Path):
    pre = Preprocessing((3, 32, 32), "bicubic", (0.5,) * 3, (0.5,) * 3, 1.0)
    module = PooledFeatures(_TwoLayers().eval(), pre)
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    make = lambda name: create_engine(name, module, pre.input_size, torch.device("cpu"),  # noqa: E731
                                      lambda n: tmp_path / f"{n}.onnx", None, Console(0))
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    compiled = make("compile")(images)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo captured the network: compiled, not eager
    assert feature_error(compiled, make("eager")(images)) <= 1e-4


def gaussian_classes(n_per_class, shift, seed=0, counts=None):
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class, n_per_class]
    x = np.concatenate([rng.normal(i * shift, 1.0, size=(c, 8)) for i, c in enumerate(counts)])
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    return x.astype(np.float32), y


def test_linear_head_picks_l2_on_validation_and_applies_to_raw_features():
    x, y = gaussian_classes(100, 0.8)
    xv, yv = gaussian_classes(100, 0.8, seed=1)
    head = fit_linear_head(Rows.from_array(x * 10 + 3, y), Rows.from_array(xv * 10 + 3, yv), num_classes=2)
    assert head.weight.shape == (2, 8) and head.val.accuracy > 0.85
    proba = linear_probabilities(head.weight, head.bias, xv * 10 + 3)
    assert np.allclose(proba.sum(1), 1) and (proba.argmax(1) == yv).mean() == pytest.approx(head.val.accuracy)


def test_a_refitted_head_keeps_the_strength_and_the_honest_figures_of_the_head_before_it():
    x, y = gaussian_classes(60, 1.0)
    xv, yv = gaussian_classes(60, 1.0, seed=1)
    train, val = Rows.from_array(x, y), Rows.from_array(xv, yv)
    both = Rows.from_array(np.concatenate([x, xv]), np.concatenate([y, yv]))
    plain = fit_linear_head(train, val, num_classes=2)
    refitted = fit_linear_head(train, val, num_classes=2, refit=both)
    assert refitted.C == plain.C and refitted.val == plain.val  # chosen on validation, figures from before
    np.testing.assert_array_equal(refitted.guarded[0], plain.weight)
    np.testing.assert_allclose(refitted.val_proba, linear_probabilities(plain.weight, plain.bias, xv), atol=1e-3)
    np.testing.assert_allclose(refitted.weight, fit_logistic(both, 2, plain.C)[0], atol=1e-3)
    assert not np.allclose(refitted.weight, plain.weight)


def test_fine_tuning_starts_from_the_head_scaled_to_its_smoothed_loss():
    x, y = gaussian_classes(200, 3.0)  # separable: the exact head is far more confident than smoothing allows
    rows = Rows.from_array(x, y)
    head = fit_linear_head(rows, None, num_classes=2)
    scale = smoothed_scale(rows, head.weight, head.bias, 0.1)

    def smoothed_loss(s: float) -> float:
        p = linear_probabilities(head.weight * s, head.bias * s, x)
        target = np.full_like(p, 0.05)
        target[np.arange(len(y)), y] = 0.95
        return float(-(target * np.log(p)).sum(1).mean())

    assert 0 < scale < 1 and smoothed_loss(scale) < min(smoothed_loss(1.0), smoothed_loss(scale * 0.8),
                                                         smoothed_loss(min(scale * 1.25, 1.0)))
    assert smoothed_scale(rows, head.weight, head.bias, 0.0) == 1.0  # nothing to soften without smoothing


def test_linear_head_cross_validates_without_a_validation_split():
    x, y = gaussian_classes(30, 1.5)
    head = fit_linear_head(Rows.from_array(x, y), None, num_classes=2)
    assert head.val is None and head.train.accuracy > 0.85 and head.C in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def test_balanced_class_weight_raises_minority_recall():
    x, y = gaussian_classes(0, 1.0, counts=[400, 20])
    xv, yv = gaussian_classes(0, 1.0, seed=1, counts=[200, 200])
    plain = fit_linear_head(Rows.from_array(x, y), None, num_classes=2)
    balanced = fit_linear_head(Rows.from_array(x, y), None, num_classes=2, class_weight="balanced")
    recall = lambda h: (linear_probabilities(h.weight, h.bias, xv).argmax(1)[yv == 1] == 1).mean()  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_logistic_head_minimises_scikit_learns_objective(class_weight):
    """Same objective as LogisticRegression (multinomial, L2 on the weights, standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) * [1, 2, 5, 0.5, 1, 3] + 4).astype(np.float32)
    y = np.concatenate([np.zeros(150, int), np.ones(100, int), np.full(50, 2)])
    x[y == 1, 0] += 1.5
    x[y == 2, 1] += 3
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.05, class_weight=class_weight, tol=1e-10, max_iter=10_000)
    reference.fit(scaler.transform(x), y)
    weight, bias = fit_logistic(Rows.from_array(x, y), 3, C=0.05, class_weight=class_weight)
    ours = linear_probabilities(weight, bias, x)
    np.testing.assert_allclose(ours, reference.predict_proba(scaler.transform(x)), atol=2e-3)


def test_streamed_rows_give_the_same_head_as_resident_rows(monkeypatch):
    x, y = gaussian_classes(300, 0.8)
    resident = fit_linear_head(Rows.from_array(x, y), None, num_classes=2)
    # Nothing kept in memory, and chunks of 64 rows: the head must not change.
    monkeypatch.setattr(feature_rows, "RESIDENT_BYTES", 0)
    monkeypatch.setattr(feature_rows, "CHUNK_ROWS", 64)
    rows = Rows.from_array(x, y)
    assert rows._resident is None and len(list(rows.chunks())) == 10
    streamed = fit_linear_head(rows, None, num_classes=2)
    assert streamed.C == resident.C
    np.testing.assert_allclose(streamed.weight, resident.weight, rtol=1e-4, atol=1e-5)


def test_rows_select_across_matrices():
    a = FeatureMatrix.from_array(np.arange(20, dtype=np.float32).reshape(10, 2))
    b = FeatureMatrix.from_array(-np.arange(20, dtype=np.float32).reshape(10, 2))
    rows = Rows([(a, np.array([1, 3, 4])), (b, np.array([0, 9]))], np.array([0, 1, 0, 1, 1]))
    np.testing.assert_array_equal(rows.to_array()[:, 0], [2, 6, 8, 0, -18])
    part = rows.subset(np.array([1, 3, 4]))
    np.testing.assert_array_equal(part.to_array()[:, 0], [6, 0, -18])
    assert part.labels.tolist() == [1, 1, 1]


def test_lightweight_fit_saves_the_same_end_to_end_model(tmp_path: Path, tiny_weights: Path):
    data = make_folder(tmp_path / "d", per_class=10, classes=("red", "blue", "green"))
    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    workflow="lightweight", engine="eager", val_fraction=0.3, workers=0,
                                    precision="fp32", cache_dir=tmp_path / "cache", verbose=0).fit(data)
    assert clf.metrics_.workflow == "lightweight" and clf.metrics_.features.computed == 30
    assert [row["stage"] for row in clf.history_] == ["head"]
    val_paths = [s.path for s in clf.split_.val]
    # The saved end-to-end model predicts what the head predicted on cached features.
    loaded = headstart.load(clf.save(tmp_path / "run"), verbose=0)
    loaded.set_params(precision="fp32", workers=0)
    predicted = loaded.predict_proba(val_paths).argmax(1)
    agree = (predicted == np.array([s.label for s in clf.split_.val])).mean()
    assert agree == pytest.approx(clf.metrics_.val.accuracy)
    again = headstart.ImageClassifier(**{**clf.get_params(), "class_weight": "balanced"}).fit(data)
    assert again.metrics_.features.computed == 0


# `headstart ARGV` in a fresh process, as a user runs it, saying which heavy libraries it imported.
_HEADSTART = """
import sys
from headstart.cli import main
status = main(sys.argv[1:])
print("imported:", [m for m in ("torch", "torchvision", "timm") if m in sys.modules])
sys.exit(status)
"""


def _same_tensors(a: Path, b: Path) -> bool:
    """Same names, dtypes and values (the files' bytes may differ: the metadata's order varies)."""
    from safetensors.numpy import load_file

    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and np.array_equal(first[k], second[k]) for k in first)


def _comparable(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("timings", "train_seconds", "features"):
        metrics.pop(key)
    metrics["head"].pop("seconds")
    with open(run / "history.csv") as f:
        metrics["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    return metrics


def test_a_rerun_with_every_feature_cached_needs_no_pytorch(cli, tmp_path: Path, tiny_args):
    data = make_folder(tmp_path / "d", per_class=8)
    args = [data, *tiny_args, "--workflow", "lightweight", "--device", "cpu", "--cache-dir", tmp_path / "cache"]
    status, captured = cli("train", *args, "--out", tmp_path / "first")
    assert status == ExitStatus.SUCCESS, captured.stderr
    rerun = subprocess.run([sys.executable, "-c", _HEADSTART, "train", *map(str, args), "--out",
                            str(tmp_path / "again")], capture_output=True, text=True)
    assert rerun.returncode == ExitStatus.SUCCESS, rerun.stderr
    assert "imported: []" in rerun.stdout
    assert "the head is fitted without loading the backbone" in rerun.stderr
    # What it wrote is what the run through the network wrote.
    assert _same_tensors(tmp_path / "again" / "model.safetensors", tmp_path / "first" / "model.safetensors")
    for name in ("config.json", "split.csv", "predictions.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name
    assert _comparable(tmp_path / "again") == _comparable(tmp_path / "first")
    features = json.loads((tmp_path / "again" / "metrics.json").read_text())["features"]
    assert features["computed"] == 0 and features["cached"] == 16 and features["engine"] == "onnx"
    assert (tmp_path / "again" / "report.html").is_file()


def test_a_model_fitted_from_cached_features_predicts_like_one_fitted_through_the_network(
        tmp_path: Path, tiny_weights: Path):
    data = make_folder(tmp_path / "d", per_class=8)
    params = dict(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32, workflow="lightweight",
                  engine="eager", device="cpu", precision="fp32", workers=0, cache_dir=tmp_path / "cache",
                  verbose=0)
    first = headstart.ImageClassifier(**params).fit(data)
    again = headstart.ImageClassifier(**params).fit(data)
    assert again.metrics_.features.computed == 0
    assert again._net is None  # fitted from the cache: the network is built when first needed
    images = sorted(data.rglob("*.png"))
    np.testing.assert_allclose(again.predict_proba(images), first.predict_proba(images), atol=1e-6)


def test_a_damaged_backbone_record_is_never_used(cli, tmp_path: Path, tiny_args):
    data = make_folder(tmp_path / "d", per_class=8)
    args = [data, *tiny_args, "--workflow", "lightweight", "--device", "cpu", "--cache-dir", tmp_path / "cache"]
    status, captured = cli("train", *args, "--out", tmp_path / "first")
    assert status == ExitStatus.SUCCESS, captured.stderr
    [record] = (tmp_path / "cache" / "backbones").iterdir()
    tensors = record / "tensors.safetensors"
    intact = tensors.read_bytes()
    tensors.write_bytes(intact[:-4] + bytes(4))  # the last weights zeroed: the file still parses
    status, captured = cli("train", *args, "--out", tmp_path / "again")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "without loading the backbone" not in captured.stderr
    assert _same_tensors(tmp_path / "again" / "model.safetensors", tmp_path / "first" / "model.safetensors")
    assert tensors.read_bytes() == intact  # rewritten by the run through the network


def test_new_images_get_their_features_from_the_exported_engine_without_pytorch(cli, tmp_path: Path, tiny_args):
    # One decoding process: decoded ahead on the fast path, by a DataLoader worker on the other.
    options = [*tiny_args, "--workflow", "lightweight", "--device", "cpu", "--workers", "1"]
    cache = tmp_path / "cache"
    status, captured = cli("train", make_folder(tmp_path / "first", per_class=6), *options, "--cache-dir", cache,
                           "--out", tmp_path / "run")  # exports and checks the engine, records the backbone
    assert status == ExitStatus.SUCCESS, captured.stderr
    # The same engine file, but nothing else: the next run goes through PyTorch and its DataLoader.
    shutil.copytree(cache, tmp_path / "bare", ignore=shutil.ignore_patterns("features", "backbones", "*.json"))
    new = make_folder(tmp_path / "new", per_class=9)
    fast = subprocess.run([sys.executable, "-c", _HEADSTART, "train", str(new), *map(str, options), "--cache-dir",
                           str(cache), "--out", str(tmp_path / "fast")], capture_output=True, text=True)
    assert fast.returncode == ExitStatus.SUCCESS, fast.stderr
    assert "imported: []" in fast.stdout and "18 image(s) with engine onnx, exported earlier" in fast.stderr
    status, captured = cli("train", new, *options, "--cache-dir", tmp_path / "bare", "--out", tmp_path / "slow")
    assert status == ExitStatus.SUCCESS and "exported earlier" not in captured.stderr, captured.stderr
    # Decoded ahead in child processes and run by ONNX Runtime alone, or through PyTorch: the same.
    assert _same_tensors(tmp_path / "fast" / "model.safetensors", tmp_path / "slow" / "model.safetensors")
    assert (tmp_path / "fast" / "predictions.csv").read_bytes() == (tmp_path / "slow" / "predictions.csv").read_bytes()
    assert _comparable(tmp_path / "fast") == _comparable(tmp_path / "slow")

    [engine] = (cache / "engines").glob("*.onnx")
    engine.write_bytes(engine.read_bytes()[:1000])  # damaged: never used, exported again
    status, captured = cli("train", make_folder(tmp_path / "more", per_class=4), *options, "--cache-dir", cache,
                           "--out", tmp_path / "after")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "exported earlier" not in captured.stderr and "with engine onnx" in captured.stderr
    assert engine.stat().st_size > 1000


def test_cache_command_shows_and_clears(cli, tmp_path: Path, tiny_net):
    paths = sorted(make_folder(tmp_path / "d", per_class=2).rglob("*.png"))
    extract(paths, tiny_net, tmp_path / "cache")
    status, captured = cli("cache", "info", "--cache-dir", tmp_path / "cache")
    assert status == ExitStatus.SUCCESS and "test_efficientnet 32 px, engine onnx: 4 features" in captured.stdout
    assert "exported engines: 1" in captured.stdout
    status, captured = cli("cache", "clear", "--cache-dir", tmp_path / "cache")
    assert status == ExitStatus.SUCCESS and "cleared" in captured.stdout
    assert not (tmp_path / "cache" / "features").exists()
    _, captured = cli("cache", "info", "--cache-dir", tmp_path / "cache")
    assert "empty" in captured.stdout


def test_tta_averages_an_image_with_its_mirror(trained_tiny, tmp_path: Path):
    clf, data = trained_tiny
    image = make_image(tmp_path / "x.png", (200, 40, 40), seed=3)
    mirror = tmp_path / "mirror.png"
    from PIL import Image, ImageOps

    ImageOps.mirror(Image.open(image)).save(mirror)
    plain, flipped = clf.predict_proba([image, mirror])
    np.testing.assert_allclose(clf.predict_proba([image], tta=True)[0], (plain + flipped) / 2, atol=1e-5)


@pytest.fixture
def trained_tiny(tmp_path: Path, tiny_weights: Path):
    data = make_folder(tmp_path / "d", per_class=6)
    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    workflow="lightweight", engine="eager", workers=0, precision="fp32",
                                    cache_dir=tmp_path / "cache", verbose=0).fit(data)
    return clf, data


def test_near_copies_names_the_training_row_each_held_out_copy_repeats():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 64)).astype(np.float32) + 5  # all positive, as pooled activations are
    others = rng.normal(size=(3, 64)).astype(np.float32) + 5
    held_out = np.concatenate([train[[7, 3]] + rng.normal(scale=0.05, size=(2, 64)), others])
    assert near_copies(held_out, train).tolist() == [7, 3, -1, -1, -1]
    assert near_copies(held_out[:0], train).tolist() == []


@pytest.mark.slow
def test_train_warns_of_validation_photos_that_are_near_copies_of_training_photos(cli, tmp_path: Path):
    """Real photos and the embedded backbone: a training cat resized and re-encoded into val/ is
    named; the distinct photos around it are not."""
    from PIL import Image

    source = shared_dataset("cats_and_dogs_filtered") / "train"
    data = tmp_path / "data"
    for name in ("cats", "dogs"):
        photos = sorted((source / name).glob("*.jpg"))[:12]
        for split, chosen in (("train", photos[:8]), ("val", photos[8:])):
            (data / split / name).mkdir(parents=True)
            for photo in chosen:
                shutil.copy(photo, data / split / name)
    copied = sorted((data / "train" / "cats").glob("*.jpg"))[2]
    image = Image.open(copied)
    image.resize((image.width * 4 // 5, image.height * 4 // 5)).save(data / "val" / "cats" / "again.jpg", quality=70)
    status, captured = cli("train", data, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                           "--engine", "eager", "--workers", "0")
    assert status == ExitStatus.SUCCESS, captured.stderr
    [warning] = [line for line in captured.stderr.splitlines() if "near-identical" in line]
    assert warning.startswith("headstart: warning: 1 validation photo(s) are near-identical to training photos")
    assert f"{data / 'val' / 'cats' / 'again.jpg'} and {copied}" in warning
