"""One cache, several commands at once: `cache clear` never deletes what a running command
uses, and a run that cannot be saved says how to finish it."""

import errno
import os
from pathlib import Path

import pytest

from headstart.errors import ExitStatus, StorageError
from headstart.features.cache import CacheLayout

from conftest import make_folder


@pytest.fixture
def args(tmp_path: Path, tiny_args) -> list:
    data = make_folder(tmp_path / "data", per_class=6)
    return [data, *tiny_args, "--workflow", "lightweight", "--device", "cpu", "--engine", "onnx",
            "--cache-dir", tmp_path / "cache"]


def test_cache_clear_refuses_while_a_run_holds_the_cache(cli, tmp_path: Path):
    cache = CacheLayout(tmp_path / "cache")
    (cache.root / "features" / "x").mkdir(parents=True)
    with cache.in_use():
        status, captured = cli("cache", "clear", "--cache-dir", cache.root)
        with pytest.raises(StorageError):
            cache.clear()
    assert status == ExitStatus.IO and captured.stderr.count("\n") == 1
    assert "is in use" in captured.stderr and (cache.root / "features" / "x").is_dir()
    assert cli("cache", "clear", "--cache-dir", cache.root)[0] == ExitStatus.SUCCESS  # free again
    assert not (cache.root / "features").exists()


def test_a_clear_during_training_leaves_the_run_whole(cli, args, tmp_path: Path, monkeypatch):
    import headstart.model

    real_save = headstart.model.ImageClassifier.save
    cleared = []

    def clear_then_save(self, directory, **kwargs):
        # Another terminal runs `cache clear` while this run saves (it reads the backbone record).
        cleared.append(cli("cache", "clear", "--cache-dir", tmp_path / "cache"))
        return real_save(self, directory, **kwargs)

    monkeypatch.setattr(headstart.model.ImageClassifier, "save", clear_then_save)
    status, captured = cli("train", *args, "--out", tmp_path / "run")
    assert status == ExitStatus.SUCCESS, captured.stderr
    [(clear_status, clear_output)] = cleared
    assert clear_status == ExitStatus.IO and "in use" in clear_output.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert any((tmp_path / "cache" / "backbones").iterdir())


def test_a_failed_save_says_how_to_finish_the_run(cli, args, tmp_path: Path, monkeypatch):
    import headstart.model

    real_save = headstart.model.ImageClassifier.save

    def disk_full(self, directory, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(headstart.model.ImageClassifier, "save", disk_full)
    run = tmp_path / "run"
    status, captured = cli("train", *args, "--out", run)
    [error] = [line for line in captured.stderr.splitlines() if line.startswith("headstart: error:")]
    assert status == ExitStatus.IO and "Traceback" not in captured.stderr
    assert "No space left on device" in error and f"headstart train --resume {run}" in error
    monkeypatch.setattr(headstart.model.ImageClassifier, "save", real_save)
    status, captured = cli("train", "--resume", run)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert (run / "model.safetensors").is_file()


def test_cache_clear_removes_features_engines_and_records(cli, args, tmp_path: Path):
    assert cli("train", *args, "--out", tmp_path / "run")[0] == ExitStatus.SUCCESS
    cache = tmp_path / "cache"
    assert list((cache / "engines").glob("*.onnx")) and list((cache / "engines").glob("*.verified.json"))
    assert any((cache / "backbones").iterdir()) and any((cache / "features").iterdir())
    status, captured = cli("cache", "clear", "--cache-dir", cache)
    assert status == ExitStatus.SUCCESS
    assert not any((cache / name).exists() for name in ("features", "engines", "backbones"))
    _, captured = cli("cache", "info", "--cache-dir", cache)
    assert "empty" in captured.stdout
