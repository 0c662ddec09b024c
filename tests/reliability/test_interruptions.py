"""Interrupted runs, full disks, determinism: nothing the user had is lost."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.callbacks import Callback
from headstart.runfolder import CHECKPOINT_FILE, RUN_FILE
from headstart.training.checkpoint import load_checkpoint
from headstart.errors import ExitStatus

from conftest import make_folder

REPO = Path(__file__).resolve().parents[2]


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def comparable(metrics: dict) -> dict:
    """What must not depend on an interruption: everything but wall-clock times."""
    keep = ("val", "test", "stage1", "fine_tune", "counts", "workflow")
    return {k: metrics[k] for k in keep if k in metrics}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", per_class=12)


def train_args(data: Path, out: Path, tiny_args, *extra) -> list:
    return ["train", data, "--out", out, *tiny_args, "--epochs", "4", "--patience", "0",
            "--fine-tune-epochs", "2", *extra]


# Interrupted during stage 1, during fine-tuning, and during fine-tuning after a lightweight head.
@pytest.mark.parametrize("workflow,stop_after", [("standard", 2), ("standard", 5), ("lightweight", 2)])
def test_interrupted_run_resumes_to_the_same_metrics(cli, data, tiny_args, tmp_path: Path, monkeypatch,
                                                     workflow: str, stop_after: int):
    tiny_args = [*tiny_args, "--workflow", workflow, "--engine", "eager", "--cache-dir", tmp_path / "cache"]
    status, captured = cli(*train_args(data, tmp_path / "whole", tiny_args))
    assert status == ExitStatus.SUCCESS, captured.stderr

    from headstart import model as model_module

    real_fit = model_module.ImageClassifier.fit

    class CtrlC(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == stop_after:
                raise KeyboardInterrupt  # as if Ctrl-C came during the next epoch

    def fit_then_ctrl_c(self, data, **kwargs):
        return real_fit(self, data, **{**kwargs, "callbacks": [*kwargs.get("callbacks", ()), CtrlC()]})

    monkeypatch.setattr(model_module.ImageClassifier, "fit", fit_then_ctrl_c)
    run = tmp_path / "cut"
    status, captured = cli(*train_args(data, run, tiny_args))
    assert status == ExitStatus.INTERRUPTED
    assert f"headstart train --resume {run}" in captured.stderr and "Traceback" not in captured.stderr
    assert (run / CHECKPOINT_FILE).is_file() and (run / RUN_FILE).is_file()
    assert not (run / "model.safetensors").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(model_module.ImageClassifier, "fit", real_fit)
    status, captured = cli("train", "--resume", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "resuming" in captured.stderr
    assert not (run / CHECKPOINT_FILE).exists()
    assert comparable(metrics_of(run)) == comparable(metrics_of(tmp_path / "whole"))
    stages = [line.split(",")[1] for line in (run / "history.csv").read_text().splitlines()[1:]]
    refit = metrics_of(run)["fine_tune"].get("refit_epochs") or 0  # a kept fine-tune runs again on train + val
    assert stages == (["frozen"] * 4 if workflow == "standard" else ["head"]) + ["fine-tune"] * 2 + ["refit"] * refit


def test_kill_leaves_a_consistent_run_that_resumes(cli, data, tiny_weights, tmp_path: Path):
    """A real SIGTERM to a real process, while it trains; then --resume finishes the run as an
    uninterrupted one does."""
    run = tmp_path / "killed"
    options = ["--backbone", "test_efficientnet", "--weights", str(tiny_weights), "--image-size", "32", "--workers",
               "0", "--workflow", "standard", "--epochs", "30", "--patience", "0", "--batch-size", "8"]
    argv = [sys.executable, "-m", "headstart", "train", str(data), "--out", str(run), *options]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (run / CHECKPOINT_FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else ""
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # in the middle of the second epoch, or a later one
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitStatus.INTERRUPTED, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run)[0]
    assert state["stage"] == "frozen" and 1 <= state["epoch"] < 30
    assert len(state["history"]) == state["epoch"]

    status, captured = cli("train", "--resume", run)
    assert status == ExitStatus.SUCCESS and "resuming frozen" in captured.stderr, captured.stderr
    assert cli("train", data, "--out", tmp_path / "whole", *options)[0] == ExitStatus.SUCCESS
    assert comparable(metrics_of(run)) == comparable(metrics_of(tmp_path / "whole"))


def test_a_full_disk_keeps_the_previous_model(cli, data, tiny_args, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    assert cli(*train_args(data, run, tiny_args, "--fine-tune-epochs", "0"))[0] == ExitStatus.SUCCESS
    before = _files(run)
    assert "report.html" in before and "plots/learning_curves.png" in before
    import safetensors.torch

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    status, captured = cli(*train_args(data, run, tiny_args, "--overwrite", "--seed", "3",
                                       "--fine-tune-epochs", "0"))
    assert status == ExitStatus.IO
    assert "No space left on device" in captured.stderr and "Traceback" not in captured.stderr
    after = _files(run)
    assert {k: v for k, v in before.items() if k != RUN_FILE} == {k: v for k, v in after.items() if k != RUN_FILE}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_same_seed_same_split_and_metrics(data, tiny_weights, tmp_path: Path):
    def fit(seed):
        return headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights),
                                         image_size=32, workflow="standard", epochs=2, batch_size=8,
                                         workers=0, seed=seed, verbose=0).fit(data)

    a, b, c = fit(0), fit(0), fit(1)
    assert [s.path for s in a.split_.val] == [s.path for s in b.split_.val]
    assert [s.path for s in a.split_.val] != [s.path for s in c.split_.val]
    assert comparable(a.metrics_.to_dict()) == comparable(b.metrics_.to_dict())
    for key, value in a.net_.state_dict().items():
        assert np.array_equal(value.cpu().numpy(), b.net_.state_dict()[key].cpu().numpy()), key
