"""The formats beyond ONNX: each exported from the tiny run, checked against it and recorded in
export.json, predicted from like the run without PyTorch, and refused in one line when damaged."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.errors import ExitStatus
from headstart.export import format_named
from headstart.export.files import read_export_record

from conftest import REPO, shared_dataset


# The formats whose runtime runs on Linux: their file's suffix, and the module that converts to it.
RUNTIMES = {"openvino": (".xml", "openvino"), "tflite": (".tflite", "litert_torch")}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# litert-torch is no extra of ours (a normal install of it moves other packages back): CI may lack it.
_CI_MAY_LACK = {"litert_torch"}
RUNNABLE = [pytest.param(name, suffix, id=name, marks=[
                pytest.mark.skipif(not _installed(module), reason=f"{module} is not installed"),
                *([pytest.mark.ci_may_skip] if module in _CI_MAY_LACK else [])])
            for name, (suffix, module) in RUNTIMES.items()]


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory) -> Path:
    """A copy of the tiny run with every runnable format exported into it, once for the module: in
    a child process, as litert-torch starts JAX's threads, after which forking decoders could hang."""
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("exported") / "run"))
    for name, (_, module) in RUNTIMES.items():
        if _installed(module):
            _export_in_child(run, name)
    return run


def _export_in_child(run: Path, name: str, *options: str) -> None:
    result = subprocess.run([sys.executable, "-m", "headstart", "-q", "export", str(run), "--format", name, *options],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr
    # stdout carries the files written, nothing a converter printed
    assert result.stdout and all(line.endswith(format_named(name).suffix) for line in result.stdout.splitlines())


@pytest.fixture(scope="module")
def images(tiny_run: Path) -> Path:
    """The tiny run's photos (conftest's tiny_run trains on the data folder beside it)."""
    return tiny_run.parent / "data"


def _predict(cli, model: Path, images: Path) -> list[tuple[str, str]]:
    """(image, top class) per line of ``headstart predict``."""
    status, captured = cli("predict", model, images)
    assert status == ExitStatus.SUCCESS, captured.stderr
    return [tuple(line.split("\t")[:2]) for line in captured.stdout.splitlines()]


@pytest.mark.parametrize("name, suffix", RUNNABLE)
def test_an_export_is_checked_recorded_and_predicts_as_the_run_does(cli, exported: Path, images: Path,
                                                                     name: str, suffix: str):
    model = exported / f"model{suffix}"
    entry = read_export_record(exported)[model.name]
    assert entry["format"] == name and entry["measured"] is True and entry["passed"] is True
    assert entry["images"]["val"] > 0 and entry["top1_agreement"] == 1.0
    assert entry["accuracy"]["trained"] == entry["accuracy"]["exported"]
    assert _predict(cli, model, images) == _predict(cli, exported, images)
    status, captured = cli("evaluate", model, images, "--include-training-images")
    assert status == ExitStatus.SUCCESS and "accuracy" in captured.stdout, captured.stderr


@pytest.mark.parametrize("name, suffix", RUNNABLE)
def test_prediction_from_an_export_never_imports_pytorch(exported: Path, images: Path, name: str, suffix: str):
    image = sorted(images.rglob("*.png"))[0]
    code = ("import sys; from headstart.cli import main; status = main(['-q', 'predict', sys.argv[1], sys.argv[2]]);"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'sklearn') if m in sys.modules);"
            "print('HEAVY', heavy); sys.exit(int(status))")
    result = subprocess.run([sys.executable, "-c", code, str(exported / f"model{suffix}"), str(image)],
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout and str(image) in result.stdout


@pytest.mark.parametrize("name, suffix", RUNNABLE)
def test_a_truncated_export_is_refused_in_one_line(cli, exported: Path, images: Path, tmp_path: Path,
                                                   name: str, suffix: str):
    model = exported / f"model{suffix}"
    for damaged in format_named(name).files(model):
        copy = Path(shutil.copytree(exported, tmp_path / f"damaged-{damaged.suffix[1:]}"))
        target = copy / damaged.name
        target.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
        status, captured = cli("predict", copy / model.name, images)
        assert status == ExitStatus.MODEL, captured.stderr
        [line] = captured.stderr.splitlines()
        assert str(copy / model.name) in line or str(target) in line
        assert "Exception from" not in line  # what is wrong, not where the runtime's C++ noticed


def test_openvino_weights_must_be_beside_the_ir(cli, exported: Path, images: Path, tmp_path: Path):
    pytest.importorskip("openvino")
    lone = tmp_path / "model.xml"
    shutil.copy(exported / "model.xml", lone)
    status, captured = cli("predict", lone, images)
    assert status == ExitStatus.MODEL
    assert captured.stderr.strip().endswith(f"model file not found: {lone.with_suffix('.bin')}")


def test_a_missing_runtime_names_the_install_command(cli, exported: Path, images: Path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an install without the extra sees
    status, captured = cli("predict", exported / "model.xml", images)
    assert status == ExitStatus.USAGE
    [line] = captured.stderr.splitlines()
    assert 'pip install "headstart[openvino]"' in line


def test_openvino_int8_is_calibrated_checked_and_recorded(cli, exported: Path, images: Path, tmp_path: Path):
    pytest.importorskip("nncf")
    run = Path(shutil.copytree(exported, tmp_path / "run"))
    status, captured = cli("export", run, "--format", "openvino", "--int8", "--max-drop", "100", "--overwrite")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert captured.stdout.splitlines() == [str(run / "model.xml"), str(run / "model.int8.xml")]
    entry = read_export_record(run)["model.int8.xml"]
    assert entry["format"] == "openvino" and entry["precision"] == "int8" and entry["passed"] is True
    assert len(_predict(cli, run / "model.int8.xml", images)) == len(list(images.rglob("*.png")))


def test_a_core_ml_package_is_checked_but_says_parity_was_not_measured(cli, tiny_run: Path, images: Path,
                                                                        tmp_path: Path, monkeypatch):
    pytest.importorskip("coremltools")
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    status, captured = cli("export", run, "--format", "coreml")
    assert status == ExitStatus.SUCCESS, captured.stderr
    package = run / "model.mlpackage"
    assert captured.stdout.strip() == str(package) and package.is_dir()
    assert "parity not measured: Core ML runs only on Apple devices" in captured.stderr
    entry = read_export_record(run)["model.mlpackage"]
    assert entry["format"] == "coreml" and entry["measured"] is False and "not_measured" in entry
    status, captured = cli("export", run, "--format", "coreml")
    assert status == ExitStatus.USAGE and "--overwrite" in captured.stderr
    status, captured = cli("predict", package, images)
    assert status == ExitStatus.USAGE
    [line] = captured.stderr.splitlines()
    assert str(package) in line and "Apple devices" in line
    import headstart.export.coreml

    monkeypatch.setattr(headstart.export.coreml, "_class_labels", lambda spec: ("red", "blue"))
    status, captured = cli("export", run, "--format", "coreml", "--overwrite")
    assert status == ExitStatus.MODEL and "its class labels ('red', 'blue') are not the run's" in captured.stderr
    assert package.is_dir() and read_export_record(run)["model.mlpackage"] == entry  # the checked one stays


@pytest.mark.slow
def test_every_format_exports_a_real_run_and_answers_as_it_does(cli, tmp_path: Path):
    """The embedded backbone trained on real photos: each format's export agrees with it on the
    held-out photos (Core ML: checked, not run)."""
    run = tmp_path / "run"
    status, captured = cli("train", shared_dataset("hymenoptera_data"), "--out", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    formats = {**RUNTIMES, "coreml": (".mlpackage", "coremltools")}
    exported = [name for name, (_, module) in formats.items() if _installed(module)]
    for name in exported:
        _export_in_child(run, name, "--check-images", "64")
    record = read_export_record(run)
    for name in exported:
        entry = record["model" + formats[name][0]]
        assert entry["passed"] is True and entry["forced"] is False, entry
        assert entry["measured"] is (name != "coreml")
        if entry["measured"]:
            assert entry["top1_agreement"] >= 0.995 and entry["images"]["val"] == 64
            assert abs(entry["accuracy"]["trained"] - entry["accuracy"]["exported"]) <= 0.02


@pytest.mark.parametrize("name, suffix", RUNNABLE)
def test_serve_answers_from_an_export_as_the_run_does(exported: Path, images: Path, name: str, suffix: str):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from headstart.model import open_model
    from headstart.serve import ServeConfig, create_app

    image = sorted(images.rglob("*.png"))[0]
    upload = [("files", (image.name, image.read_bytes(), "image/png"))]
    answers = {}
    for model in (exported, exported / f"model{suffix}"):
        with TestClient(create_app(open_model(model), ServeConfig(), model)) as client:
            response = client.post("/predict", files=upload)
            assert response.status_code == 200, response.text
            answers[model] = (response.json()["predictions"][0]["class"], client.get("/model").json()["engine"])
    assert answers[exported][0] == answers[exported / f"model{suffix}"][0]
    assert answers[exported / f"model{suffix}"][1] == {"openvino": "openvino", "tflite": "litert"}[name]
