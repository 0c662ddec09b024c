"""Trackers: ``--track mlflow`` against a real MLflow tracking server, ``--track tensorboard`` read back
with TensorBoard's own reader, callbacks from the Python API, and ``headstart compare``."""

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from headstart.errors import ExitStatus


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port, its store in a temporary folder; killed at the end."""
    pytest.importorskip("mlflow", reason="the track extra (pip install 'headstart[track]')")
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 9)  # the server and the workers it started: its own session
        server.wait()
        log.close()


def test_a_training_run_is_logged_to_the_tracking_server(cli, mlflow_server, tiny_data: Path, tiny_args,
                                                         tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny")
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--fine-tune-epochs", "1",
                           "--track", "mlflow")
    assert status == ExitStatus.SUCCESS, captured.stderr
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["epochs"] == "2" and run.data.params["workflow"] == "standard"
    assert run.data.params["data"] == str(tiny_data.resolve())
    # Two frozen epochs, then one of fine-tuning: one step each.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["final_val_accuracy"] == pytest.approx(metrics["val"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "config.json", "metrics.json", "history.csv", "model"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.safetensors"]
    local = client.download_artifacts(run.info.run_id, "model/model.safetensors", str(tmp_path))
    assert Path(local).read_bytes() == (out / "model.safetensors").read_bytes()


def test_an_unreachable_tracking_server_is_one_line_and_writes_nothing(cli, tiny_data: Path, tiny_args,
                                                                      tmp_path: Path, monkeypatch):
    pytest.importorskip("mlflow", reason="the track extra (pip install 'headstart[track]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--track", "mlflow")
    assert status == ExitStatus.USAGE
    said, error = captured.stderr.splitlines()  # what it waits for, then why it gave up
    assert said == f"connecting to MLflow at {closed} (at most 1 attempt of 10 s)"
    assert error.startswith(f"headstart: error: --track mlflow: cannot start a run at {closed}")
    assert list(out.iterdir()) == []  # rerun as it was, no --overwrite


def test_an_interrupted_run_is_marked_killed_in_mlflow(cli, mlflow_server, tiny_data: Path, tiny_args,
                                                       tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from headstart import model as model_module
    from headstart.callbacks import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, epoch, logs):
            raise KeyboardInterrupt

    real_fit = model_module.ImageClassifier.fit

    def fit_then_ctrl_c(self, data, **kwargs):
        return real_fit(self, data, **{**kwargs, "callbacks": [*kwargs["callbacks"], CtrlC()]})

    monkeypatch.setattr(model_module.ImageClassifier, "fit", fit_then_ctrl_c)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "killed")
    status, captured = cli("train", tiny_data, "--out", tmp_path / "run", *tiny_args, "--track", "mlflow")
    assert status == ExitStatus.INTERRUPTED, captured.stderr
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert run.info.status == "KILLED"


def test_a_failing_artifact_store_after_training_is_a_warning_and_the_run_stands(cli, mlflow_server, tiny_data: Path,
                                                                                tiny_args, tmp_path: Path,
                                                                                monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    def refuse(*args, **kwargs):
        raise OSError("artifact store is read-only")

    monkeypatch.setattr(MlflowClient, "log_artifact", refuse)
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--track", "mlflow")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "headstart: warning: --track mlflow: the run folder's files could not be logged" in captured.stderr
    assert "artifact store is read-only" in captured.stderr and "done:" in captured.stderr
    assert (out / "model.safetensors").is_file()


def test_tensorboard_event_files_hold_every_epoch_the_settings_and_the_final_metrics(cli, tiny_data: Path,
                                                                                    tiny_args, tmp_path: Path):
    pytest.importorskip("tensorboard", reason="the track extra (pip install 'headstart[track]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--fine-tune-epochs", "1",
                           "--track", "tensorboard")
    assert status == ExitStatus.SUCCESS, captured.stderr
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    history = list(csv.DictReader(open(out / "history.csv")))
    val_loss = events.Scalars("val_loss")
    assert [e.step for e in val_loss] == [1, 2, 3]  # two frozen epochs, then one of fine-tuning
    assert [e.value for e in val_loss] == pytest.approx([float(r["val_loss"]) for r in history], rel=1e-6)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    final = events.Scalars("final_val_accuracy")
    assert [e.value for e in final] == pytest.approx([metrics["val"]["accuracy"]])
    session = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["epochs"].number_value == 2 and session.hparams["workflow"].string_value == "standard"


def test_callbacks_see_the_fit_start_each_epoch_its_end_and_the_save(tiny_data: Path, tiny_weights: Path,
                                                                      tmp_path: Path):
    import headstart
    from headstart.callbacks import Callback

    class Spy(Callback):
        def __init__(self):
            self.calls = []

        def on_fit_start(self, request):
            self.calls.append(("start", request.data))

        def on_epoch_end(self, epoch, logs):
            self.calls.append(("epoch", epoch, logs["stage"]))

        def on_fit_end(self, record):
            self.calls.append(("end", record.metrics.workflow, len(record.history)))

        def on_save(self, directory):
            self.calls.append(("save", directory))

    spy = Spy()
    clf = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                    workflow="standard", epochs=2, batch_size=8, workers=0, fine_tune_epochs=1,
                                    verbose=0)
    clf.fit(tiny_data, callbacks=[spy])
    saved = clf.save(tmp_path / "run")
    assert spy.calls == [("start", tiny_data.resolve()), ("epoch", 1, "frozen"), ("epoch", 2, "frozen"),
                         ("epoch", 3, "fine-tune"), ("end", "standard", 3), ("save", saved)]
    assert clf.record_.metrics is clf.metrics_ and clf.record_.request.data == tiny_data.resolve()


def test_a_callback_is_told_of_an_interruption_and_the_fit_stops(tiny_data: Path, tiny_weights: Path):
    import headstart
    from headstart.callbacks import Callback

    class StopAtFirstEpoch(Callback):
        interrupted = ended = False

        def on_epoch_end(self, epoch, logs):
            raise KeyboardInterrupt

        def on_interrupt(self):
            self.interrupted = True

        def on_fit_end(self, record):
            self.ended = True

    stop = StopAtFirstEpoch()
    clf = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                    workflow="standard", epochs=2, batch_size=8, workers=0, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(tiny_data, callbacks=[stop])
    assert stop.interrupted and not stop.ended


def test_compare_puts_runs_side_by_side(cli, tiny_data: Path, tiny_args, tmp_path: Path):
    runs = []
    for lr in ("0.001", "0.01"):
        runs.append(tmp_path / f"lr{lr}")
        status, captured = cli("train", tiny_data, "--out", runs[-1], *tiny_args, "--lr", lr, "-q")
        assert status == ExitStatus.SUCCESS, captured.stderr
    out = tmp_path / "cmp.csv"
    status, captured = cli("compare", *runs, "--output", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    lines = captured.stdout.splitlines()
    assert str(runs[0]) in lines[0] and str(runs[1]) in lines[0]
    assert lines[1] == "[setting]" and lines[2].startswith("*lr")  # the setting that differs, first and marked
    rows = {r["name"]: r for r in csv.DictReader(open(out))}
    assert rows["lr"][str(runs[0])] == "0.001" and rows["lr"][str(runs[1])] == "0.01"
    assert rows["epochs"][str(runs[0])] == rows["epochs"][str(runs[1])] == "2"
    assert rows["data"][str(runs[0])] == str(tiny_data.resolve())  # what each run was trained on
    assert "accuracy" in rows and rows["accuracy"]["section"] == "val metrics"
    page = out.with_suffix(".html").read_text()
    assert "<mark>lr</mark>" in page and "<mark>epochs</mark>" not in page
    status, captured = cli("compare", runs[0], tmp_path / "nothing")
    assert status == ExitStatus.MODEL and "nothing" in captured.stderr
