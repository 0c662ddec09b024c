"""runfolder.py: the rules for output folders, the run lock, and reading a run's files back."""

import datetime
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart import runfolder
from headstart.errors import ModelFileError, UsageError
from headstart.runfolder import (
    CONFIG_FILE,
    LOCK_FILE,
    RUN_FILE,
    SPLIT_FILE,
    check_finished,
    lock_owner,
    lock_run,
    new_run_dir,
    prepare_output_dir,
    read_csv_file,
    relative_path,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_an_output_folder_with_files_needs_overwrite(tmp_path: Path):
    out = tmp_path / "a" / "b"
    assert prepare_output_dir(out, overwrite=False) == out and out.is_dir()
    assert prepare_output_dir(out, overwrite=False) == out  # still empty
    (out / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UsageError, match=f"^output folder {out} is not empty: choose another --out or pass "
                                         "--overwrite$"):
        prepare_output_dir(out, overwrite=False)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "model.safetensors").read_bytes() == b"weights"  # overwrite replaces files, it removes none


def test_an_output_folder_holding_only_its_lock_counts_as_empty(tmp_path: Path):
    (tmp_path / LOCK_FILE).write_text("123\n")
    assert prepare_output_dir(tmp_path, overwrite=False) == tmp_path


def test_an_output_that_is_a_file_is_refused(tmp_path: Path):
    path = tmp_path / "run"
    path.write_text("x")
    with pytest.raises(UsageError, match=f"^output {path} exists and is not a folder$"):
        prepare_output_dir(path, overwrite=True)
    with pytest.raises(UsageError, match=f"^output {path} exists and is not a folder$"):
        with lock_run(path):
            pass


def test_new_run_dirs_are_numbered_within_one_second(tmp_path: Path, monkeypatch):
    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 3, 14, 15, 9, 26)

    monkeypatch.setattr(runfolder.datetime, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    made = []
    for _ in range(3):
        made.append(new_run_dir("inspect-"))
        made[-1].mkdir(parents=True)
    assert made == [Path("runs/inspect-20260314-150926"), Path("runs/inspect-20260314-150926-2"),
                    Path("runs/inspect-20260314-150926-3")]
    assert new_run_dir() == Path("runs/20260314-150926")


def test_relative_path_is_posix_inside_the_data_folder_and_absolute_outside(tmp_path: Path):
    root = tmp_path / "data"
    assert relative_path(root / "cat" / "a.jpg", root) == "cat/a.jpg"
    assert relative_path(tmp_path / "other" / "b.jpg", root) == str(tmp_path / "other" / "b.jpg")


def test_a_second_writer_is_refused_naming_the_pid_of_the_first(tmp_path: Path):
    run = tmp_path / "run"
    assert lock_owner(run) is None
    with lock_run(run) as held:
        assert held == run and (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert lock_owner(run) == os.getpid()
        with pytest.raises(UsageError, match=rf"^{run} is being written by another headstart process "
                                             rf"\(pid {os.getpid()}\): wait for it to end, or stop it$"):
            with lock_run(run):
                pass
    assert not (run / LOCK_FILE).exists() and lock_owner(run) is None
    with lock_run(run):  # released: the next writer gets it
        pass


def test_the_lock_is_the_kernels_and_dies_with_its_holder(tmp_path: Path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from headstart.runfolder import lock_run\n"
        "with lock_run(sys.argv[2]):\n    print('locked', flush=True); time.sleep(60)"), str(SRC), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        child.kill()
        child.wait()
    assert lock_owner(out) is None  # the file a killed holder left names nobody
    with lock_run(out):  # a killed holder leaves no stale lock behind
        pass


def test_a_forked_worker_does_not_keep_a_killed_runs_lock(tmp_path: Path):
    """kill -9 of a run whose decoding workers outlive it: --resume at once finds the folder free."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import multiprocessing, sys, time; sys.path.insert(0, sys.argv[1]);"
        "from headstart.runfolder import lock_run\n"
        "def work(started):\n"
        "    started.set(); time.sleep(60)\n"
        "fork = multiprocessing.get_context('fork'); started = fork.Event()\n"
        "with lock_run(sys.argv[2]):\n"
        "    worker = fork.Process(target=work, args=(started,))\n"
        # Running, the worker is past its fork handlers: on a loaded machine, a kill right after
        # start() could come before the child had run them, still holding the parent's lock.
        "    worker.start(); started.wait(); print(worker.pid, flush=True); time.sleep(60)"), str(SRC), str(out)],
        stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait()
        assert lock_owner(out) is None
        with lock_run(out):
            pass
    finally:
        os.kill(worker, 9)


def test_check_finished_says_whether_a_run_is_training_or_interrupted(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    check_finished(run)  # not a run of `headstart train`: the caller says what is missing
    (run / RUN_FILE).write_text(json.dumps({"data": str(tmp_path), "params": {}}))
    with pytest.raises(ModelFileError, match=f"^{run} is unfinished: training stopped before its model was "
                                             f"written; finish it with: headstart train --resume {run}$"):
        check_finished(run)
    with lock_run(run):
        with pytest.raises(ModelFileError, match=rf"^{run} is still training \(pid {os.getpid()}\): its model "
                                                 "is written when training ends$"):
            check_finished(run)
    (run / CONFIG_FILE).write_text("{}")
    check_finished(run)  # a finished run (any damage is the loader's to report)


def test_read_csv_file_reads_rows_and_refuses_a_damaged_or_missing_file(tmp_path: Path):
    (tmp_path / SPLIT_FILE).write_text("path,class,split\ncat/a.jpg,cat,train\n", encoding="utf-8")
    assert read_csv_file(tmp_path, SPLIT_FILE) == [{"path": "cat/a.jpg", "class": "cat", "split": "train"}]
    (tmp_path / "history.csv").write_text("epoch,loss\n1," + "9" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=f"^{tmp_path / 'history.csv'} is not a readable CSV file: "):
        read_csv_file(tmp_path, "history.csv")
    with pytest.raises(ModelFileError, match=f"^not a run folder: {tmp_path / 'predictions.csv'} is missing$"):
        read_csv_file(tmp_path, "predictions.csv")
    assert read_csv_file(tmp_path, "predictions.csv", required=False) is None
