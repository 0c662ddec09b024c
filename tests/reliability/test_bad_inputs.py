"""Bad input, end to end: every odd file and folder goes through ``headstart train`` and
``headstart predict`` and is either used correctly or skipped with a reason, never a traceback.

All inputs are generated here, at test time (no binary files in the repository). Each file
case says what headstart must do with it:

- ``used``: it trains (it is in ``split.csv``) and predict gives it a class;
- ``skipped``: it is in ``skipped.csv`` and on stderr as ``headstart: warning: skipping PATH:
  REASON``, and predict writes its row with the ``error`` column filled;
- ``ignored``: hidden and non-image files, which neither command lists.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile

from headstart.data import load_image
from headstart.errors import ExitStatus

from conftest import make_image

RED, BLUE = (200, 40, 40), (40, 40, 200)
CAT, DOG = "chats noirs", "chiens"  # a space and, below, accents: paths must survive as they are


# -- file makers ----------------------------------------------------------------------------------

def _noise(color, size=(40, 32), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-30, 30, size=(size[1], size[0], 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _save(image: Image.Image, **kwargs) -> Callable[[Path], None]:
    return lambda path: image.save(path, **kwargs)


def _truncated_jpeg(path: Path) -> None:
    _noise(RED, (64, 64)).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a valid header, half the pixels


def _gray16(path: Path) -> None:
    # Values spanning 0..65535: Pillow's convert("RGB") clips them at 255 (all white).
    Image.fromarray(np.linspace(0, 65535, 32 * 40).reshape(32, 40).astype(np.uint16)).save(path)


def _rgba(path: Path) -> None:
    image = _noise(RED).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    image.save(path)


def _animated_gif(path: Path) -> None:
    frames = [_noise(color, seed=i).convert("P") for i, color in enumerate((RED, BLUE, RED))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


BOMB_SIDE = 20000  # 400 M pixels, over 2x Image.MAX_IMAGE_PIXELS


def _bomb(path: Path) -> None:
    """A valid 1-bit PNG of 20000 x 20000 zeros, ~50 kB, written without ever holding its pixels."""
    row = bytes(1 + BOMB_SIDE // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(BOMB_SIDE // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def _exif_rotated(image: Image.Image) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        exif = image.getexif()
        exif[0x0112] = 6  # stored wide, displayed rotated 90 degrees clockwise: tall
        image.save(path, format="JPEG", quality=95, exif=exif)
    return make


# Left red, right blue as stored: asymmetric, so a sideways decode changes the network's input.
SIDEWAYS = Image.fromarray(np.concatenate([np.array(_noise(RED, (24, 24))), np.array(_noise(BLUE, (36, 24)))],
                                          axis=1))


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "gone-for-good.jpg")


def _unreadable(path: Path) -> None:
    _noise(BLUE).save(path)
    path.chmod(0)


# -- the cases --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    path: str  # below the dataset root
    make: Callable[[Path], None]
    expect: str  # used, skipped or ignored
    reason: str = ""  # a regular expression the skip reason must match
    color: tuple[int, int, int] | None = None  # used: the mean colour it must decode to


ROOT_READS_ANYTHING = os.geteuid() == 0  # chmod 000 stops every reader but root

FILE_CASES = [
    Case("zero-byte file", f"{CAT}/empty.jpg", lambda p: p.write_bytes(b""), "skipped", "empty file"),
    Case("text named .jpg", f"{CAT}/notes.jpg", lambda p: p.write_text("I am not a picture\n"), "skipped",
         "not an image"),
    Case("truncated JPEG", f"{CAT}/truncated.jpg", _truncated_jpeg, "skipped", "truncated"),
    Case("JPEG named .png", f"{CAT}/really a jpeg.png", _save(_noise(RED), format="JPEG"), "used",
         color=RED),
    Case("CMYK JPEG", f"{DOG}/cmyk.jpg", _save(_noise(BLUE).convert("CMYK"), format="JPEG"), "used",
         color=BLUE),
    Case("16-bit greyscale PNG", f"{DOG}/gray16.png", _gray16, "used", color=(127, 127, 127)),
    Case("RGBA PNG", f"{CAT}/rgba.png", _rgba, "used"),  # flattened on white: pinker than RED
    Case("palette GIF", f"{DOG}/palette.gif", _save(_noise(BLUE).convert("P")), "used", color=BLUE),
    Case("animated GIF", f"{CAT}/animated.gif", _animated_gif, "used", color=RED),  # the first frame
    Case("WebP", f"{DOG}/photo.webp", _save(_noise(BLUE), format="WEBP"), "used", color=BLUE),
    Case("TIFF", f"{CAT}/photo.tiff", _save(_noise(RED)), "used", color=RED),
    Case("1x1 image", f"{DOG}/pixel.png", _save(Image.new("RGB", (1, 1), BLUE)), "used",
         color=BLUE),
    Case("decompression bomb", f"{CAT}/bomb.png", _bomb, "skipped", "decompression bomb"),
    Case("EXIF orientation 6", f"{CAT}/rotated.jpg", _exif_rotated(SIDEWAYS), "used"),
    Case("unicode and spaces", f"{CAT}/été 1.png", _save(_noise(RED, seed=7)), "used", color=RED),
    Case("dangling symlink", f"{CAT}/x.jpg", _dangling, "skipped", "No such file"),
    Case("chmod 000", f"{DOG}/locked.png", _unreadable, *(("used",) if ROOT_READS_ANYTHING
                                                          else ("skipped", "Permission denied"))),
    Case(".DS_Store", f"{CAT}/.DS_Store", lambda p: p.write_bytes(b"\0\0\0\1Bud1junk"), "ignored"),
    Case("AppleDouble ._ file", f"{DOG}/._cmyk.jpg", lambda p: p.write_bytes(b"\0\5\26\7junk"), "ignored"),
    Case("hidden folder", f"{DOG}/.thumbnails/thumb.png", _save(_noise(RED)), "ignored"),
    Case("non-image file", f"{CAT}/README.txt", lambda p: p.write_text("cats"), "ignored"),
]


PLAIN = [(f"{name}/{name} {i:02d}.png", color) for name, color in ((CAT, RED), (DOG, BLUE)) for i in range(8)]


def make_zoo(root: Path) -> Path:
    """Two classes of plain images plus every case above, and two symlink loops."""
    for i, (path, color) in enumerate(PLAIN):
        make_image(root / path, color, seed=i)
    for case in FILE_CASES:
        path = root / case.path
        path.parent.mkdir(parents=True, exist_ok=True)
        case.make(path)
    (root / CAT / "loop").symlink_to(".", target_is_directory=True)  # to the folder holding it
    (root / DOG / "up").symlink_to("..", target_is_directory=True)  # to the dataset root, above both classes
    return root


def listed(root: Path) -> set[str]:
    """What headstart must list: the plain images and every case that is not ignored."""
    return {str(root / path) for path, _ in PLAIN} | {str(root / c.path) for c in FILE_CASES if c.expect != "ignored"}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_clean(captured) -> None:
    assert "Traceback" not in captured.stderr and "Traceback" not in captured.stdout, captured.stderr
    assert "headstart: error" not in captured.stderr, captured.stderr


def assert_one_line_error(status, captured, expected: ExitStatus, message: str) -> None:
    assert status == expected, captured.stderr
    assert "Traceback" not in captured.stderr
    lines = captured.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("headstart: error: ") and message in lines[-1], captured.stderr
    assert sum(line.startswith("headstart: error") for line in lines) == 1, captured.stderr


def check_training_run(root: Path, out: Path, captured) -> dict[str, str]:
    """Every case did what it says, in split.csv, skipped.csv and on stderr; all failures at once."""
    split = {str(root / r["path"]) for r in read_csv(out / "split.csv")}
    skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    # Even a file that fails only when decoded (a truncated JPEG) is left out of split.csv.
    assert not split & set(skipped), split & set(skipped)
    used = split
    problems = []
    for case in FILE_CASES:
        path = str(root / case.path)
        if case.expect == "used" and path not in used:
            problems.append(f"{case.name}: not used ({skipped.get(path, 'not listed at all')})")
        elif case.expect == "skipped":
            warning = re.search(rf"^headstart: warning: skipping {re.escape(path)}: (.+)$", captured.stderr, re.M)
            if path not in skipped or not re.search(case.reason, skipped[path]):
                problems.append(f"{case.name}: skipped.csv says {skipped.get(path)!r}, expected /{case.reason}/")
            if not warning or warning.group(1) != skipped.get(path):
                problems.append(f"{case.name}: no 'headstart: warning: skipping {path}: ...' line on stderr")
        elif case.expect == "ignored" and (path in used or path in skipped):
            problems.append(f"{case.name}: listed, should be ignored")
    assert not problems, "\n".join(problems)
    assert used | set(skipped) == listed(root)  # nothing counted twice through a symlink loop
    assert len(read_csv(out / "split.csv")) == len(split)
    return skipped


# -- the tests ----------------------------------------------------------------------------------

def test_bad_files_through_train_and_predict(cli, tiny_args, tmp_path: Path, monkeypatch):
    root = make_zoo(tmp_path / "zoo")
    decoded = []  # the files whose pixels Pillow reads: never the bomb's
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(getattr(self, "filename", ""))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)

    out = tmp_path / "run"
    status, captured = cli("train", root, "--out", out, *tiny_args, "--val-fraction", "0.25")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert_clean(captured)
    skipped = check_training_run(root, out, captured)
    assert not [n for n in decoded if n.endswith("bomb.png")]
    assert any(n.endswith("gray16.png") for n in decoded)  # the spy does see decodes

    # The same tree, and the upright copy of the rotated photo, through predict.
    upright = tmp_path / "extra" / "upright.png"
    upright.parent.mkdir()
    with Image.open(root / CAT / "rotated.jpg") as raw:  # its pixels as stored, undisturbed by EXIF
        raw.transpose(Image.Transpose.ROTATE_270).save(upright)
    preds = tmp_path / "preds.csv"
    decoded.clear()
    status, captured = cli("predict", out, root, upright.parent, "--output", preds, "--top-k", "2",
                           "--workers", "0", "--batch-size", "8")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert_clean(captured)
    assert not [n for n in decoded if n.endswith("bomb.png")]
    rows = read_csv(preds)
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == len(listed(root)) + 1  # exactly one row per input file
    assert set(by_path) == listed(root) | {str(upright)}
    problems = []
    for case in FILE_CASES:
        path = str(root / case.path)
        row = by_path.get(path)
        if case.expect == "ignored":
            if row is not None:
                problems.append(f"{case.name}: predicted, should be ignored")
        elif case.expect == "used" and (row["error"] or row["class"] not in (CAT, DOG)):
            problems.append(f"{case.name}: no prediction ({row['error']})")
        elif case.expect == "skipped":
            if row["class"] or not row["error"]:
                problems.append(f"{case.name}: expected an error, got class {row['class']!r}")
            elif row["error"] != skipped[path]:
                problems.append(f"{case.name}: predict says {row['error']!r}, train said {skipped[path]!r}")
            elif f"headstart: warning: cannot read {path}: {row['error']}" not in captured.stderr:
                problems.append(f"{case.name}: no warning naming it on stderr")
    assert not problems, "\n".join(problems)
    assert "decompression bomb" in by_path[str(root / CAT / "bomb.png")]["error"]
    assert "truncated" in by_path[str(root / CAT / "truncated.jpg")]["error"]

    # The EXIF-rotated photo is predicted upright: exactly as its physically rotated copy.
    def probabilities(path: Path) -> dict[str, float]:
        row = by_path[str(path)]
        return {row["class"]: float(row["probability"]), row["class_2"]: float(row["probability_2"])}

    assert probabilities(root / CAT / "rotated.jpg") == pytest.approx(probabilities(upright), abs=2e-6)

    # Nothing to predict is a user error, not an empty success.
    (tmp_path / "nothing here").mkdir()
    (tmp_path / "nothing here" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "nothing here" / "notes.txt").write_text("no pictures")
    status, captured = cli("predict", out, tmp_path / "nothing here", "--output", tmp_path / "none.csv")
    assert_one_line_error(status, captured, ExitStatus.DATA, f") in {tmp_path / 'nothing here'}")
    assert "headstart: error: no image files (.avif, .bmp, .gif, .heic, .heif, .jpeg, .jpg" in captured.stderr
    assert not (tmp_path / "none.csv").exists()
    # A dangling symlink named on the command line is a missing file, as for any other command.
    status, captured = cli("predict", out, root / CAT / "x.jpg")
    assert_one_line_error(status, captured, ExitStatus.DATA, f"no such file or folder: {root / CAT / 'x.jpg'}")


def test_lightweight_workflow_skips_the_same_files(cli, tiny_args, tmp_path: Path):
    root = make_zoo(tmp_path / "zoo")
    out = tmp_path / "run"
    status, captured = cli("train", root, "--out", out, *tiny_args, "--workflow", "lightweight",
                           "--engine", "eager", "--cache-dir", tmp_path / "cache")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert_clean(captured)
    check_training_run(root, out, captured)
    assert json.loads((out / "metrics.json").read_text())["workflow"] == "lightweight"


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path):
    path = tmp_path / "gray16.png"
    _gray16(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
    pixels = np.asarray(load_image(path)).astype(int)
    assert pixels.shape == (32, 40, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.min() <= 1 and pixels.max() >= 254 and 120 < pixels.mean() < 135  # not all white
    expected = np.linspace(0, 255, 32 * 40).reshape(32, 40)
    assert np.abs(pixels[..., 0] - expected).max() <= 1  # a straight scale: the gradient survives


@pytest.mark.parametrize("case", [c for c in FILE_CASES if c.color], ids=lambda c: c.name)
def test_odd_files_decode_to_their_colours(tmp_path: Path, case: Case):
    path = tmp_path / Path(case.path).name
    case.make(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.asarray(image).reshape(-1, 3).mean(0) == pytest.approx(case.color, abs=12)


def test_exif_rotated_photo_is_decoded_upright(tmp_path: Path):
    path = tmp_path / "rotated.jpg"
    _exif_rotated(SIDEWAYS)(path)
    upright = load_image(path)
    assert upright.size == (24, 60)  # stored 60 x 24
    with Image.open(path) as raw:
        expected = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(upright), np.asarray(expected))


def test_a_class_with_one_image_stays_in_training(cli, tiny_args, tmp_path: Path):
    root = tmp_path / "data"
    for name, color, count in (("red", RED, 6), ("blue", BLUE, 6), ("lonely", (40, 200, 40), 1)):
        for i in range(count):
            make_image(root / name / f"{i}.png", color, seed=i)
    out = tmp_path / "run"
    status, captured = cli("train", root, "--out", out, *tiny_args, "--val-fraction", "0.34", "--epochs", "1")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert_clean(captured)
    split = {r["path"]: r["split"] for r in read_csv(out / "split.csv")}
    assert split["lonely/0.png"] == "train"
    assert sorted(split.values()).count("val") == 4  # 2 of red, 2 of blue
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["train"]["lonely"] == 1 and metrics["counts"]["val"]["lonely"] == 0


def test_class_imbalance_with_balanced_weights(cli, tiny_args, tmp_path: Path):
    root = tmp_path / "data"
    for name, color, count in (("many", RED, 60), ("few", BLUE, 3)):
        for i in range(count):
            make_image(root / name / f"{i:02d}.png", color, size=(16, 16), seed=i)
    out = tmp_path / "run"
    status, captured = cli("train", root, "--out", out, *tiny_args, "--class-weight", "balanced", "--epochs", "1")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert_clean(captured)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["train"] == {"few": 2, "many": 48} and metrics["counts"]["val"] == {"few": 1, "many": 12}
    assert metrics["val"]["count"] == 13
    assert json.loads((out / "config.json").read_text())["training"]["class_weight"] == "balanced"


def test_a_single_class_is_a_one_line_error(cli, tiny_args, tmp_path: Path):
    root = tmp_path / "data"
    for i in range(3):
        make_image(root / "only" / f"{i}.png", RED, seed=i)
    status, captured = cli("train", root, "--out", tmp_path / "run", *tiny_args)
    assert_one_line_error(status, captured, ExitStatus.DATA, "single class folder (only)")
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("layout", ["empty folder", "class folders without images"])
def test_a_folder_without_images_is_a_one_line_error(cli, tiny_args, tmp_path: Path, layout: str):
    root = tmp_path / "data"
    root.mkdir()
    if layout == "class folders without images":
        for name in ("red", "blue"):
            (root / name).mkdir()
            (root / name / ".DS_Store").write_bytes(b"junk")
            (root / name / "notes.txt").write_text("no pictures here")
    status, captured = cli("train", root, "--out", tmp_path / "run", *tiny_args)
    message = "no class folders" if layout == "empty folder" else "has no usable images"
    assert_one_line_error(status, captured, ExitStatus.DATA, message)


def test_a_folder_of_unusable_files_is_a_one_line_error(cli, tiny_args, tmp_path: Path):
    root = tmp_path / "data"
    make_image(root / "red" / "fine.png", RED)
    (root / "blue").mkdir()
    (root / "blue" / "empty.jpg").write_bytes(b"")
    (root / "blue" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    status, captured = cli("train", root, "--out", tmp_path / "run", *tiny_args)
    # The error ends the run before any warning: it says itself why the class is empty.
    assert_one_line_error(status, captured, ExitStatus.DATA, f"{root / 'blue'} has no usable images: "
                          "2 file(s) cannot be used, e.g. empty.jpg: empty file")
