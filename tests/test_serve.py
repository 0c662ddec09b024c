"""headstart serve: the API through FastAPI's test client, micro-batching, limits and bad uploads."""

import asyncio
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.errors import ExitStatus
from headstart.model import open_model
from headstart.record import read_metrics

if os.environ.get("CI") != "true":  # in CI a broken serve extra must fail, never skip every test here
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from headstart.serve import ServeConfig, _Batcher, create_app  # noqa: E402

from conftest import make_image  # noqa: E402


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


def png_bytes(color=(200, 40, 40), size=(40, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory) -> Path:
    """The run exported to ONNX outside its folder, which other test modules read as trained."""
    from headstart._console import Console
    from headstart.cli import main

    model = tmp_path_factory.mktemp("exported") / "model.onnx"
    assert main(["export", str(run), "--output", str(model)], Console(-1)) == ExitStatus.SUCCESS
    return model


@pytest.fixture(params=["run", "onnx"])
def client(request, run: Path):
    model = request.getfixturevalue("exported") if request.param == "onnx" else run
    with TestClient(create_app(open_model(model), ServeConfig(max_images=3, max_upload_mb=0.5), model)) as c:
        c.run = run
        yield c


def test_health_model_and_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["classes"] == ["blue", "red"] and info["backbone"] == "test_efficientnet"
    assert info["metrics"] == {"val": read_metrics(client.run).val.accuracy}  # an exported file's too
    assert info["model"].endswith(("model.onnx", "run"))  # where the predictor was opened from
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "Drop images here" in page.text and "blue, red" in page.text


def test_predict_several_images(client):
    files = [("files", ("a.png", png_bytes(), "image/png")), ("files", ("b.png", png_bytes((1, 2, 250)), "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == ["a.png", "b.png"]
    for p in predictions:
        assert p["class"] in ("blue", "red") and p["class"] == p["top_k"][0]["class"]
        assert sum(t["probability"] for t in p["top_k"]) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("upload,status,message", [
    ([("files", ("empty.png", b"", "image/png"))], 400, "empty.png: empty file"),
    ([("files", ("text.jpg", b"not an image at all", "image/jpeg"))], 400, "text.jpg: not an image"),
    ([("files", ("big.png", b"\0" * 600_000, "image/png"))], 413, "larger than 0.5 MB"),
    ([("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)], 413, "too many images"),
])
def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(client, upload, status, message):
    response = client.post("/predict", files=upload)
    assert response.status_code == status and message in response.json()["error"]
    assert client.post("/predict", files=[("files", ("ok.png", png_bytes(), "image/png"))]).status_code == 200


def test_a_bad_file_among_good_ones_gets_its_own_error(client):
    files = [("files", ("good.png", png_bytes(), "image/png")), ("files", ("bad.jpg", b"nope", "image/jpeg")),
             ("files", ("also.png", png_bytes((1, 2, 250)), "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    good, bad, also = response.json()["predictions"]
    assert good["filename"] == "good.png" and good["class"] in ("blue", "red")
    assert bad == {"filename": "bad.jpg", "error": "bad.jpg: not an image headstart can read (UnidentifiedImageError)"}
    assert also["filename"] == "also.png" and also["class"] in ("blue", "red")


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("post", "/predict", {"files": [("image", ("a.png", png_bytes(), "image/png"))]}, 422),  # a wrong field name
    ("post", "/predict", {}, 422),
    ("get", "/nothing", {}, 404),
    ("get", "/predict", {}, 405),
])
def test_every_error_has_one_shape(client, method, path, kwargs, status):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    if status == 422:
        assert "files: Field required" in body["error"] and "field 'files'" in body["error"]


def test_each_request_is_logged_in_one_line(client, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="headstart.serve.access"):
        client.get("/health")
        client.post("/predict", files=[("files", ("a.png", png_bytes(), "image/png"))])
    lines = [r.getMessage() for r in caplog.records if r.name == "headstart.serve.access"]
    assert len(lines) == 2
    assert re.fullmatch(r'\S+ "GET /health" 200 [\d.]+ ms', lines[0]), lines[0]
    assert re.fullmatch(r'\S+ "POST /predict" 200 [\d.]+ ms', lines[1]), lines[1]


def test_a_decompression_bomb_is_refused(client):
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    response = client.post("/predict", files=[("files", ("bomb.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 413 and "decompression bomb" in response.json()["error"]


class EchoModel:
    """Answers each image with probabilities made from its own pixels, so a mix-up between
    requests shows; records the size of every forward pass."""

    def __init__(self):
        self.calls = []

    def run(self, batch):
        self.calls.append(len(batch))
        p = batch.reshape(len(batch), -1)[:, 0].astype(np.float64) / 255
        return np.stack([p, 1 - p], axis=1)


def concurrent_requests(model, config: ServeConfig, requests: int) -> list[np.ndarray]:
    async def main():
        batcher = _Batcher(model, config)
        # Request k sends one image whose pixels are all k: its answer must be [k/255, 1 - k/255].
        return await asyncio.gather(*(batcher.predict([np.full((3, 4, 4), k, np.uint8)]) for k in range(requests)))

    return asyncio.run(main())


def assert_each_request_got_its_own_answer(results: list[np.ndarray]) -> None:
    for k, result in enumerate(results):
        np.testing.assert_allclose(result, [[k / 255, 1 - k / 255]])


def test_concurrent_requests_share_forward_passes():
    model = EchoModel()
    results = concurrent_requests(model, ServeConfig(max_batch=32, max_wait_ms=50), requests=8)
    assert_each_request_got_its_own_answer(results)
    assert model.calls == [8]  # eight requests, one forward pass


def test_max_batch_bounds_each_forward_pass():
    model = EchoModel()
    results = concurrent_requests(model, ServeConfig(max_batch=8, max_wait_ms=50), requests=20)
    assert_each_request_got_its_own_answer(results)
    assert model.calls == [8, 8, 4]


def test_max_wait_0_gives_each_request_its_own_pass():
    model = EchoModel()
    results = concurrent_requests(model, ServeConfig(max_batch=8, max_wait_ms=0), requests=5)
    assert_each_request_got_its_own_answer(results)
    assert model.calls == [1] * 5


def test_serve_options_reach_the_server(cli, run: Path, monkeypatch):
    import headstart.serve

    seen = {}
    monkeypatch.setattr(headstart.serve, "serve", lambda predictor, host, port, config, source: seen.update(
        predictor=predictor, config=config, source=source))
    status, _ = cli("serve", run, "--max-batch", "4", "--max-wait-ms", "0", "--timeout", "7")
    assert status == ExitStatus.SUCCESS
    assert seen["predictor"].classes_ == ("blue", "red") and seen["source"] == run  # opened by the CLI
    assert (seen["config"].max_batch, seen["config"].max_wait_ms, seen["config"].timeout_s) == (4, 0, 7)


def test_predictions_match_the_offline_path(run: Path, tmp_path: Path):
    import headstart

    image = make_image(tmp_path / "x.png", (30, 30, 220))
    offline = headstart.load(run, verbose=0).set_params(workers=0).predict_proba([image])[0]
    with TestClient(create_app(open_model(run))) as c:
        got = c.post("/predict", files=[("files", ("x.png", image.read_bytes(), "image/png"))]).json()
    served = {t["class"]: t["probability"] for t in got["predictions"][0]["top_k"]}
    assert served == pytest.approx({"blue": offline[0], "red": offline[1]}, abs=1e-5)


def test_a_port_out_of_range_or_in_use_is_one_line_before_serving(cli, tiny_run: Path):
    import socket

    status, captured = cli("serve", tiny_run, "--port", "80000")
    assert status == ExitStatus.USAGE and "expected a port from 0 to 65535, got 80000" in captured.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, captured = cli("serve", tiny_run, "--port", port)
    assert status == ExitStatus.USAGE and "serving" not in captured.stderr
    assert captured.stderr == (f"headstart: error: --host 127.0.0.1 --port {port}: cannot listen there: "
                               "Address already in use\n")
