"""Data-parallel runs on torchrun (gloo, CPU): the same results as one process, and failures that end the job.

Each multi-process run is a real ``python -m torch.distributed.run`` (or ``headstart ... --nproc 2``)
subprocess on a free port, bounded by a timeout: a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from headstart import distributed
from headstart.cli.launch import _without_launch_options
from headstart.errors import ExitStatus
from headstart.callbacks import Callback
from headstart.runfolder import CHECKPOINT_FILE

from conftest import make_folder, shared_dataset

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds: far above a healthy run on 2 shared cores, far below a hang


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*argv, nproc: int = 2, torchrun: bool = True) -> subprocess.CompletedProcess:
    """``headstart ARGV`` on ``nproc`` processes: under torchrun, or started by ``--nproc``."""
    argv = [str(a) for a in argv]
    head = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
             str(free_port()), "-m", "headstart"] if torchrun else [sys.executable, "-m", "headstart"])
    tail = [] if torchrun else ["--nproc", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([*head, *argv, *tail], capture_output=True, text=True, timeout=TIMEOUT, env=env)


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# -- the work split, without processes ---------------------------------------------------------
@pytest.mark.parametrize("count,size,align", [(397, 2, 64), (10, 3, 1), (5, 4, 8), (0, 2, 64), (1000, 8, 32)])
def test_shards_cover_every_item_once_in_rank_order_on_aligned_boundaries(monkeypatch, count, size, align):
    bounds = []
    for rank in range(size):
        monkeypatch.setattr(distributed, "_current", distributed.World(rank, size))
        bounds.append(distributed.shard_bounds(count, align))
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(start % align == 0 or start == count for start, _ in bounds)
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= align  # balanced to within one aligned block


def test_outside_torchrun_there_is_one_process_and_collectives_are_identities():
    assert not distributed.launched({"RANK": "0"})
    assert distributed.launched({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                                 "MASTER_PORT": "1"})
    assert distributed.world() == distributed.World() and distributed.is_main()
    array = np.arange(6.0).reshape(3, 2)
    assert distributed.gather_arrays(array)[0] is array and distributed.broadcast("x") == "x"
    assert distributed.map_shards(lambda items: np.array(items) * 2, [1, 2, 3]).tolist() == [2, 4, 6]


def test_one_process_never_imports_pytorch_for_the_collectives():
    """`headstart predict MODEL.onnx` and a cached lightweight run pass through them without PyTorch."""
    code = ("import sys, numpy as np; from headstart import distributed as d; "
            "d.broadcast(1); d.gather_arrays(np.ones(3, bool)); d.gather_objects(1); d.all_gather_objects(1); "
            "d.all_sum([1.0]); d.map_shards(lambda x: np.array(x), [1]); d.data_parallel(None); "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip() == "False"


def test_the_ranks_get_the_command_line_without_the_launch_options():
    argv = ["train", "d", "--nproc", "2", "--devices=0,1", "--epochs", "3", "--nproc=4"]
    assert _without_launch_options(argv) == ["train", "d", "--epochs", "3"]


def test_launch_options_are_checked_before_any_process_starts(cli, tmp_path: Path):
    status, captured = cli("train", tmp_path, "--nproc", "2", "--devices", "0,1,2")
    assert status == ExitStatus.USAGE and "disagree" in captured.stderr
    status, captured = cli("predict", tmp_path, tmp_path, "--devices", "gpu0")
    assert status == ExitStatus.USAGE and "--devices gpu0" in captured.stderr


# -- whole runs on 2 processes -----------------------------------------------------------------
@pytest.mark.slow
def test_two_process_lightweight_run_fits_the_same_head_as_one_process(cli, tmp_path: Path):
    """Each rank extracts its share of the photos into its own fresh cache; rank 0 fits the head on
    the gathered features: the same tensors and metrics as one process."""
    data = shared_dataset("hymenoptera_data")
    common = ["--workflow", "lightweight", "--fine-tune-epochs", "0"]
    status, captured = cli("train", data, "--out", tmp_path / "one", "--cache-dir", tmp_path / "cache1", *common)
    assert status == ExitStatus.SUCCESS, captured.stderr
    done = launch("train", data, "--out", tmp_path / "two", "--cache-dir", tmp_path / "cache2", *common)
    assert done.returncode == 0, done.stderr
    one, two = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    for name in ("head.fc.weight", "head.fc.bias"):
        np.testing.assert_array_equal(two[name], one[name])
    m1, m2 = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")
    assert m2["val"] == m1["val"] and m2["head"]["C"] == m1["head"]["C"]
    assert m2["features"]["computed"] == m1["features"]["computed"] == sum(m1["counts"]["val"].values()) + sum(
        m1["counts"]["train"].values())
    # Only rank 0 talked, and wrote the run folder.
    assert done.stderr.count("done:") == 1 and "features on 2 processes" in done.stderr


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    # 40 images: 32 to train on (4 global batches of 8, no padding on 2 ranks), 8 to validate.
    return make_folder(tmp_path / "data", per_class=20)


def tiny_standard(tiny_weights: Path, batch_size: int) -> list[str]:
    return ["--backbone", "test_efficientnet", "--weights", str(tiny_weights), "--image-size", "32",
            "--workers", "0", "--workflow", "standard", "--epochs", "2", "--fine-tune-epochs", "1",
            "--augment", "none", "--dropout", "0", "--patience", "0", "--lr", "0.1", "--batch-size", str(batch_size),
            "--precision", "fp32"]


@pytest.mark.slow
def test_two_process_standard_run_matches_one_process_with_the_same_global_batch(cli, tiny_set, tiny_weights,
                                                                                 tmp_path: Path):
    """DDP with 2 x 4 images per step trains on the batches one process takes 8 at a time."""
    status, captured = cli("train", tiny_set, "--out", tmp_path / "one", *tiny_standard(tiny_weights, 8))
    assert status == ExitStatus.SUCCESS, captured.stderr
    done = launch("train", tiny_set, "--out", tmp_path / "two", *tiny_standard(tiny_weights, 4))
    assert done.returncode == 0, done.stderr
    m1, m2 = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")
    assert m2["counts"] == m1["counts"] and m2["val"]["accuracy"] == m1["val"]["accuracy"]
    assert m2["val"]["log_loss"] == pytest.approx(m1["val"]["log_loss"], abs=1e-4)
    assert m2["fine_tune"]["kept"] == m1["fine_tune"]["kept"]
    h1 = list(csv.DictReader(open(tmp_path / "one" / "history.csv")))
    h2 = list(csv.DictReader(open(tmp_path / "two" / "history.csv")))
    refit = ["refit"] if m1["fine_tune"]["kept"] else []  # a kept fine-tune runs again on train + val
    assert [r["stage"] for r in h1] == [r["stage"] for r in h2] == ["frozen", "frozen", "fine-tune", *refit]
    for a, b in zip(h1, h2):  # every epoch's validation loss, summed over the ranks' shares
        assert float(b["val_loss"]) == pytest.approx(float(a["val_loss"]), abs=1e-4, nan_ok=True)
    assert [float(b["train_loss"]) for b in h2] == pytest.approx([float(a["train_loss"]) for a in h1], abs=1e-4)


@pytest.mark.slow
def test_two_process_predict_and_evaluate_give_the_rows_and_metrics_of_one_process(cli, tiny_set, tiny_weights,
                                                                                   tmp_path: Path):
    run = tmp_path / "run"
    # Not refitted: evaluate then has the validation images to score.
    status, captured = cli("train", tiny_set, "--out", run, *tiny_standard(tiny_weights, 8), "--no-refit")
    assert status == ExitStatus.SUCCESS, captured.stderr
    # Batches of 3 leave the ranks uneven shares and a short last batch.
    status, captured = cli("predict", run, tiny_set, "--output", tmp_path / "one.csv", "--top-k", "2",
                           "--batch-size", "3")
    assert status == ExitStatus.SUCCESS, captured.stderr
    done = launch("predict", run, tiny_set, "--output", tmp_path / "two.csv", "--top-k", "2", "--batch-size", "3",
                  torchrun=False)
    assert done.returncode == 0, done.stderr
    one, two = (list(csv.reader(open(tmp_path / name))) for name in ("one.csv", "two.csv"))
    assert len(one) == len(two) == 41
    # The same rows, classes in the same order; probabilities to fp32 rounding, which shifts with
    # how the images fall into each rank's batches.
    for a, b in zip(one, two):
        assert [cell for cell in a if not _number(cell)] == [cell for cell in b if not _number(cell)]
        assert [float(c) for c in a if _number(c)] == pytest.approx([float(c) for c in b if _number(c)], abs=1e-5)
    status, _ = cli("evaluate", run, tiny_set, "--output", tmp_path / "one.json")
    done = launch("evaluate", run, tiny_set, "--output", tmp_path / "two.json")
    assert status == ExitStatus.SUCCESS and done.returncode == 0, done.stderr
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert _numbers(two) == pytest.approx(_numbers(one), abs=1e-6)
    assert {k: v for k, v in two.items() if not isinstance(v, float)} == \
        {k: v for k, v in one.items() if not isinstance(v, float)}  # counts, matrices, classes: exact
    assert done.stdout.count(f"{run} on ") == 1  # rank 0 alone prints the results


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def interrupted_run(cli, data: Path, run: Path, args: list[str], monkeypatch) -> Path:
    """A one-process run stopped as by Ctrl-C after its first epoch: its checkpoint is in ``run``."""
    from headstart import model as model_module

    real_fit = model_module.ImageClassifier.fit

    class CtrlC(Callback):
        def on_epoch_end(self, epoch, logs):
            raise KeyboardInterrupt

    def fit_then_ctrl_c(self, data, **kwargs):
        return real_fit(self, data, **{**kwargs, "callbacks": [CtrlC()]})

    with monkeypatch.context() as patch:
        patch.setattr(model_module.ImageClassifier, "fit", fit_then_ctrl_c)
        status, captured = cli("train", data, "--out", run, *args)
    assert status == ExitStatus.INTERRUPTED and (run / CHECKPOINT_FILE).is_file(), captured.stderr
    return run


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two(cli, tiny_set, tiny_weights, tmp_path: Path, monkeypatch):
    run = interrupted_run(cli, tiny_set, tmp_path / "run", tiny_standard(tiny_weights, 4), monkeypatch)
    done = launch("train", "--resume", run, torchrun=False)
    assert done.returncode == 0, done.stderr
    assert "resuming frozen at epoch 2/2" in done.stderr and not (run / CHECKPOINT_FILE).exists()
    stages = [line.split(",")[1] for line in (run / "history.csv").read_text().splitlines()[1:]]
    refit = ["refit"] if metrics_of(run)["fine_tune"]["kept"] else []
    assert stages == ["frozen", "frozen", "fine-tune", *refit]


def test_a_failing_rank_ends_the_job_with_one_line_naming_it(cli, tiny_set, tiny_weights, tmp_path: Path,
                                                             monkeypatch):
    """Rank 0 finds the checkpoint to resume from damaged; rank 1, waiting for it, is stopped: the job
    ends at once with rank 0's error and status, not after a collective's timeout."""
    run = interrupted_run(cli, tiny_set, tmp_path / "run", tiny_standard(tiny_weights, 4), monkeypatch)
    (run / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    started = time.monotonic()
    done = launch("train", "--resume", run, torchrun=False)
    assert time.monotonic() - started < 120
    assert done.returncode == ExitStatus.MODEL, done.stderr
    assert f"headstart: error: rank 0 of 2: checkpoint {run / CHECKPOINT_FILE} is damaged" in done.stderr
    assert "headstart: error: rank 0 of 2 failed with exit status 5" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rank_killed_by_a_signal_is_named_and_not_taken_for_ctrl_c(tmp_path: Path):
    """Out of memory, the kernel SIGKILLs one rank: the job says which rank and which signal, and
    does not end as an interruption (130) that a Ctrl-C would be."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # Loaded by every Python process at start-up: rank 1 (torchrun sets RANK) dies as the OOM killer would kill it.
    (hook / "sitecustomize.py").write_text("import os, signal\n"
                                           "if os.environ.get('RANK') == '1':\n"
                                           "    os.kill(os.getpid(), signal.SIGKILL)\n")
    data = make_folder(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO / "src")])}
    done = subprocess.run([sys.executable, "-m", "headstart", "train", str(data), "--out", str(tmp_path / "run"),
                           "--nproc", "2"], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert done.returncode == ExitStatus.ERROR, done.stderr
    assert "headstart: error: rank 1 of 2 was killed by SIGKILL" in done.stderr
    assert "Traceback" not in done.stderr
