"""``headstart inspect``: the checks as pure functions, the command, and planted problems in real photos."""

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart._console import Console
from headstart.cli import main
from headstart.errors import ExitStatus
from headstart.features.embeddings import normalized_embeddings
from headstart.features.neighbours import find_near_duplicates
from headstart.inspection import (
    CSV_COLUMNS,
    class_imbalance,
    find_exact_duplicates,
    find_label_errors,
)

from conftest import TINY_BACKBONE, make_folder, shared_dataset


def rows_of(out: Path) -> list[dict]:
    with open(out / "inspect.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- the pure functions -------------------------------------------------------------------------

def test_exact_duplicates_are_grouped_by_digest():
    assert find_exact_duplicates(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4]]
    assert find_exact_duplicates(["a", "b", "c"]) == []


def test_embeddings_are_centred_unit_rows_and_undecodable_rows_zero():
    features = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [np.nan, np.nan, np.nan], [2.0, 5.0, 2.0]])
    e = normalized_embeddings(features)
    assert not np.isnan(e).any() and np.all(e[2] == 0)
    np.testing.assert_allclose(np.linalg.norm(e[[0, 1, 3]], axis=1), 1, rtol=1e-6)
    centred = features[[0, 1, 3]] - features[[0, 1, 3]].mean(axis=0)
    np.testing.assert_allclose(e[0], centred[0] / np.linalg.norm(centred[0]), rtol=1e-6)


def test_near_duplicates_blockwise_equal_the_full_matrix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    x[37] = x[3] + 0.01 * rng.normal(size=8)  # a near copy
    x[20] = x[11]  # an identical one
    e = normalized_embeddings(x)
    full = e @ e.T
    expected = {(i, j) for i in range(50) for j in range(i + 1, 50) if full[i, j] >= 0.6}
    for block in (1, 7, 1024):
        pairs = find_near_duplicates(e, 0.6, block=block)
        assert {(i, j) for i, j, _ in pairs} == expected
        assert [s for _, _, s in pairs] == sorted((s for _, _, s in pairs), reverse=True)
    top = find_near_duplicates(e, 0.99)
    assert [(i, j) for i, j, _ in top] == [(11, 20), (3, 37)]
    assert top[0][2] == pytest.approx(1.0, abs=1e-5)


def test_label_errors_by_confident_learning():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    proba = np.array([
        [0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.95, 0.0, 0.05],
        [0.05, 0.9, 0.05],  # labelled 0, confidently 1: flagged
        [0.1, 0.85, 0.05], [0.0, 0.95, 0.05], [0.2, 0.7, 0.1],
        [0.1, 0.1, 0.8],  # labelled 1, confidently 2: flagged
        [0.2, 0.2, 0.6], [0.1, 0.1, 0.8],
        [0.5, 0.25, 0.25],  # labelled 2, unsure, but 0.5 is below t_0: not flagged
    ])
    # thresholds: t_0 = 0.675, t_1 = 0.65, t_2 = 0.55; the least self-confident first
    assert find_label_errors(proba, labels) == [(3, 1, pytest.approx(0.05)), (7, 2, pytest.approx(0.1))]
    # Row 0 passes class 1's low threshold (0.4), but also its own (0.5), where it is more
    # probable: as in cleanlab's confident joint, it is not flagged.
    labels = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[0.55, 0.42, 0.03], [0.45, 0.3, 0.25], [0.3, 0.4, 0.3], [0.3, 0.4, 0.3],
                      [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    assert find_label_errors(proba, labels) == []
    proba[1] = [0.1, 0.45, 0.45]  # now t_0 = 0.325, and row 1 is confidently class 1 only
    assert find_label_errors(proba, labels) == [(1, 1, pytest.approx(0.1))]


def test_class_imbalance_by_ratio_and_by_scarcity():
    counts = {"train": {"a": 90, "b": 30, "c": 31}, "val": {"a": 20, "b": 5, "c": 0}, "test": {"a": 0, "b": 0, "c": 0}}
    found = {(split, name) for split, name, _ in class_imbalance(counts)}
    assert found == {("train", "b"), ("val", "b"), ("val", "c")}
    why = {(s, n): w for s, n, w in class_imbalance(counts)}
    assert "a has 90 images, b 30 (3.0x)" in why["train", "b"]
    assert "fewer than 10" in why["val", "b"] and "c 0" in why["val", "c"]
    assert class_imbalance({"train": {"a": 20, "b": 11}}) == []


def test_imbalance_counts_only_the_images_that_decoded(tmp_path: Path):
    from headstart.data.dataset import DatasetSplit, Sample

    multi = DatasetSplit(tmp_path, ("a", "b"), [Sample(tmp_path / "1", -1, (0, 1)), Sample(tmp_path / "2", -1, (1,))],
                         [Sample(tmp_path / "3", -1, (0,))], [], multi_label=True)
    assert multi.counts() == {"train": {"a": 1, "b": 2}, "val": {"a": 1, "b": 0}, "test": {"a": 0, "b": 0}}
    # One flag per image, train then val then test: the second and third failed to decode.
    assert multi.counts([True, False, False]) == {"train": {"a": 1, "b": 1}, "val": {"a": 0, "b": 0},
                                                  "test": {"a": 0, "b": 0}}


# -- the command, on tiny generated images ------------------------------------------------------

@pytest.fixture
def inspect_args(tiny_weights: Path, tmp_path: Path) -> list[str]:
    return ["--backbone", TINY_BACKBONE, "--weights", str(tiny_weights), "--image-size", "32", "--engine",
            "eager", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]


def test_inspect_flags_leaks_conflicts_and_unreadable_files(cli, tmp_path: Path, inspect_args):
    data = make_folder(tmp_path / "data", per_class=12, split_folders=True)
    shutil.copy(data / "train" / "red" / "red_001.png", data / "val" / "red" / "copy.png")  # a leak
    shutil.copy(data / "train" / "blue" / "blue_001.png", data / "train" / "red" / "blue_copy.png")  # two labels
    (data / "train" / "blue" / "broken.jpg").write_text("not a jpeg")
    shutil.copy(data / "train" / "red" / "red_002.png", data / "train" / "red" / "zzz_copy.png")  # harmless
    out = tmp_path / "report"
    status, captured = cli("inspect", data, "--out", out, *inspect_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = rows_of(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    exact = {r["path"]: r for r in rows if r["kind"] == "exact_duplicate"}
    assert set(exact) == {"val/red/copy.png", "train/red/blue_copy.png", "train/red/zzz_copy.png"}
    leak, conflict = exact["val/red/copy.png"], exact["train/red/blue_copy.png"]
    assert leak["severity"] == "high" and leak["other_path"] == "train/red/red_001.png"
    assert (leak["split"], leak["other_split"]) == ("val", "train") and "leak" in leak["detail"]
    assert conflict["severity"] == "high" and conflict["other_path"] == "train/blue/blue_001.png"
    assert "conflicting labels" in conflict["detail"]
    unreadable = [r for r in rows if r["kind"] == "unreadable"]
    assert [(r["path"], r["split"], r["label"]) for r in unreadable] == [("train/blue/broken.jpg", "train", "blue")]
    assert "not an image" in unreadable[0]["detail"]
    assert "warning: exact duplicate val/red/copy.png" in captured.stderr
    assert "exact duplicates: 3 (2 across splits or with conflicting labels)" in captured.stdout
    assert str(out / "inspect.csv") in captured.stdout and str(out / "inspect.html") in captured.stdout
    html = (out / "inspect.html").read_text()
    assert 'class="alert"' in html and "Clean bill" not in html
    # Files and the photos they copy, counted apart (a headline adding them up overstated the leaks).
    assert re.search(r"<strong>\d+ file\(s\) duplicating \d+ other\(s\) across splits or with conflicting labels", html)
    # The leaks head the table, whatever their names: a long list must not bury them.
    assert html.index("<code>val/red/copy.png</code>") < html.index("<code>train/red/zzz_copy.png</code>")
    assert "http://" not in html and "https://" not in html  # self-contained: opens offline
    assert html.count("data:image/jpeg;base64,") >= 4  # the duplicate pairs, side by side


def test_inspect_without_split_folders_counts_everything_as_train(cli, tmp_path: Path, inspect_args,
                                                                   monkeypatch):
    data = make_folder(tmp_path / "data", per_class=12, classes=("red", "blue", "green"))
    for i in range(9):
        (data / "green" / f"green_{i:03d}.png").unlink()
    monkeypatch.chdir(tmp_path)
    status, captured = cli("inspect", data, *inspect_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    (out,) = (tmp_path / "runs").iterdir()  # the default: a new folder under runs/
    assert out.name.startswith("inspect-")
    rows = rows_of(out)
    assert {r["split"] for r in rows} <= {"train"} and not [r for r in rows if r["severity"] == "high"]
    imbalance = [r for r in rows if r["kind"] == "class_imbalance"]
    assert [(r["path"], r["label"]) for r in imbalance] == [("green", "green")]
    assert "has 12 images, green 3 (4.0x)" in imbalance[0]["detail"]
    assert "likely label errors: " in captured.stdout


# `headstart ARGV` in a fresh process, saying which heavy libraries it imported.
_HEADSTART = """
import sys
from headstart.cli import main
status = main(sys.argv[1:])
print("imported:", [m for m in ("torch", "torchvision", "timm") if m in sys.modules])
sys.exit(status)
"""


def test_inspecting_again_needs_no_pytorch(cli, tmp_path: Path, inspect_args):
    data = make_folder(tmp_path / "data", per_class=12, split_folders=True)
    args = [*inspect_args, "--device", "cpu"]
    status, captured = cli("inspect", data, "--out", tmp_path / "first", *args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    again = subprocess.run([sys.executable, "-c", _HEADSTART, "inspect", str(data), "--out", str(tmp_path / "again"),
                            *map(str, args)], capture_output=True, text=True)
    assert again.returncode == ExitStatus.SUCCESS, again.stderr
    assert "imported: []" in again.stdout  # features from the cache, the backbone on record
    assert rows_of(tmp_path / "again") == rows_of(tmp_path / "first")


def test_inspect_errors_are_one_line(cli, tmp_path: Path, inspect_args):
    status, captured = cli("inspect", tmp_path / "nowhere", "--out", tmp_path / "o", *inspect_args)
    assert status == ExitStatus.DATA
    assert captured.stderr.strip().count("\n") == 0 and "nowhere" in captured.stderr
    assert "Traceback" not in captured.stderr and not (tmp_path / "o").exists()

    data = make_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status, captured = cli("inspect", data, "--out", out, *inspect_args)
    assert status == ExitStatus.USAGE and "not empty" in captured.stderr and "--overwrite" in captured.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    status, captured = cli("inspect", data, "--out", data / "report", *inspect_args)
    assert status == ExitStatus.USAGE and "inside DATA" in captured.stderr
    assert not (data / "report").exists()

    status, captured = cli("inspect", data, "--near-duplicate", "1.5", *inspect_args)
    assert status == ExitStatus.USAGE and "--near-duplicate" in captured.stderr
    status, captured = cli("inspect", data, "--folds", "1", *inspect_args)
    assert status == ExitStatus.USAGE and "--folds" in captured.stderr


# -- real photos: a clean subset, then the same with four planted problems ----------------------

PER_CLASS = {"train": 40, "validation": 15}


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory) -> dict:
    """Inspect a copy of a few real photos, then plant four problems in it and inspect again.

    One cache folder for both runs: the second computes the features of the changed files only.
    """
    source = shared_dataset("cats_and_dogs_filtered")
    root = tmp_path_factory.mktemp("photos")
    data, cache = root / "data", root / "cache"
    for split, count in PER_CLASS.items():
        for label in ("cats", "dogs"):
            names = sorted((source / split / label).iterdir(), key=lambda p: p.name)[:count]
            (data / split / label).mkdir(parents=True)
            for path in names:
                shutil.copyfile(path, data / split / label / path.name)

    def inspect(out: Path) -> tuple[int, str, str, list[dict]]:
        err, stdout = io.StringIO(), io.StringIO()
        status = main(["inspect", str(data), "--out", str(out), "--cache-dir", str(cache)],
                      Console(err=err, out=stdout))
        return status, err.getvalue(), stdout.getvalue(), rows_of(out) if status == 0 else []

    runs = {"clean": (*inspect(root / "clean"), root / "clean")}
    shutil.copyfile(data / "train" / "cats" / "cat.0.jpg", data / "validation" / "cats" / "cat.0.jpg")
    (data / "train" / "dogs" / "dog.0.jpg").rename(data / "train" / "cats" / "dog.0.jpg")
    truncated = data / "validation" / "dogs" / "dog.2000.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with Image.open(data / "train" / "dogs" / "dog.1.jpg") as image:  # resized and re-encoded: not the same bytes
        image.resize((image.width * 9 // 10, image.height * 9 // 10)).save(
            data / "validation" / "dogs" / "dog.1-small.jpg", quality=75)
    runs["planted"] = (*inspect(root / "planted"), root / "planted")
    return runs


@pytest.mark.slow
def test_a_clean_subset_of_real_photos_gets_a_clean_bill(real_photos):
    status, err, stdout, rows, out = real_photos["clean"]
    assert status == ExitStatus.SUCCESS, err
    assert rows == []
    assert "Clean bill" in (out / "inspect.html").read_text()
    assert "label errors: none" in stdout and "near-duplicates: none" in stdout


@pytest.mark.slow
def test_planted_leaks_flipped_label_and_truncated_jpeg_are_found(real_photos):
    status, err, stdout, rows, out = real_photos["planted"]
    assert status == ExitStatus.SUCCESS, err
    assert {(r["kind"], r["path"]) for r in rows} == {
        ("exact_duplicate", "validation/cats/cat.0.jpg"),
        ("near_duplicate", "validation/dogs/dog.1-small.jpg"),
        ("label_error", "train/cats/dog.0.jpg"),
        ("unreadable", "validation/dogs/dog.2000.jpg"),
    }
    by_kind = {r["kind"]: r for r in rows}
    leak = by_kind["exact_duplicate"]
    assert (leak["severity"], leak["other_path"], leak["other_split"]) == ("high", "train/cats/cat.0.jpg", "train")
    near = by_kind["near_duplicate"]
    assert (near["severity"], near["other_path"]) == ("high", "train/dogs/dog.1.jpg") and float(near["score"]) > 0.95
    flipped = by_kind["label_error"]
    assert (flipped["label"], flipped["suggested"]) == ("cats", "dogs") and float(flipped["score"]) < 0.2
    assert "truncated" in by_kind["unreadable"]["detail"]
    assert "warning: exact duplicate validation/cats/cat.0.jpg" in err
    # The rest came from the cache, and these from the engine the first run exported: no backbone built.
    assert "extracting features of 4 image(s) with engine onnx, exported earlier" in err
    html = (out / "inspect.html").read_text()
    assert 'class="alert"' in html and "dog.0.jpg" in html
