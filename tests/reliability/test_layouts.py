"""Downloaded datasets' folder layouts: split folders under their usual names, never a silent wrong
model; image-like files that cannot be used are listed with the reason, not dropped in silence."""

from pathlib import Path

import pytest

from headstart.data import discover
from headstart.errors import DataError, ExitStatus
from headstart.inspection import load_split

from conftest import COLORS, make_image


def make_split(root: Path, split: str, per_class: int = 6, classes=("red", "blue")) -> Path:
    for name in classes:
        for i in range(per_class):
            # A seed per split: the same seed would make byte-identical copies across the splits.
            make_image(root / split / name / f"{name}_{split}_{i}.png", COLORS[name], seed=i + sum(map(ord, split)))
    return root


@pytest.mark.parametrize("train,test", [("train", "test"), ("Training", "Testing"), ("training_set", "test_set"),
                                        ("TRAIN_SET", "testing")])
def test_train_and_test_folders_are_splits_and_validation_is_drawn_from_train(tmp_path: Path, train, test):
    root = make_split(make_split(tmp_path / "data", train, per_class=10), test, per_class=4)
    split = discover(root, val_fraction=0.2)
    assert split.classes == ("blue", "red") and split.presplit
    assert len(split.test) == 8 and all(test in s.path.parts for s in split.test)
    assert len(split.val) == 4 and len(split.train) == 16  # 2 of 10 per class drawn for validation
    assert all(train in s.path.parts for s in split.train + split.val)


def test_a_train_folder_alone_gives_up_validation_images(tmp_path: Path):
    split = discover(make_split(tmp_path / "data", "train", per_class=10), val_fraction=0.2, test_fraction=0.1)
    assert split.classes == ("blue", "red")
    assert (len(split.train), len(split.val), len(split.test)) == (14, 4, 2)


def test_a_stray_folder_beside_the_splits_is_listed_as_skipped(tmp_path: Path):
    root = make_split(make_split(tmp_path / "data", "training_set"), "test_set")
    make_image(root / "single_prediction" / "cat_or_dog_1.png", COLORS["red"])
    split = discover(root)
    assert split.classes == ("blue", "red")
    assert [(s.path.name, "not a split folder" in s.reason) for s in split.skipped] == [("single_prediction", True)]


def test_class_folders_holding_the_same_folders_are_a_one_line_error(cli, tiny_args, tmp_path: Path):
    # One folder per split inside each class: a model trained on it would tell "cat" from "dog"
    # by accident at best. Unknown split names give the same shape.
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        for part in ("part1", "part2"):
            make_image(root / name / part / "a.png", COLORS["red"])
    with pytest.raises(DataError, match="holds the same folders"):
        discover(root)
    status, captured = cli("train", root, "--out", tmp_path / "run", *tiny_args)
    assert status == ExitStatus.DATA
    assert captured.stderr.count("\n") == 1 and "part1/, part2/" in captured.stderr
    assert "expected one folder per class" in captured.stderr
    status, captured = cli("inspect", root, "--out", tmp_path / "inspect")
    assert status == ExitStatus.DATA and "holds the same folders" in captured.stderr


def test_split_folders_without_a_train_split_are_a_one_line_error(tmp_path: Path):
    root = make_split(make_split(tmp_path / "data", "val"), "test")
    with pytest.raises(DataError, match="no training split"):
        discover(root)


def test_inspect_and_evaluate_read_the_same_layout(cli, tiny_args, tmp_path: Path):
    root = make_split(make_split(tmp_path / "data", "Training", per_class=8), "Testing", per_class=3)
    split = load_split(root)
    assert split.classes == ("blue", "red") and len(split.train) == 16 and len(split.test) == 6
    status, captured = cli("train", root, "--out", tmp_path / "run", *tiny_args, "--epochs", "1")
    assert status == ExitStatus.SUCCESS, captured.stderr
    status, captured = cli("evaluate", tmp_path / "run", root)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "(6 images)" in captured.stdout  # the Testing/ images, not Training/'s


def test_image_like_files_that_cannot_be_used_are_listed_with_the_reason(tmp_path: Path):
    root = tmp_path / "data"
    for name in ("red", "blue"):
        for i in range(3):
            make_image(root / name / f"{i}.png", COLORS[name], seed=i)
    (root / "red" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "red" / "IMG_0001.CR2").write_bytes(b"II*\0raw")
    (root / "blue" / "layers.psd").write_bytes(b"8BPS")
    skipped = {s.path.name: s.reason for s in discover(root).skipped}
    assert set(skipped) == {"logo.svg", "IMG_0001.CR2", "layers.psd"}
    assert "vector image" in skipped["logo.svg"] and "camera raw" in skipped["IMG_0001.CR2"]
    assert "Photoshop" in skipped["layers.psd"]


@pytest.mark.parametrize("suffix,fmt", [(".heic", "HEIF"), (".avif", "AVIF")])
def test_heic_and_avif_photos_are_read(tmp_path: Path, suffix: str, fmt: str):
    from headstart.data import load_image

    root = tmp_path / "data"
    for name in ("red", "blue"):
        for i in range(3):
            make_image(root / name / f"{i}{suffix}", COLORS[name], seed=i, fmt=fmt)
    split = discover(root, val_fraction=0.0)
    assert len(split.train) == 6 and not split.skipped
    pixel = load_image(split.train[0].path).resize((1, 1)).getpixel((0, 0))
    assert abs(pixel[2] - COLORS[split.classes[split.train[0].label]][2]) < 40


def test_predict_lists_unusable_files_instead_of_dropping_them(cli, tiny_args, tiny_data: Path, tmp_path: Path):
    assert cli("train", tiny_data, "--out", tmp_path / "run", *tiny_args, "--epochs", "1")[0] == ExitStatus.SUCCESS
    images = tmp_path / "new"
    make_image(images / "a.png", COLORS["red"])
    (images / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    status, captured = cli("predict", tmp_path / "run", images, "--output", tmp_path / "p.csv")
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and "drawing.svg" in rows[1] and "vector image" in rows[1]
