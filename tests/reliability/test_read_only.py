"""Folders that cannot be written: a complete read-only cache is used as it is; an output folder
that cannot be written is a one-line error with exit 6.

Permission bits do not bind root, so as root the folder is made a read-only bind mount in a
private mount namespace (``unshare``), as a read-only disk or network share would be.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.errors import ExitStatus

from conftest import REPO, TINY_BACKBONE, make_folder


def run_read_only(folder: Path, argv: list) -> subprocess.CompletedProcess:
    """``headstart *argv`` in a child process that cannot write into ``folder``."""
    command = [sys.executable, "-m", "headstart", *map(str, argv)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env)
        finally:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a folder read-only")
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", mount, str(folder), *command], capture_output=True,
                          text=True, env=env)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_complete_read_only_cache_is_used(cli, tiny_args, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=6)
    cache = tmp_path / "cache"
    args = [data, *tiny_args, "--workflow", "lightweight", "--device", "cpu", "--cache-dir", cache]
    status, captured = cli("train", *args, "--out", tmp_path / "first")
    assert status == ExitStatus.SUCCESS, captured.stderr
    before = snapshot(cache)
    result = run_read_only(cache, ["train", *args, "--out", tmp_path / "again"])
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == ExitStatus.SUCCESS, result.stderr
    features = json.loads((tmp_path / "again" / "metrics.json").read_text())["features"]
    assert features["computed"] == 0 and features["cached"] == 12
    assert snapshot(cache) == before  # nothing written, not even a journal


def test_an_output_folder_that_cannot_be_written_is_exit_6(tiny_weights, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=4)
    locked = tmp_path / "locked"
    locked.mkdir()
    result = run_read_only(locked, ["train", data, "--out", locked / "run", "--backbone", TINY_BACKBONE, "--weights",
                                    tiny_weights, "--image-size", "32", "--epochs", "1", "--workers", "0"])
    if result.returncode != ExitStatus.IO and "unshare" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == ExitStatus.IO, result.stderr
    assert result.stderr.startswith("headstart: error: cannot write or read")
    assert "locked" in result.stderr and "Traceback" not in result.stderr
