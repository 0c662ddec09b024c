"""Untrusted model and weights files: read as safetensors and JSON only, validated before use."""

import json
from pathlib import Path

import pytest
import torch

from headstart.backbone.pretrained import read_state_dict
from headstart.errors import BackboneError, ExitStatus


@pytest.fixture
def trained(cli, tiny_data: Path, tiny_args, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    return out


@pytest.mark.parametrize("damage,message", [
    ("no_config", "config.json is missing"),
    ("bad_json", "is not valid JSON"),
    ("wrong_type", "'config.head.num_classes' must be an integer"),
    ("class_count", "head.num_classes"),
    ("unknown_backbone", "unknown backbone"),
    ("truncated", "not a readable safetensors file"),
    ("wrong_shape", "does not match its config.json"),
    ("bad_value", "'dropout' must be in [0, 1)"),
])
def test_damaged_models_get_one_line_errors(cli, trained: Path, tiny_data: Path, damage: str, message: str):
    config_path = trained / "config.json"
    config = json.loads(config_path.read_text())
    if damage == "no_config":
        config_path.unlink()
    elif damage == "bad_json":
        config_path.write_text("{not json")
    elif damage == "wrong_type":
        config["head"]["num_classes"] = "two"
    elif damage == "class_count":
        config["classes"].append("green")
    elif damage == "unknown_backbone":
        config["backbone"]["architecture"] = "no_such_net"
    elif damage == "truncated":
        model = trained / "model.safetensors"
        model.write_bytes(model.read_bytes()[:1000])
    elif damage == "wrong_shape":
        from safetensors.torch import load_file, save_file

        state = load_file(str(trained / "model.safetensors"))
        state["head.fc.weight"] = torch.zeros(5, state["head.fc.weight"].shape[1])
        save_file(state, str(trained / "model.safetensors"))
    elif damage == "bad_value":
        config["head"]["dropout"] = 7.5
    if damage in ("wrong_type", "class_count", "unknown_backbone", "bad_value"):
        config_path.write_text(json.dumps(config))
    status, captured = cli("predict", trained, tiny_data)
    assert status == ExitStatus.MODEL
    assert message in captured.stderr
    assert "Traceback" not in captured.stderr and captured.stderr.count("\n") == 1




def test_a_weights_file_that_would_run_code_is_refused(tmp_path: Path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Path("x")}, path)  # needs unpickling
    with pytest.raises(BackboneError, match="cannot read weights file"):
        read_state_dict(path)
