"""ONNX export with its parity check, and prediction from the exported file without PyTorch."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.errors import ExitStatus
from headstart.onnx.runtime import OnnxClassifier

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
    import headstart.onnx.export

    monkeypatch.setattr(headstart.onnx.export, "PARITY_TOLERANCE", -1.0)
    status, captured = cli("export", run, "--overwrite")
    assert status == ExitStatus.MODEL and "not written" in captured.stderr
    assert (run / "model.onnx").read_text() == "precious"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


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
    assert "int8: validation accuracy" in captured.stderr and "x fp32" in captured.stderr
    int8 = OnnxClassifier(run / "model.int8.onnx")
    assert int8.classes_ == ("blue", "red")
    assert int8.predict_proba(sorted(tiny_data.rglob("*.png"))[:3]).shape == (3, 2)
    (run / "model.int8.onnx").unlink()
    # a negative allowance can never be met: the quantized file must not appear
    status, captured = cli("export", run, "--int8", "--max-drop", "-1", "--overwrite")
    assert status == ExitStatus.MODEL and "not written" in captured.stderr
    assert not (run / "model.int8.onnx").exists() and (run / "model.onnx").exists()
