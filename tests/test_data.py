from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.data import collect_images, discover, load_image, probe_image
from headstart.data.loader import ImageDataset, collate, eval_transform
from headstart.config import Preprocessing
from headstart.errors import DataError

from conftest import make_folder, make_image

PRE = Preprocessing(input_size=(3, 32, 32), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3,
                    crop_pct=0.875)


def test_split_folders_are_used_as_they_are(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=9, split_folders=True)
    (root / "validation").mkdir()  # ignored: val/ comes first
    split = discover(root)
    assert split.presplit and split.classes == ("blue", "red")
    assert len(split.train) == 12 and len(split.val) == 6 and split.test == []
    assert all("/train/" in s.path.as_posix() for s in split.train)


def test_validation_folder_name_is_accepted(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=6, split_folders=True)
    (root / "val").rename(root / "validation")
    make_image(root / "test" / "red" / "t.png", (200, 0, 0))
    split = discover(root)
    assert len(split.val) == 4 and len(split.test) == 1 and split.test[0].label == split.classes.index("red")


def test_stratified_split_is_reproducible_and_proportional(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=20, classes=("red", "blue", "green"))
    a = discover(root, val_fraction=0.25, test_fraction=0.1, seed=3)
    b = discover(root, val_fraction=0.25, test_fraction=0.1, seed=3)
    c = discover(root, val_fraction=0.25, test_fraction=0.1, seed=4)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert [s.path for s in a.val] != [s.path for s in c.val]
    assert a.counts()["val"] == {"blue": 5, "green": 5, "red": 5}
    assert a.counts()["test"] == {"blue": 2, "green": 2, "red": 2}
    every = {s.path for s in a.train} | {s.path for s in a.val} | {s.path for s in a.test}
    assert len(every) == 60 == len(a.train) + len(a.val) + len(a.test)


def test_a_class_with_one_image_stays_in_training(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=10)
    make_image(root / "green" / "only.png", (0, 200, 0))
    split = discover(root, val_fraction=0.2)
    assert split.counts()["train"]["green"] == 1 and split.counts()["val"]["green"] == 0


def test_hidden_non_image_and_broken_files(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=5)
    (root / "red" / ".DS_Store").write_bytes(b"\0junk")
    (root / "red" / "._red_000.png").write_bytes(b"\0junk")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "red" / "text.jpg").write_text("I am text named .jpg")
    (root / "red" / "empty.png").write_bytes(b"")
    (root / ".hidden_class").mkdir()
    make_image(root / ".hidden_class" / "x.png", (0, 0, 0))
    split = discover(root, val_fraction=0.0)
    assert split.classes == ("blue", "red")
    assert len(split.train) == 10
    reasons = {s.path.name: s.reason for s in split.skipped}
    assert reasons == {"text.jpg": "not an image Pillow can read", "empty.png": "empty file"}


def test_truncated_jpeg_is_reported_at_decode_not_fatal(tmp_path: Path):
    good = make_image(tmp_path / "good.jpg", (10, 200, 10), size=(64, 64))
    data = good.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    assert probe_image(bad) is None  # its header is fine...
    batch = collate([ImageDataset([good, bad], [0, 1], eval_transform(PRE))[i] for i in range(2)])
    assert batch.images.shape == (1, 3, 32, 32) and batch.images.dtype == torch.uint8 and batch.indices == [0]
    assert batch.failed[0][0] == 1 and "truncated" in batch.failed[0][1]  # ...its pixels are not


@pytest.mark.parametrize("problem,message", [
    ("missing", "dataset folder not found"),
    ("empty", "no class folders"),
    ("one_class", "single class folder"),
    ("empty_class", "has no usable images"),
])
def test_bad_layouts_are_one_line_errors(tmp_path: Path, problem: str, message: str):
    root = tmp_path / "d"
    if problem != "missing":
        root.mkdir()
    if problem == "one_class":
        make_image(root / "red" / "a.png", (200, 0, 0))
    if problem == "empty_class":
        make_folder(root, per_class=3)
        (root / "green").mkdir()
    with pytest.raises(DataError, match=message) as info:
        discover(root)
    assert "\n" not in str(info.value)


def test_val_classes_must_be_known(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=6, split_folders=True)
    make_image(root / "val" / "green" / "g.png", (0, 200, 0))
    with pytest.raises(DataError, match="not in the training split: green"):
        discover(root)


@pytest.mark.parametrize("mode,fmt", [("L", "png"), ("P", "gif"), ("RGBA", "png"), ("CMYK", "jpeg"),
                                      ("I;16", "png"), ("RGB", "webp"), ("RGB", "tiff"), ("RGB", "bmp")])
def test_any_mode_and_format_becomes_rgb(tmp_path: Path, mode: str, fmt: str):
    path = make_image(tmp_path / f"x.{fmt}", (200, 40, 40), mode=mode if mode != "I;16" else "L", fmt=fmt)
    if mode == "I;16":
        Image.fromarray((np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (40, 32)


def test_exif_orientation_is_applied(tmp_path: Path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)  # wide as stored...
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # ...but "rotate 90 degrees clockwise" for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 60)


def test_collect_images_recurses_and_reports_missing_paths(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=3)
    (root / "red" / "readme.md").write_text("x")
    single = make_image(tmp_path / "one.jpg", (1, 2, 3))
    found = collect_images([root, single])
    assert len(found) == 7 and found[-1] == single
    with pytest.raises(DataError, match="no such file or folder"):
        collect_images([tmp_path / "nope"])


def test_copies_of_one_photo_are_drawn_into_one_split(tmp_path: Path):
    import shutil

    make_folder(tmp_path / "data", per_class=12)
    original = tmp_path / "data" / "red" / "red_000.png"
    for k in range(3):  # the same bytes under other names: a leak if they straddle splits
        shutil.copy(original, tmp_path / "data" / "red" / f"copy_{k}.png")
    copies = {original, *(tmp_path / "data" / "red" / f"copy_{k}.png" for k in range(3))}
    sides = set()
    for seed in range(12):
        split = discover(tmp_path / "data", val_fraction=0.3, test_fraction=0.2, seed=seed)
        where = {name for name, samples in split.splits().items() for s in samples if s.path in copies}
        assert len(where) == 1, (seed, where)
        sides |= where
        assert len(split.samples()) == 27 and len(split.train) > 0
    assert sides > {"train"}  # the group does get drawn to held-out splits, whole


def test_a_split_without_copies_is_drawn_as_before(tmp_path: Path):
    make_folder(tmp_path / "data", per_class=12)
    split = discover(tmp_path / "data", val_fraction=0.25, seed=3)
    # The seeded draw that runs before copies were grouped: the same photos on each side.
    import random

    rng, expected = random.Random(3), []
    for name in ("blue", "red"):
        paths = sorted((tmp_path / "data" / name).iterdir())
        rng.shuffle(paths)
        expected += paths[:3]
    assert [s.path for s in split.val] == expected
