"""headstart serve: the API through FastAPI's test client, micro-batching, limits and bad uploads."""

import asyncio
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.errors import ExitStatus

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from headstart.serve import ServeConfig, _Batcher, create_app  # noqa: E402

from conftest import make_image  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_weights) -> Path:
    from conftest import make_folder
    import headstart

    root = tmp_path_factory.mktemp("serve")
    clf = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                    workflow="standard", epochs=1, batch_size=8, workers=0, verbose=0)
    return clf.fit(make_folder(root / "data", per_class=6)).save(root / "run")


def png_bytes(color=(200, 40, 40), size=(40, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(params=["run", "onnx"])
def client(request, run: Path, cli):
    model = run
    if request.param == "onnx":
        model = run / "model.onnx"
        if not model.exists():
            assert cli("export", run)[0] == ExitStatus.SUCCESS
    with TestClient(create_app(model, ServeConfig(max_images=3, max_upload_mb=0.5))) as c:
        yield c


def test_health_model_and_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["classes"] == ["blue", "red"] and info["backbone"] == "test_efficientnet"
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


def test_concurrent_requests_share_forward_passes():
    calls = []

    class Model:
        def run(self, batch):
            calls.append(len(batch))
            return np.tile([0.25, 0.75], (len(batch), 1))

    async def main():
        batcher = _Batcher(Model(), ServeConfig(max_batch=8, max_wait_ms=50))
        pixels = [np.zeros((3, 4, 4), np.uint8)]
        return await asyncio.gather(*(batcher.predict(pixels) for _ in range(8)))

    results = asyncio.run(main())
    assert len(results) == 8 and all(r.shape == (1, 2) for r in results)
    assert calls == [8]  # eight requests, one forward pass


def test_predictions_match_the_offline_path(run: Path, tmp_path: Path):
    import headstart

    image = make_image(tmp_path / "x.png", (30, 30, 220))
    offline = headstart.load(run, verbose=0).set_params(workers=0).predict_proba([image])[0]
    with TestClient(create_app(run)) as c:
        got = c.post("/predict", files=[("files", ("x.png", image.read_bytes(), "image/png"))]).json()
    served = {t["class"]: t["probability"] for t in got["predictions"][0]["top_k"]}
    assert served == pytest.approx({"blue": offline[0], "red": offline[1]}, abs=1e-5)
