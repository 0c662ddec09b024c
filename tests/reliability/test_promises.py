"""Promises the README makes that no other test held: the engine parity check and its fallback,
`evaluate` on test/, `report` after the images moved, exit 1 for a bug, tests kept offline."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import ExitStatus

from conftest import COLORS, REPO, make_folder, make_image


@pytest.mark.parametrize("scale,accepted", [(1.05, True), (1.15, False)])
def test_an_engine_off_by_more_than_a_tenth_is_refused(tmp_path: Path, monkeypatch, scale: float, accepted: bool):
    """Relative L2 distance to eager fp32 above 0.1: `auto` falls back to the next engine and says
    so; asked for by name, it is a usage error."""
    import torch

    from headstart._console import Console
    from headstart.backbone.pretrained import create_backbone
    from headstart.config import BackboneRequest
    from headstart.errors import UsageError
    from headstart.features import engines

    real = engines._onnx_engine

    def off_by(*args):
        engine = real(*args)
        run = engine.run
        engine.run = lambda images: run(images) * scale  # every feature off by 5% or 15%
        return engine

    monkeypatch.setattr(engines, "_onnx_engine", off_by)
    torch.manual_seed(0)
    backbone, _, pre = create_backbone(BackboneRequest("test_efficientnet", image_size=32), pretrained=False)
    module = engines.PooledFeatures(backbone, pre)
    sample = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    messages = tmp_path / "messages"

    def create(name: str):
        with open(messages, "w") as err:
            return engines.create_engine(name, module, pre.input_size, torch.device("cpu"),
                                         lambda n: tmp_path / f"{n}.onnx", sample, Console(err=err))

    if accepted:
        assert create("auto").name == "onnx" and create("onnx").name == "onnx"
        return
    engine = create("auto")
    assert engine.name != "onnx" and "engine onnx differs from eager fp32 by 0.150" in messages.read_text()
    with pytest.raises(UsageError, match="differ from eager fp32 by 0.150"):
        create("onnx")


def test_evaluate_prefers_test_over_val(cli, tiny_args, tmp_path: Path):
    root = tmp_path / "data"
    for split, count in (("train", 6), ("val", 4), ("test", 3)):
        for name in ("red", "blue"):
            for i in range(count):
                # A seed per split: the same seed would make the val and test photos copies of training ones.
                make_image(root / split / name / f"{i}.png", COLORS[name], seed=i + 100 * len(split))
    assert cli("train", root, "--out", tmp_path / "run", *tiny_args, "--epochs", "1")[0] == ExitStatus.SUCCESS
    status, captured = cli("evaluate", tmp_path / "run", root)
    assert status == ExitStatus.SUCCESS and "(6 images)" in captured.stdout  # test/'s, not val/'s 8
    shutil.rmtree(root / "test")
    status, captured = cli("evaluate", tmp_path / "run", root)
    assert status == ExitStatus.SUCCESS and "(8 images)" in captured.stdout


def test_report_is_rebuilt_after_the_images_moved(cli, tiny_args, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=6)
    run = tmp_path / "run"
    assert cli("train", data, "--out", run, *tiny_args, "--epochs", "1")[0] == ExitStatus.SUCCESS
    data.rename(tmp_path / "moved")
    status, captured = cli("report", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    page = (run / "report.html").read_text()
    assert "accuracy" in page and "cannot show" in page and 'class="thumb"' not in page
    # Pointed at the new place (run.json's data folder), the thumbnails are back.
    request = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**request, "data": str(tmp_path / "moved")}))
    assert cli("report", run)[0] == ExitStatus.SUCCESS
    page = (run / "report.html").read_text()
    assert 'class="thumb"' in page and "cannot show" not in page


def test_an_unexpected_failure_is_exit_1_with_a_pointer_to_traceback(tmp_path: Path):
    # A bug, simulated: a command that raises something headstart does not expect.
    code = ("import dataclasses, sys, headstart.cli as c\n"
            "def bug(args, console): raise RuntimeError('boom')\n"
            "c.COMMANDS['cache'] = dataclasses.replace(c.COMMANDS['cache'], handler=bug)\n"
            "sys.argv = ['headstart', 'cache', 'info']\n"
            "c.run()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == ExitStatus.ERROR
    assert "RuntimeError: boom" in result.stderr


def test_the_tests_never_reach_the_network():
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE


def test_ci_runs_with_ci_true_whoever_calls_it():
    # With CI unset or CI=1, the real-photo and browser tests would skip in silence.
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert "export CI=true" in lines and lines.index("export CI=true") < lines.index("make test")
