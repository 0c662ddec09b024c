"""Names a user's files can have: markup, spreadsheet formulas, bytes that are not UTF-8.

One run is trained on a folder whose class and file names are all hostile, then every
command that shows or writes a name is checked: nothing runs, nothing crashes, nothing is lost.
"""

import csv
import io
import json
import os
from pathlib import Path

import pytest

from headstart._console import Console
from headstart._io import csv_cell, csv_value
from headstart.cli import main
from headstart.errors import ExitStatus

from conftest import COLORS, TINY_BACKBONE, make_image

SCRIPT = "<img src=x onerror=alert(1)>"  # a valid folder name: no slash
FORMULA = "=HYPERLINK(1)"
NOT_UTF8 = os.fsdecode(b"bad\xff\xfe.png")  # as old archives and network shares have them


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], Console(err=err, out=out))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_weights) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    for name, color in ((SCRIPT, COLORS["red"]), (FORMULA, COLORS["blue"])):
        for i in range(6):
            make_image(data / name / f"{i}.png", color, seed=i)
    make_image(data / SCRIPT / "+cmd.png", COLORS["red"], seed=9)
    make_image(data / FORMULA / "@SUM(A1).png", COLORS["blue"], seed=9)
    make_image(data / SCRIPT / NOT_UTF8, COLORS["red"], seed=8)
    # An exact copy, so that inspect.csv has a finding naming the class and the file.
    (data / FORMULA / "-copy.png").write_bytes((data / FORMULA / "@SUM(A1).png").read_bytes())
    run = root / "run"
    status, _, err = run_cli("train", data, "--out", run, "--backbone", TINY_BACKBONE, "--weights", tiny_weights,
                             "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                             "--workflow", "lightweight", "--cache-dir", root / "cache", "--val-fraction", "0.5")
    return {"root": root, "data": data, "run": run, "status": status, "stderr": err}


def test_train_takes_a_file_name_that_is_not_utf8(hostile):
    assert hostile["status"] == ExitStatus.SUCCESS, hostile["stderr"]
    assert "Traceback" not in hostile["stderr"]
    split = (hostile["run"] / "split.csv").read_bytes()
    assert b"bad\xff\xfe.png" in split  # the file's own bytes: the path names the real file


def test_the_serve_page_shows_class_names_as_text(hostile, cli):
    from fastapi.testclient import TestClient

    from headstart.model import open_model
    from headstart.serve import create_app

    with TestClient(create_app(open_model(hostile["run"]))) as client:
        page = client.get("/").text
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    model = hostile["run"] / "model.onnx"
    assert cli("export", hostile["run"], "--out", model)[0] == ExitStatus.SUCCESS
    with TestClient(create_app(open_model(model))) as client:  # class names from an .onnx file's metadata
        page = client.get("/").text
    assert "<img src=x" not in page and "&lt;img src=x" in page


def cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return [cell for row in csv.reader(f) for cell in row]


def test_no_csv_cell_starts_a_spreadsheet_formula(hostile, cli):
    run, data, root = hostile["run"], hostile["data"], hostile["root"]
    assert cli("predict", run, data, "--output", root / "p.csv")[0] == ExitStatus.SUCCESS
    assert cli("inspect", data, "--out", root / "inspect", "--backbone", TINY_BACKBONE, "--weights",
               hostile_weights(run), "--image-size", "32", "--cache-dir", root / "cache")[0] == ExitStatus.SUCCESS
    files = [run / "split.csv", run / "predictions.csv", root / "p.csv", root / "inspect" / "inspect.csv"]
    for path in files:
        written = cells(path)
        assert not [c for c in written if c[:1] in ("=", "+", "-", "@")], path
        assert any(c.startswith("'=HYPERLINK(1)") for c in written), path
    # The files read back to the real names: the report and evaluation find every image.
    from headstart.record import split_images
    from headstart.runfolder import read_csv_file

    paths = {r["path"] for r in read_csv_file(run, "split.csv")}
    assert f"{FORMULA}/@SUM(A1).png" in paths and f"{SCRIPT}/+cmd.png" in paths
    assert len(split_images(run, "val", (FORMULA, SCRIPT))) == sum(r["split"] == "val" for r in
                                                                   read_csv_file(run, "split.csv"))


def hostile_weights(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["params"]["weights"]


@pytest.mark.parametrize("value", ["=1+2", "+cmd", "-x", "@A1", "\tx", "\rx", "'=x", "''@x", "plain", "-0.5", "+1", "'x"])
def test_csv_cells_round_trip(value: str):
    cell = csv_cell(value)
    assert cell[:1] not in ("=", "@", "\t", "\r") and (cell[:1] not in ("-", "+") or value in ("-0.5", "+1"))
    assert csv_value(cell) == value


@pytest.mark.parametrize("output", ["p.csv", "p.json", None])
def test_predict_keeps_every_result_for_a_name_that_is_not_utf8(hostile, output, tmp_path: Path):
    images = tmp_path / "new"
    make_image(images / NOT_UTF8, COLORS["red"])
    make_image(images / "ok.png", COLORS["blue"])
    target = tmp_path / output if output else None
    status, out, err = run_cli("predict", hostile["run"], images, *(["--output", target] if target else []))
    assert status == ExitStatus.SUCCESS, err
    if output == "p.csv":
        assert b"bad\xff\xfe.png" in target.read_bytes() and len(cells(target)) > 4
    elif output == "p.json":
        rows = json.loads(target.read_text(encoding="utf-8"))  # valid UTF-8 JSON, the name escaped
        assert sorted(Path(r["path"]).name for r in rows) == sorted([NOT_UTF8, "ok.png"])
    else:
        assert "bad" in out and "ok.png" in out


def test_inspect_takes_a_file_name_that_is_not_utf8(hostile):
    status, out, err = run_cli("inspect", hostile["data"], "--out", hostile["root"] / "inspect2", "--backbone",
                               TINY_BACKBONE, "--weights", hostile_weights(hostile["run"]), "--image-size", "32",
                               "--cache-dir", hostile["root"] / "cache")
    assert status == ExitStatus.SUCCESS, err
    assert (hostile["root"] / "inspect2" / "inspect.html").is_file()
