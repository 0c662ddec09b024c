"""The command line as a terminal user meets it: flags anywhere, one error prefix, help with
examples, one output flag name, a closed pipe, and runs locked while they are written."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.cli import build_parser
from headstart.errors import ExitStatus
from headstart.runfolder import LOCK_FILE, lock_run

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def trained(cli, tiny_data: Path, tiny_args, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--val-fraction", "0.25",
                           "--test-fraction", "0.25")
    assert status == ExitStatus.SUCCESS, captured.stderr
    return out


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_option_has_help_and_an_example():
    commands = _subcommands()
    assert set(commands) >= {"train", "predict", "evaluate", "inspect", "report", "export", "serve", "cache",
                             "compare"}
    for name, parser in commands.items():
        assert parser.epilog and f"headstart {name}" in parser.epilog, name
        for action in parser._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"headstart {name} {action.option_strings or action.dest} has no help"


def test_quiet_and_traceback_after_the_command(cli, trained: Path, tiny_data: Path):
    status, captured = cli("predict", trained, tiny_data / "red" / "red_000.png", "-q")
    assert status == ExitStatus.SUCCESS
    assert captured.stderr == "" and captured.stdout.count("\n") == 1
    assert build_parser().parse_args(["report", "run", "--traceback"]).traceback


def test_usage_errors_have_one_prefix(cli):
    status, captured = cli("train", "data", "--epochs", "many")
    assert status == ExitStatus.USAGE
    assert captured.stderr.startswith("headstart: error: train: argument --epochs")
    assert captured.stderr.count("headstart") == 1


def test_export_takes_output_and_still_the_old_out(cli, trained: Path, tmp_path: Path):
    export = _subcommands()["export"]
    assert "--output" in export.format_help() and "--out " not in export.format_help()
    for flag, name in (("--output", "a.onnx"), ("--out", "b.onnx")):
        status, captured = cli("export", trained, flag, tmp_path / name, "--check-images", "4")
        assert status == ExitStatus.SUCCESS, captured.stderr
        assert (tmp_path / name).is_file()


def test_a_closed_pipe_ends_quietly_like_unix_tools(trained: Path, tiny_data: Path, tmp_path: Path):
    # `headstart predict ... | head -1`: the reader leaves after one line, long before the last one.
    many = tmp_path / "many"
    many.mkdir()
    for i in range(800):
        (many / f"{i:04d}.png").symlink_to(tiny_data / "red" / "red_000.png")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = f"{sys.executable} -m headstart predict {trained} {many} --workers 0 --batch-size 8 | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.count("\n") == 1
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr and "error" not in done.stderr
    assert done.returncode == 141  # as a shell reports `yes | head` under pipefail


def test_a_second_writer_is_refused_naming_the_first(cli, tiny_data: Path, tiny_args, tmp_path: Path):
    out = tmp_path / "run"
    with lock_run(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
        status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--overwrite")
    assert status == ExitStatus.USAGE
    assert f"being written by another headstart process (pid {os.getpid()})" in captured.stderr
    assert not (out / LOCK_FILE).exists()  # released with its holder
    assert not (out / "config.json").exists()



def test_commands_on_an_unfinished_run_say_so(cli, tiny_data: Path, tiny_args, tmp_path: Path):
    out = tmp_path / "run"
    status, _ = cli("train", tiny_data, "--out", out, *tiny_args)
    assert status == ExitStatus.SUCCESS
    for name in ("config.json", "model.safetensors", "metrics.json"):  # as before training ended
        (out / name).unlink()
    for argv in (("predict", out, tiny_data), ("report", out), ("export", out)):
        status, captured = cli(*argv)
        assert status == ExitStatus.MODEL
        assert f"finish it with: headstart train --resume {out}" in captured.stderr, argv
    with lock_run(out):
        status, captured = cli("predict", out, tiny_data)
    assert f"{out} is still training (pid {os.getpid()})" in captured.stderr
