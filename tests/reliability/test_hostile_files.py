"""Model files built to break the reader: deep JSON, metadata that lies, files that are not files.
Each is refused in one line with the model's exit status, never a traceback."""

import json
import os
from pathlib import Path

import pytest

from headstart.errors import ExitStatus


@pytest.fixture(scope="module")
def trained(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((trained / name).read_bytes())
    return copy


@pytest.fixture(scope="module")
def onnx_model(trained: Path, tmp_path_factory) -> Path:
    from headstart.cli import main
    from headstart._console import Console

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(trained), "--out", str(path)], Console(0)) == ExitStatus.SUCCESS
    return path


def one_line_refusal(captured, status, expected: str) -> None:
    assert status == ExitStatus.MODEL, captured.stderr
    assert expected in captured.stderr
    assert captured.stderr.count("\n") == 1 and "Traceback" not in captured.stderr


@pytest.mark.parametrize("depth", [100_000, 900])
def test_a_deeply_nested_config_is_refused(cli, run: Path, tiny_data: Path, depth: int):
    config = json.loads((run / "config.json").read_text())
    # Too deep for the parser, or parseable but nested where a flat value belongs.
    config["versions"] = {"torch": json.loads("[" * depth + "]" * depth)} if depth < 1000 else None
    text = json.dumps(config) if depth < 1000 else '{"classes": ' + "[" * depth + "]" * depth + "}"
    (run / "config.json").write_text(text)
    status, captured = cli("predict", run, tiny_data)
    one_line_refusal(captured, status, "config.json")


def rewrite_metadata(source: Path, target: Path, change) -> Path:
    import onnx

    from headstart.export.onnx_runtime import METADATA_KEY

    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = change(prop.value)
    onnx.save(model, str(target))
    return target


def test_onnx_metadata_naming_fewer_classes_than_outputs_is_refused(cli, onnx_model: Path, tiny_data: Path,
                                                                      tmp_path: Path):
    def one_class(raw: str) -> str:
        meta = json.loads(raw)
        meta["classes"] = meta["classes"][:1]
        return json.dumps(meta)

    model = rewrite_metadata(onnx_model, tmp_path / "fewer.onnx", one_class)
    status, captured = cli("predict", model, tiny_data)
    one_line_refusal(captured, status, "names 1 classes but the model outputs 2")


def test_deeply_nested_onnx_metadata_is_refused(cli, onnx_model: Path, tiny_data: Path, tmp_path: Path):
    model = rewrite_metadata(onnx_model, tmp_path / "deep.onnx", lambda raw: "[" * 100_000 + "]" * 100_000)
    status, captured = cli("predict", model, tiny_data)
    one_line_refusal(captured, status, "nested too deeply")


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_model_file_that_is_not_a_regular_file_is_named_for_what_it_is(cli, run: Path, tiny_data: Path,
                                                                          kind: str):
    weights = run / "model.safetensors"
    weights.unlink()
    if kind == "fifo":
        os.mkfifo(weights)
        expected = "is a FIFO (named pipe)"
    else:
        weights.symlink_to("/dev/zero")
        expected = "is a character device (through a link)"
    status, captured = cli("predict", run, tiny_data)
    one_line_refusal(captured, status, expected)
    assert "is missing" not in captured.stderr
