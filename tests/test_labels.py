"""Label files and in-memory labels (headstart.data.labels): parsing, bad rows, splits, multi-label sets."""

from pathlib import Path

import numpy as np
import pytest

from headstart.data import from_targets, read_label_file
from headstart.data.dataset import DatasetSplit
from headstart.errors import DataError, UsageError
from headstart.record import RunRequest, label_root, record_text, split_text

from conftest import make_image


def _images(root: Path, count: int) -> list[Path]:
    return [make_image(root / "img" / f"{i:02d}.png", (40 * (i % 5), 100, 200 - 30 * (i % 4)), seed=i)
            for i in range(count)]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_single_label_file_with_relative_and_absolute_paths(tmp_path: Path):
    images = _images(tmp_path, 10)
    rows = [f"img/{p.name},{'red' if i % 2 else 'blue'}" for i, p in enumerate(images[:8])]
    rows += [f"{images[8]},red", f"{images[9]},blue"]  # absolute
    split = read_label_file(_write(tmp_path / "labels.csv", "path,label\n" + "\n".join(rows)), val_fraction=0.2)
    assert not split.multi_label and split.classes == ("blue", "red")
    assert len(split.samples()) == 10 and split.skipped == []
    assert {s.path for s in split.samples()} == set(images)
    # Stratified, as for folders: each class keeps one validation image.
    assert sorted(split.classes[s.label] for s in split.val) == ["blue", "red"]


def test_bad_rows_are_listed_with_their_line_and_skipped(tmp_path: Path):
    images = _images(tmp_path, 6)
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    text = ("path,label,split\n"
            "img/00.png,red,train\n"
            "img/01.png,blue,train\n"
            "img/02.png,red,val\n"
            "img/03.png,blue,val\n"
            "img/missing.png,red,train\n"  # line 6: no such file
            "img/04.png,,train\n"  # line 7: empty label in a single-label set
            "img/05.png,red,holdout\n"  # line 8: unknown split
            "img/00.png,blue,train\n"  # line 9: the same image again, another label
            "img/broken.png,red,train\n")  # line 10: unreadable
    split = read_label_file(_write(tmp_path / "labels.csv", text))
    reasons = {s.reason.split(":")[0]: s.reason for s in split.skipped}
    assert set(reasons) == {"labels.csv line 6", "labels.csv line 7", "labels.csv line 8", "labels.csv line 9",
                            "labels.csv line 2", "labels.csv line 10"}
    assert "file not found" in reasons["labels.csv line 6"]
    assert "empty label" in reasons["labels.csv line 7"]
    assert "unknown split 'holdout'" in reasons["labels.csv line 8"]
    assert "listed again" in reasons["labels.csv line 9"]
    # Both rows of the contradicted image go: neither label can be trusted.
    assert images[0] not in {s.path for s in split.samples()}
    assert split.presplit and [s.path for s in split.train] == [images[1]]
    assert [s.path for s in split.val] == [images[2], images[3]]


def test_several_labels_in_a_cell_make_a_multi_label_set_and_allow_none(tmp_path: Path):
    images = _images(tmp_path, 5)
    text = "path,label\nimg/00.png,beach;dog\nimg/01.png,dog\nimg/02.png,\nimg/03.png, beach ; people \nimg/04.png,people\n"
    split = read_label_file(_write(tmp_path / "labels.csv", text), val_fraction=0.0)
    assert split.multi_label and split.classes == ("beach", "dog", "people")
    by_path = {s.path: s for s in split.samples()}
    assert by_path[images[0]].labels == (0, 1) and by_path[images[0]].label == -1
    assert by_path[images[2]].labels == ()  # "none of these"
    assert by_path[images[3]].labels == (0, 2)
    targets = split.targets([by_path[p] for p in images])
    assert targets.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1]]
    assert split.counts()["train"] == {"beach": 2, "dog": 2, "people": 2}


def test_label_sep_option(tmp_path: Path):
    _images(tmp_path, 3)
    text = "path,label\nimg/00.png,a|b\nimg/01.png,a\nimg/02.png,b\n"
    split = read_label_file(_write(tmp_path / "labels.csv", text), label_sep="|", val_fraction=0.0)
    assert split.multi_label and split.targets(split.train).sum() == 4


def test_the_runs_split_csv_is_a_label_file(tmp_path: Path):
    images = _images(tmp_path, 8)
    text = "path,label\n" + "\n".join(f"img/{p.name},{'a;b' if i % 3 == 0 else 'a' if i % 2 else 'b'}"
                                      for i, p in enumerate(images))
    split = read_label_file(_write(tmp_path / "labels.csv", text), val_fraction=0.25, test_fraction=0.25)
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "split.csv", split_text(split))
    _write(run / "run.json", record_text(RunRequest(tmp_path, {}, tmp_path / "labels.csv")))
    # split.csv's paths start from the data folder the run's run.json names.
    assert label_root(None, run / "split.csv") == tmp_path
    assert label_root(tmp_path / "x", run / "split.csv") == tmp_path / "x"  # DATA, when given, decides
    again = read_label_file(run / "split.csv", root=label_root(None, run / "split.csv"))
    assert again.multi_label and again.presplit and again.classes == split.classes
    for name in ("train", "val", "test"):
        assert [(s.path, s.labels) for s in again.splits()[name]] == \
               [(s.path, s.labels) for s in split.splits()[name]]


def test_a_file_without_the_columns_is_one_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="expected a 'path' and a 'label' column, found file, tag"):
        read_label_file(_write(tmp_path / "x.csv", "file,tag\na.png,b\n"))
    with pytest.raises(DataError, match="label file not found"):
        read_label_file(tmp_path / "nope.csv")


def test_in_memory_labels_in_every_form(tmp_path: Path):
    images = _images(tmp_path, 6)
    single = from_targets(images, ["x", "y"] * 3, val_fraction=0.0)
    assert not single.multi_label and single.classes == ("x", "y")
    lists = from_targets(images, [["x"], ["x", "y"], [], ["y"], ["x"], ["y"]], val_fraction=0.0)
    assert lists.multi_label and lists.classes == ("x", "y")
    matrix = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 1]])
    indicator = from_targets(images, matrix, classes=["x", "y"], val_fraction=0.0)
    order = {s.path: s.labels for s in indicator.train}
    assert [order[p] for p in images] == [(0,), (0, 1), (), (1,), (0,), (1,)]
    with pytest.raises(UsageError, match="pass classes="):
        from_targets(images, matrix)
    with pytest.raises(UsageError, match="6 paths"):
        from_targets(images, ["x"] * 5)


def test_a_dataframe_is_read_as_a_label_file_is(tmp_path: Path):
    pd = pytest.importorskip("pandas")
    from headstart.data.labels import to_split

    images = _images(tmp_path, 4)
    frame = pd.DataFrame({"path": [str(p) for p in images], "label": ["cat;dog", "dog", "cat", "dog"]})
    split = to_split(frame, val_fraction=0.0)
    assert split.multi_label and split.classes == ("cat", "dog") and len(split.train) == 4


def test_missing_images_in_memory_are_skipped_not_fatal(tmp_path: Path):
    images = _images(tmp_path, 4)
    split = from_targets([*images, tmp_path / "gone.png"], ["a", "b", "a", "b", "a"], val_fraction=0.0)
    assert len(split.train) == 4 and [s.path.name for s in split.skipped] == ["gone.png"]



def test_a_folder_becomes_one_label_sets_for_a_multi_label_model(tmp_path: Path):
    from conftest import make_folder
    from headstart.data.labels import to_split

    split = to_split(make_folder(tmp_path / "d", per_class=5), multi_label=True, val_fraction=0.0)
    assert isinstance(split, DatasetSplit) and split.multi_label
    assert sorted(s.labels for s in split.train) == [(0,)] * 5 + [(1,)] * 5


def test_one_photo_spelt_two_ways_is_one_photo(tmp_path: Path):
    images = _images(tmp_path, 8)
    rows = [f"img/{p.name},{'a' if i % 2 else 'b'},{'val' if i < 2 else 'train'}" for i, p in enumerate(images)]
    rows.append(f"img/../img/{images[0].name},{'b' if 0 % 2 else 'a'},train")  # images[0] again, other label
    split = read_label_file(_write(tmp_path / "labels.csv", "path,label,split\n" + "\n".join(rows)))
    every = [s.path for s in split.samples()]
    assert len(every) == len(set(every)) and images[0] not in every  # conflicting labels: left out, once
    assert any(s.path == images[0] for s in split.skipped)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_label_file_that_is_not_a_file_says_what_it_is(tmp_path: Path, kind):
    import os

    path = tmp_path / "labels.csv"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    with pytest.raises(DataError, match=f"^label file {path} is a {'folder' if kind == 'folder' else 'FIFO'}"):
        read_label_file(path)


def test_a_label_file_of_held_out_rows_only_is_scored_by_a_model(tmp_path: Path):
    images = _images(tmp_path, 6)
    text = "path,label,split\n" + "\n".join(f"img/{p.name},{'a' if i % 2 else 'b'},test" for i, p in enumerate(images))
    split = read_label_file(_write(tmp_path / "labels.csv", text), classes=("a", "b"))
    assert len(split.test) == 6 and not split.train
    with pytest.raises(DataError, match="no usable training row"):  # training still needs some
        read_label_file(tmp_path / "labels.csv")
