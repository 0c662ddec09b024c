"""The run record: metrics.json, config.json and run.json written and read through one typed home,
each with a format_version; an unknown version or a damaged file is one error (exit 5) wherever met."""

import json
import shutil
from pathlib import Path

import pytest

from headstart.errors import ExitStatus, ModelFileError
from headstart.record import (FORMAT_VERSION, RunMetrics, SplitMetrics, read_config, read_metrics, read_record,
                              read_request)
from headstart.runfolder import CONFIG_FILE, METRICS_FILE, RUN_FILE


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_every_record_file_carries_its_format_version_and_reads_back_as_written(tiny_run: Path):
    for name in (CONFIG_FILE, METRICS_FILE, RUN_FILE):
        assert json.loads((tiny_run / name).read_text())["format_version"] == FORMAT_VERSION, name
    record = read_record(tiny_run)
    assert record.classes == ("blue", "red") and record.directory == tiny_run
    assert record.metrics.workflow == "standard" and record.metrics.stage1.epochs_run == 1
    assert record.request.params["epochs"] == 1 and len(record.history) == 1
    # Reading and writing again changes nothing: the dataclasses hold every field of the files.
    assert record.metrics.to_dict() == RunMetrics.from_dict(json.loads((tiny_run / METRICS_FILE).read_text())
                                                            ).to_dict()
    assert json.loads((tiny_run / METRICS_FILE).read_text())["val"] == _nan_free(record.metrics.val.to_dict())


def _nan_free(data):
    """As the file holds it: JSON has no NaN, headstart writes null."""
    if isinstance(data, dict):
        return {k: _nan_free(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nan_free(v) for v in data]
    return None if isinstance(data, float) and data != data else data


def test_a_split_keeps_its_top_k_accuracy_under_the_files_name():
    raw = {"count": 3, "classes": ["a", "b", "c"], "accuracy": 1.0, "top_2_accuracy": 1.0,
           "per_class": {c: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for c in "abc"}}
    split = SplitMetrics.from_dict(raw)
    assert (split.top_k, split.top_k_accuracy) == (2, 1.0)
    assert split.to_dict()["top_2_accuracy"] == 1.0 and "top_k" not in split.to_dict()


@pytest.mark.parametrize("name, reader", [(CONFIG_FILE, read_config), (METRICS_FILE, read_metrics),
                                          (RUN_FILE, read_request)])
def test_an_unknown_format_version_is_named_with_the_file(tiny_run: Path, tmp_path: Path, name, reader):
    run = copy_of(tiny_run, tmp_path)
    data = json.loads((run / name).read_text())
    (run / name).write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ModelFileError, match=rf"{name} has format_version 99, which this headstart does not read"):
        reader(run)


@pytest.mark.parametrize("command", [("report",), ("compare",), ("predict",), ("export",)])
def test_a_newer_metrics_file_is_exit_5_for_every_command_that_meets_it(cli, tiny_run: Path, tmp_path: Path,
                                                                        command):
    run = copy_of(tiny_run, tmp_path)
    data = json.loads((run / METRICS_FILE).read_text())
    (run / METRICS_FILE).write_text(json.dumps({**data, "format_version": 2}))
    args = [run, run] if command == ("compare",) else [run, tmp_path / "x.png"] if command == ("predict",) else [run]
    status, captured = cli(*command, *args)
    assert status == ExitStatus.MODEL, captured.stderr
    assert captured.stderr.count("\n") == 1 and "metrics.json has format_version 2" in captured.stderr


@pytest.mark.parametrize("damage", ['{"workflow": "standard"}', '{"val": 3}', "[1, 2]", "{"])
def test_a_damaged_metrics_file_is_exit_5_naming_it(cli, tiny_run: Path, tmp_path: Path, damage):
    run = copy_of(tiny_run, tmp_path)
    (run / METRICS_FILE).write_text(damage)
    for command in (("report", run), ("compare", run, run)):
        status, captured = cli(*command)
        assert status == ExitStatus.MODEL, captured.stderr
        assert str(run / METRICS_FILE) in captured.stderr and captured.stderr.count("\n") == 1


def test_a_damaged_run_file_stops_resume_with_exit_5(cli, tiny_run: Path, tmp_path: Path):
    run = copy_of(tiny_run, tmp_path)
    (run / RUN_FILE).write_text('{"data": 3, "params": {}}')
    status, captured = cli("train", "--resume", run)
    assert status == ExitStatus.MODEL and f"{run / RUN_FILE} is damaged" in captured.stderr


def test_resume_of_a_folder_without_run_json_names_the_option(cli, tmp_path: Path):
    status, captured = cli("train", "--resume", tmp_path)
    assert status == ExitStatus.USAGE
    assert (f"--resume: {tmp_path / RUN_FILE} not found: not a run folder written by 'headstart train'"
            in captured.stderr)


def test_a_record_file_without_format_version_is_damaged(tiny_run: Path, tmp_path: Path):
    run = copy_of(tiny_run, tmp_path)
    data = json.loads((run / CONFIG_FILE).read_text())
    del data["format_version"]
    (run / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=rf"{CONFIG_FILE} is damaged: it has no format_version"):
        read_config(run)


def test_a_run_shows_only_the_settings_its_workflow_read(tiny_run: Path):
    import dataclasses

    record = read_record(tiny_run)
    assert {"epochs", "lr", "augment", "seed"} <= set(record.used_settings())  # the standard workflow's
    lightweight = dataclasses.replace(record, metrics=dataclasses.replace(record.metrics, workflow="lightweight"))
    used = lightweight.used_settings()
    assert "epochs" not in used and "lr" not in used and {"class_weight", "seed"} <= set(used)


def test_validation_and_test_far_apart_are_called_out():
    split = {"count": 64, "classes": ["a", "b"], "per_class": {}}
    metrics = RunMetrics.from_dict({
        "workflow": "lightweight", "train_seconds": 1.0, "counts": {}, "skipped": 0, "format_version": 1,
        "val": {**split, "accuracy": 0.8953, "accuracy_ci95": [0.80, 0.95]},
        "test": {**split, "accuracy": 0.7335, "accuracy_ci95": [0.68, 0.78]}})
    assert metrics.disagreement().startswith("validation accuracy 89.53% (80.00%-95.00%) and test accuracy 73.35%")
    close = RunMetrics.from_dict({**metrics.to_dict(), "test": {**split, "accuracy": 0.85,
                                                                "accuracy_ci95": [0.75, 0.92]}})
    assert close.disagreement() is None
