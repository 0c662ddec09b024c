"""``--track mlflow`` against a real MLflow tracking server, and ``headstart compare``."""

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
    assert captured.stderr.startswith(f"headstart: error: --track mlflow: cannot start a run at {closed}")
    assert captured.stderr.count("\n") == 1 and list(out.iterdir()) == []  # rerun as it was, no --overwrite


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
    assert "accuracy" in rows and rows["accuracy"]["section"] == "val metrics"
    page = out.with_suffix(".html").read_text()
    assert "<mark>lr</mark>" in page and "<mark>epochs</mark>" not in page
    status, captured = cli("compare", runs[0], tmp_path / "nothing")
    assert status == ExitStatus.MODEL and "nothing" in captured.stderr
