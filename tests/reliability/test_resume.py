"""A resumed run finishes as if it had never stopped: same metrics, same history losses, same
weights, with decoding workers or without; and a rejected fine-tune leaves stage 1's weights."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import ExitStatus
from headstart.runfolder import CHECKPOINT_FILE

from conftest import make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("resume") / "data", per_class=12)


def train_args(data: Path, out: Path, tiny_args, workers: int, *extra) -> list:
    return ["train", data, "--out", out, *tiny_args, "--epochs", "3", "--patience", "0", "--fine-tune-epochs", "2",
            "--workers", str(workers), *extra]


def history(run: Path) -> list[dict]:
    """history.csv without the wall-clock column."""
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def tensors(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "model.safetensors"))


def comparable(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: metrics[k] for k in ("val", "test", "stage1", "fine_tune", "counts") if k in metrics}


def assert_same_run(a: Path, b: Path) -> None:
    assert comparable(a) == comparable(b)
    assert history(a) == history(b)
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert np.array_equal(ta[key], tb[key]), key


# Interrupted mid-stage-1 (a mid-stage checkpoint), and during the first fine-tuning epoch, when the
# checkpoint is the one stage 1 left as it finished: the case whose random state was lost.
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("where", ["stage 1", "first fine-tuning epoch"])
def test_a_resumed_run_is_the_uninterrupted_run(cli, data, tiny_args, tmp_path: Path, monkeypatch, where, workers):
    whole = tmp_path / "whole"
    status, captured = cli(*train_args(data, whole, tiny_args, workers))
    assert status == ExitStatus.SUCCESS, captured.stderr

    from headstart.training import loop, stages

    real_train_stage, real_run_epoch = stages.train_stage, loop.run_epoch
    if where == "stage 1":
        calls = []

        def run_epoch(trainer, loader, *args, **kwargs):
            if kwargs.get("desc", "").startswith("frozen 2"):
                calls.append(1)
                raise KeyboardInterrupt  # Ctrl-C in the middle of stage 1's second epoch
            return real_run_epoch(trainer, loader, *args, **kwargs)

        monkeypatch.setattr(loop, "run_epoch", run_epoch)
    else:
        def train_stage(trainer, stage, *args):
            if stage == "fine-tune":
                raise KeyboardInterrupt  # before the first fine-tuning epoch ends
            return real_train_stage(trainer, stage, *args)

        monkeypatch.setattr(stages, "train_stage", train_stage)
    cut = tmp_path / "cut"
    status, captured = cli(*train_args(data, cut, tiny_args, workers))
    assert status == ExitStatus.INTERRUPTED, captured.stderr
    assert (cut / CHECKPOINT_FILE).is_file()

    monkeypatch.setattr(stages, "train_stage", real_train_stage)
    monkeypatch.setattr(loop, "run_epoch", real_run_epoch)
    status, captured = cli("train", "--resume", cut)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "resuming" in captured.stderr
    assert_same_run(cut, whole)


def test_a_rejected_fine_tune_saves_the_stage_1_tensors_and_a_kept_blend_its_blend(cli, data, tiny_args,
                                                                                  tmp_path: Path, monkeypatch):
    from headstart.training import stages

    stage1 = tmp_path / "stage1"
    assert cli(*train_args(data, stage1, tiny_args, 0, "--fine-tune-epochs", "0"))[0] == ExitStatus.SUCCESS
    kept = tmp_path / "kept"
    monkeypatch.setattr(stages, "guard_verdict", lambda before, after: (True, "kept by the test"))
    assert cli(*train_args(data, kept, tiny_args, 0))[0] == ExitStatus.SUCCESS
    tuned = tmp_path / "tuned"
    assert cli(*train_args(data, tuned, tiny_args, 0, "--no-blend"))[0] == ExitStatus.SUCCESS
    rejected = tmp_path / "rejected"
    monkeypatch.setattr(stages, "guard_verdict", lambda before, after: (False, "refused by the test"))
    status, captured = cli(*train_args(data, rejected, tiny_args, 0))
    assert status == ExitStatus.SUCCESS and "keeping the stage-1 weights" in captured.stderr
    first, fine, final, alone = tensors(stage1), tensors(kept), tensors(rejected), tensors(tuned)
    assert any(not np.array_equal(first[k], alone[k]) for k in first)  # fine-tuning did change weights
    # A guard that takes every improvement ends on the last blend tried: 3/4 fine-tuned, 1/4 stage 1.
    assert json.loads((kept / "metrics.json").read_text())["fine_tune"]["share"] == 0.75
    for key in first:
        assert np.allclose(fine[key], 0.25 * first[key] + 0.75 * alone[key], atol=1e-6), key
    for key in first:
        assert np.array_equal(first[key], final[key]), key
    assert json.loads((rejected / "metrics.json").read_text())["fine_tune"]["kept"] is False


# The refit's checkpoints carry the guard's choice and the guarded model's validation probabilities:
# interrupted in its first epoch (the last checkpoint is fine-tuning's, finished) or in its last (a
# refit checkpoint), the resumed run chooses as the uninterrupted one did and ends on its weights.
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_run_interrupted_while_refitting_resumes_to_the_uninterrupted_run(cli, data, tiny_args, tmp_path: Path,
                                                                           monkeypatch, where):
    from headstart.training import loop, stages

    monkeypatch.setattr(stages, "guard_verdict", lambda before, after: (True, "kept by the test"))
    whole = tmp_path / "whole"
    assert cli(*train_args(data, whole, tiny_args, 0, "--fine-tune-epochs", "3"))[0] == ExitStatus.SUCCESS
    refit_epochs = [row for row in history(whole) if row["stage"] == "refit"]
    assert len(refit_epochs) == json.loads((whole / "metrics.json").read_text())["fine_tune"]["refit_epochs"] >= 2
    stop_at = f"refit 1/" if where == "first" else f"refit {len(refit_epochs)}/"
    real_run_epoch = loop.run_epoch

    def run_epoch(trainer, loader, *args, **kwargs):
        if kwargs.get("desc", "").startswith(stop_at):
            raise KeyboardInterrupt
        return real_run_epoch(trainer, loader, *args, **kwargs)

    monkeypatch.setattr(loop, "run_epoch", run_epoch)
    cut = tmp_path / "cut"
    status, captured = cli(*train_args(data, cut, tiny_args, 0, "--fine-tune-epochs", "3"))
    assert status == ExitStatus.INTERRUPTED, captured.stderr
    monkeypatch.setattr(loop, "run_epoch", real_run_epoch)
    status, captured = cli("train", "--resume", cut)
    assert status == ExitStatus.SUCCESS, captured.stderr
    resumed = "resuming after fine-tuning" if where == "first" else f"resuming refit at epoch {len(refit_epochs)}"
    assert resumed in captured.stderr
    assert_same_run(cut, whole)
