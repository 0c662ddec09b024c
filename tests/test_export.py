"""The table of export formats, ONNX export with its parity check, and prediction from the exported
file without PyTorch."""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart
import headstart.export
from headstart.errors import ExitStatus, ModelFileError
from headstart.export import ExportFormat, format_for_file, format_named, register_format
from headstart.export.files import read_export_record
from headstart.export.onnx_runtime import OnnxClassifier

from conftest import REPO, make_image


@pytest.fixture
def run(cli, tiny_data: Path, tiny_args, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--val-fraction", "0.5")
    assert status == ExitStatus.SUCCESS, captured.stderr
    return out


def test_export_writes_a_self_describing_checked_model(cli, run: Path):
    status, captured = cli("export", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    model = run / "model.onnx"
    assert captured.stdout.strip() == str(model)
    assert "parity on 12 image(s)" in captured.stderr and "top-1 agreement 100.00%" in captured.stderr
    exported = OnnxClassifier(model)
    assert exported.classes_ == ("blue", "red")
    assert exported.preprocessing.input_size == (3, 32, 32)
    assert exported.metadata["architecture"] == "test_efficientnet"
    record = read_export_record(run)["model.onnx"]
    assert record["format"] == "onnx" and record["images"] == {"val": 12} and record["passed"] is True
    assert record["top1_agreement"] == 1.0 and record["max_difference"] <= 1e-4
    assert record["accuracy"]["trained"] == record["accuracy"]["exported"]


def test_exported_model_predicts_like_the_run(cli, run: Path, tiny_data: Path, tmp_path: Path):
    assert cli("export", run)[0] == ExitStatus.SUCCESS
    images = sorted(tiny_data.rglob("*.png"))
    broken = make_image(tmp_path / "broken.png", (1, 2, 3))
    broken.write_bytes(b"")
    original = headstart.load(run, verbose=0).set_params(precision="fp32", workers=0)
    exported = OnnxClassifier(run / "model.onnx")
    np.testing.assert_allclose(exported.predict_proba(images), original.predict_proba(images), atol=1e-4)
    np.testing.assert_allclose(exported.predict_proba(images, tta=True),
                               original.predict_proba(images, tta=True), atol=1e-4)
    with pytest.warns(UserWarning, match="broken.png: empty file"):
        assert list(exported.predict([images[0], broken])) == [original.predict([images[0]])[0], None]
    status, captured = cli("predict", run / "model.onnx", tiny_data, broken, "--output", tmp_path / "p.csv")
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == len(images) + 1 and rows[-1]["error"] == "empty file"


def test_onnx_prediction_never_imports_pytorch(cli, run: Path, tiny_data: Path):
    assert cli("export", run)[0] == ExitStatus.SUCCESS
    image = sorted(tiny_data.rglob("*.png"))[0]
    code = ("import sys; from headstart.cli import main; status = main(['-q', 'predict', sys.argv[1], sys.argv[2]]);"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'sklearn') if m in sys.modules);"
            "print('HEAVY', heavy); sys.exit(int(status))")
    result = subprocess.run([sys.executable, "-c", code, str(run / "model.onnx"), str(image)],
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout and str(image) in result.stdout


def test_export_refuses_to_replace_a_file_and_to_write_a_model_that_differs(cli, run: Path, monkeypatch):
    (run / "model.onnx").write_text("precious")
    status, captured = cli("export", run)
    assert status == ExitStatus.USAGE and "--overwrite" in captured.stderr
    assert (run / "model.onnx").read_text() == "precious"
    onnx = format_named("onnx")
    monkeypatch.setitem(headstart.export.FORMATS, "onnx", dataclasses.replace(onnx, tolerance=-1.0))
    status, captured = cli("export", run, "--overwrite")
    assert status == ExitStatus.CHECK and "not written" in captured.stderr
    assert (run / "model.onnx").read_text() == "precious"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    status, captured = cli("export", run, "--overwrite", "--force")
    assert status == ExitStatus.SUCCESS and "written anyway (--force)" in captured.stderr
    assert OnnxClassifier(run / "model.onnx").classes_ == ("blue", "red")
    assert read_export_record(run)["model.onnx"]["forced"] is True


def test_a_damaged_or_foreign_onnx_file_is_a_clear_error(cli, run: Path, tiny_data: Path, tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    status, captured = cli("predict", bad, tiny_data)
    assert status == ExitStatus.MODEL and "not a readable ONNX model" in captured.stderr
    import torch

    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(foreign), dynamo=False)
    status, captured = cli("predict", foreign, tiny_data)
    assert status == ExitStatus.MODEL and "no headstart metadata" in captured.stderr


def test_int8_is_written_only_within_the_allowed_accuracy_drop(cli, run: Path, tiny_data: Path):
    status, captured = cli("export", run, "--int8", "--max-drop", "100")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert captured.stdout.splitlines() == [str(run / "model.onnx"), str(run / "model.int8.onnx")]
    assert "int8: validation accuracy" in captured.stderr and "x fp32" in captured.stderr
    int8 = OnnxClassifier(run / "model.int8.onnx")
    assert int8.classes_ == ("blue", "red")
    assert int8.predict_proba(sorted(tiny_data.rglob("*.png"))[:3]).shape == (3, 2)
    entry = read_export_record(run)["model.int8.onnx"]
    assert entry["precision"] == "int8" and entry["passed"] is True and entry["images"] == {"val": 12}
    (run / "model.int8.onnx").unlink()
    # a negative allowance can never be met: the quantized file must not appear
    status, captured = cli("export", run, "--int8", "--max-drop", "-1", "--overwrite")
    assert status == ExitStatus.CHECK and "not written" in captured.stderr
    # the fp32 file is what --output names; only the int8 copy beside it is refused
    assert not (run / "model.int8.onnx").exists() and (run / "model.onnx").exists()
    assert captured.stdout.splitlines() == [str(run / "model.onnx")]
    status, captured = cli("export", run, "--int8", "--max-drop", "-1", "--overwrite", "--force")
    assert status == ExitStatus.SUCCESS and "written anyway (--force)" in captured.stderr
    entry = read_export_record(run)["model.int8.onnx"]
    assert entry["passed"] is False and entry["forced"] is True and entry["max_drop"] == -1


def test_an_unknown_format_is_refused_before_any_work(cli, tmp_path: Path):
    status, captured = cli("export", tmp_path / "no-run", "--format", "keras")
    assert status == ExitStatus.USAGE
    [line] = captured.stderr.splitlines()
    assert "--format keras" in line and "onnx" in line and "Traceback" not in captured.stderr


def test_a_file_picks_its_runtime_by_suffix_and_an_unknown_one_is_refused(cli, tiny_data: Path, tmp_path: Path):
    assert format_for_file(tmp_path / "pets.onnx") is format_named("onnx")
    assert format_for_file(tmp_path / "pets.int8.onnx") is format_named("onnx")
    assert format_for_file(tmp_path) is None  # a run folder: PyTorch opens it
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(ModelFileError, match="weights.pt"):
        format_for_file(weights)
    status, captured = cli("predict", weights, tiny_data)
    assert status == ExitStatus.MODEL
    [line] = captured.stderr.splitlines()
    assert str(weights) in line and ".onnx" in line


def test_a_registered_format_exports_and_predicts_by_its_name_and_suffix(cli, run: Path, tiny_data: Path,
                                                                        monkeypatch):
    """A format is one row: here ONNX's own code under another name and suffix."""
    from headstart.export.onnx import write_onnx

    monkeypatch.setattr(headstart.export, "FORMATS", dict(headstart.export.FORMATS))  # unregistered after
    toy = register_format(ExportFormat("toy", ".toy", exporter=write_onnx, opener=OnnxClassifier,
                                       runtime="the toy runtime"))
    assert format_named("toy") is toy and format_for_file(run / "model.toy") is toy
    status, captured = cli("export", run, "--format", "toy")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert captured.stdout.strip() == str(run / "model.toy") and "the toy runtime" in captured.stderr
    status, captured = cli("export", run, "--format", "toy", "--int8", "--overwrite")
    assert status == ExitStatus.USAGE and "--format toy has no int8" in captured.stderr
    status, captured = cli("predict", run / "model.toy", tiny_data)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert len(captured.stdout.splitlines()) == len(list(tiny_data.rglob("*.png")))


def test_a_multi_label_export_is_checked_on_its_decisions(cli, tiny_data: Path, tiny_args, tmp_path: Path):
    """Agreement of a multi-label model is the same set of classes per image; it has no accuracy."""
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, "--multi-label", *tiny_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    status, captured = cli("export", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    entry = read_export_record(out)["model.onnx"]
    assert entry["top1_agreement"] == 1.0 and entry["accuracy"] == {"trained": None, "exported": None}
    assert OnnxClassifier(out / "model.onnx").multi_label_


def test_a_decision_that_flips_within_the_tolerance_is_not_held_against_the_export():
    from headstart.export.parity import _agreeing

    # Image 0 sits exactly on class 0's threshold, as a threshold tuned on validation photos does.
    multi, thresholds = np.array([[0.5, 0.1], [0.9, 0.6]]), np.array([0.5, 0.3])
    assert _agreeing(multi, multi - 6e-8, thresholds, 1e-4).tolist() == [True, True]
    assert _agreeing(multi, multi + [[0, 0.5], [0, -0.4]], thresholds, 1e-4).tolist() == [False, False]
    tied, single = np.array([[0.5, 0.5], [0.7, 0.3]]), np.array([[0.6, 0.4], [0.7, 0.3]])
    assert _agreeing(tied, tied + [[-1e-7, 1e-7], [0, 0]], None, 1e-4).tolist() == [True, True]
    assert _agreeing(single, single[:, ::-1], None, 1e-4).tolist() == [False, False]


def test_a_converter_failure_is_one_line_and_leaves_no_file(cli, run: Path, monkeypatch):
    def unsupported(clf, path, console):
        Path(path).write_bytes(b"half")
        raise RuntimeError("cannot translate aten::foo\nits long explanation")

    monkeypatch.setattr(headstart.export, "FORMATS", dict(headstart.export.FORMATS))  # unregistered after
    register_format(ExportFormat("toy", ".toy", exporter=unsupported, opener=OnnxClassifier, runtime="toy"))
    status, captured = cli("-q", "export", run, "--format", "toy")
    assert status == ExitStatus.MODEL
    [line] = captured.stderr.splitlines()
    assert "--format toy" in line and "RuntimeError: cannot translate aten::foo" in line
    assert not (run / "model.toy").exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]
