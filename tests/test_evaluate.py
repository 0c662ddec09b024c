"""evaluate says what it scores and leaves out what the model was trained on; predict keeps one
row per input, URLs included; the Python API in scikit-learn's conventions."""

import contextlib
import csv
import functools
import http.server
import json
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.errors import ExitStatus

from conftest import make_folder, make_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_weights: Path):
    """A run trained on 12 of 24 images (6 validate it, 6 test it), and its exported model."""
    from conftest import TINY_BACKBONE, make_folder
    from headstart.cli import main
    from headstart._console import Console

    root = tmp_path_factory.mktemp("scoring")
    data = make_folder(root / "data")
    run = root / "run"
    args = ["train", data, "--out", run, "--backbone", TINY_BACKBONE, "--weights", tiny_weights,
            "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--workflow", "standard",
            "--val-fraction", "0.25", "--test-fraction", "0.25", "-q"]
    assert main([str(a) for a in args], Console(0)) == ExitStatus.SUCCESS
    assert main(["export", str(run), "--check-images", "4", "-q"], Console(0)) == ExitStatus.SUCCESS
    return run, data


def test_evaluate_leaves_out_the_images_it_was_trained_on(cli, trained, tmp_path: Path):
    run, data = trained
    out = tmp_path / "m.json"
    status, captured = cli("evaluate", run, data, "--output", out, "--workers", "0")
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert f"scoring 12 image(s): every image of {data} (it has no split folders)" in captured.stderr
    assert "left out 12 image(s) the model was trained on" in captured.stderr
    assert "6 of the scored images are the run's validation split" in captured.stderr
    metrics = json.loads(out.read_text())
    assert metrics["count"] == 12 and metrics["left_out_trained_on"] == 12 and metrics["validated_on"] == 6
    lo, hi = metrics["accuracy_ci95"]
    assert 0 <= lo <= metrics["accuracy"] <= hi <= 1
    status, captured = cli("evaluate", run, data, "--include-training-images", "--output", out, "--overwrite")
    assert status == ExitStatus.SUCCESS and json.loads(out.read_text())["count"] == 24
    assert "left out" not in captured.stderr


def test_evaluate_scores_an_onnx_model_like_its_run_and_writes_a_report(cli, trained, tmp_path: Path):
    run, data = trained
    results = {}
    for model in (run, run / "model.onnx"):
        out = tmp_path / f"{model.name}.json"
        status, captured = cli("evaluate", model, data, "--output", out, "--report", tmp_path / f"{model.name}.html")
        assert status == ExitStatus.SUCCESS, captured.stderr
        assert "left out 12 image(s)" in captured.stderr  # the .onnx sits in its run folder: split.csv is known
        results[model.suffix] = json.loads(out.read_text())
    assert results[".onnx"]["count"] == results[""]["count"] == 12
    assert results[".onnx"]["accuracy"] == pytest.approx(results[""]["accuracy"], abs=1e-9)
    page = (tmp_path / "model.onnx.html").read_text()
    for text in ("12 image(s) scored", "every image of", "accuracy, 95% interval", "confusion counts",
                 "Top losses"):
        assert text in page, text


def test_evaluate_on_split_folders_says_which_split(cli, trained, tmp_path: Path):
    run, _ = trained
    data = tmp_path / "fresh"  # new photos: make_folder's own would be byte-identical to the training ones
    for name, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(6):
            make_image(data / ("train" if i % 3 else "val") / name / f"{name}_{i}.png", color, seed=100 + i)
    status, captured = cli("evaluate", run, data)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert f"the val split of {data}" in captured.stderr and "left out" not in captured.stderr


def test_predict_writes_an_error_row_for_a_missing_file(cli, trained, tmp_path: Path):
    run, data = trained
    out = tmp_path / "p.csv"
    missing = tmp_path / "gone.png"
    images = [data / "red" / "red_000.png", missing, data / "blue" / "blue_000.png"]
    status, captured = cli("predict", run, *images, "--output", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == [str(p) for p in images]
    assert rows[1]["error"] == "no such file or folder" and not rows[0]["error"] and not rows[2]["error"]
    status, captured = cli("predict", run, missing, "--output", tmp_path / "none.csv")
    assert status == ExitStatus.DATA  # nothing at all to predict: a user error, and no file
    assert captured.stderr.strip().endswith(f"headstart: error: no such file or folder: {missing}")
    assert not (tmp_path / "none.csv").exists()


@contextlib.contextmanager
def http_folder(folder: Path):
    """A local HTTP server for ``folder`` (no network needed)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_predict_reads_urls_and_names_those_it_cannot_get(cli, trained, tmp_path: Path):
    run, data = trained
    with socket.socket() as s:  # a port nobody listens on: the same error as being offline
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/cat.jpg"
    out = tmp_path / "p.json"
    with http_folder(data / "red") as url:
        status, captured = cli("predict", run, f"{url}/red_001.png", f"{url}/nothing.png", closed,
                               "--output", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [f"{url}/red_001.png", f"{url}/nothing.png", closed]
    assert rows[0]["class"] in ("red", "blue") and rows[0]["error"] is None
    assert "HTTP 404" in rows[1]["error"]
    assert rows[2]["error"].startswith(f"cannot download {closed}") and "network" in rows[2]["error"]


def test_a_download_is_bounded_in_size(tmp_path: Path):
    from headstart.data.download import download
    from headstart.errors import DataError

    make_image(tmp_path / "site" / "big.png", (10, 20, 30), size=(400, 400))
    with http_folder(tmp_path / "site") as url, pytest.raises(DataError, match="larger than"):
        download(f"{url}/big.png", tmp_path, max_bytes=1000)


def test_api_predicts_a_folder_warns_on_unreadable_and_scores(trained, tmp_path: Path):
    run, data = trained
    clf = headstart.load(run, verbose=0)
    folder = clf.predict(str(data / "red"))
    assert len(folder) == 12 and set(folder) <= {"red", "blue"}
    with pytest.warns(UserWarning, match="1 of 2 image.*could not be read.*missing.jpg"):
        proba = clf.predict_proba([data / "red" / "red_000.png", tmp_path / "missing.jpg"])
    assert np.isfinite(proba[0]).all() and np.isnan(proba[1]).all()
    images = [data / "red" / f"red_{i:03d}.png" for i in range(4)] + [data / "blue" / f"blue_{i:03d}.png"
                                                                      for i in range(4)]
    truth = ["red"] * 4 + ["blue"] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every image readable: no warning
        expected = float(np.mean(clf.predict(images) == np.array(truth, dtype=object)))
        assert clf.score(images, truth) == expected
    with pytest.raises(ValueError, match="one class name in y per image"):
        clf.score(images, truth[:3])
    assert [row["stage"] for row in clf.history_] == ["frozen", "frozen"]
    assert set(clf.history_[0]) == {"epoch", "stage", "train_loss", "train_accuracy", "val_loss",
                                    "val_accuracy", "lr", "seconds"}


@contextlib.contextmanager
def trickling_server(send):
    """A local TCP server that answers each connection with ``send(connection)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=lambda: _quietly(send, connection), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def _quietly(send, connection):
    try:
        send(connection)
    except OSError:
        pass  # the client hung up, as it should
    finally:
        connection.close()


def _slow_headers(connection):
    connection.recv(4096)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n":
        connection.sendall(bytes([byte]))
        time.sleep(0.2)


def _slow_body(connection):
    connection.recv(4096)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(1000):
        connection.sendall(b"x")
        time.sleep(0.1)


def _to_ftp(connection):
    connection.recv(4096)
    connection.sendall(b"HTTP/1.1 302 Found\r\nLocation: ftp://example.com/cat.jpg\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("send", [_slow_headers, _slow_body])
def test_a_trickling_server_cannot_hold_a_download_past_its_deadline(tmp_path: Path, send):
    from headstart.data.download import download
    from headstart.errors import DataError

    with trickling_server(send) as url:
        started = time.monotonic()
        with pytest.raises(DataError, match=r"^http://127.0.0.1:\d+/cat.jpg: not downloaded within 1 s$"):
            download(f"{url}/cat.jpg", tmp_path, timeout_s=1)
    assert time.monotonic() - started < 3


def test_a_download_follows_no_redirect_off_the_web_and_hides_credentials(tmp_path: Path):
    from headstart.data.download import download
    from headstart.errors import DataError

    with trickling_server(_to_ftp) as url:
        with pytest.raises(DataError, match=r"^http://127.0.0.1:\d+/cat.jpg: the server answered HTTP 302 "
                                            r"redirected to ftp://, which is not followed$"):
            download(f"{url}/cat.jpg", tmp_path, timeout_s=5)
        hostile = url.replace("http://", "http://alice:s3cret@") + "/cat.jpg"
        with pytest.raises(DataError) as error:
            download(hostile, tmp_path, timeout_s=5)
    assert "s3cret" not in str(error.value) and "alice" not in str(error.value)
    assert str(error.value).startswith("cannot download http://***@127.0.0.1:")


def test_test_photos_copied_from_training_are_named_by_train_and_left_out_by_evaluate(cli, tiny_args,
                                                                                     tmp_path: Path):
    import shutil

    data = make_folder(tmp_path / "data", per_class=12, split_folders=True)
    for name in ("red", "blue"):
        (data / "test" / name).mkdir(parents=True)
        for i in range(1, 4):  # train/ holds images 1, 2, 4, 5...; the test folder copies two of them
            source = data / "train" / name / f"{name}_{i:03d}.png"
            if source.is_file():
                shutil.copy(source, data / "test" / name / f"copy_{i}.png")
        make_image(data / "test" / name / "new.png", (120, 120, 120), seed=50)
    out = tmp_path / "run"
    status, captured = cli("train", data, "--out", out, *tiny_args)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "headstart: warning: 4 test photo(s) are byte-identical copies of training photos" in captured.stderr
    status, captured = cli("evaluate", out, data)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "left out 4 image(s) the model was trained on, or copies of them" in captured.stderr
    assert "scoring 2 image(s)" in captured.stderr
