"""``headstart serve``: an HTTP API and a web page for a trained or exported model.

Concurrent requests are batched together (micro-batching): each request's
images wait at most ``max_wait_ms`` for others, then one forward pass serves
them all, which on a CPU is several times cheaper than one pass per request.
Uploads are bounded in size, count and time; a bad upload gets a 4xx JSON
error naming the file and the reason, and the server keeps serving.
"""


import asyncio
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.images import network_input
from .errors import UsageError
from .model import open_model

__all__ = ["ServeConfig", "create_app", "serve"]


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32
    max_wait_ms: float = 5.0  # 0 turns micro-batching off: one forward pass per request
    max_upload_mb: float = 20.0
    max_images: int = 16
    timeout_s: float = 30.0
    top_k: int = 3


class _Batcher:
    """Collects images from concurrent requests into batches for one model call each."""

    def __init__(self, predictor, config: ServeConfig):
        self.predictor = predictor
        self.config = config
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def predict(self, pixels: list[np.ndarray]) -> np.ndarray:
        if self.config.max_wait_ms <= 0:  # no batching: this request alone
            return await asyncio.to_thread(self.predictor.run, np.stack(pixels))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop())
        futures = []
        for p in pixels:
            future = asyncio.get_running_loop().create_future()
            await self.queue.put((p, future))
            futures.append(future)
        return np.stack(await asyncio.gather(*futures))

    async def _loop(self) -> None:
        while True:
            items = [await self.queue.get()]
            deadline = time.monotonic() + self.config.max_wait_ms / 1000
            while len(items) < self.config.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            try:
                proba = await asyncio.to_thread(self.predictor.run, np.stack([p for p, _ in items]))
                for (_, future), row in zip(items, proba):
                    if not future.done():
                        future.set_result(row)
            except Exception as exc:  # the model failed: every waiting request learns why
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)


def create_app(model: str | Path, config: ServeConfig | None = None):
    """The FastAPI application serving ``model`` (a run folder or an exported ``.onnx`` file)."""
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse

    config = config or ServeConfig()
    predictor = open_model(model)
    batcher = _Batcher(predictor, config)
    classes = list(predictor.classes_)
    info = {"model": str(model), "classes": classes, "multi_label": predictor.multi_label_, **_describe(predictor)}
    app = FastAPI(title="headstart", description=f"Image classifier: {', '.join(classes)}")

    @app.exception_handler(HTTPException)
    async def json_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return _PAGE.replace("{{CLASSES}}", ", ".join(classes))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    async def model_info() -> dict:
        return info

    @app.post("/predict")
    async def predict(files: list[UploadFile] = File(...)) -> dict:
        if len(files) > config.max_images:
            raise HTTPException(413, f"too many images: {len(files)} (at most {config.max_images} per request)")
        pixels = []
        limit = int(config.max_upload_mb * 2**20)
        for upload in files:
            data = await upload.read(limit + 1)
            name = upload.filename or "upload"
            if len(data) > limit:
                raise HTTPException(413, f"{name}: larger than {config.max_upload_mb:g} MB")
            pixels.append(await asyncio.to_thread(_decode, predictor, data, name))
        try:
            proba = await asyncio.wait_for(batcher.predict(pixels), config.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the model did not answer within {config.timeout_s:g} s") from None
        k = min(config.top_k, len(classes))
        results = []
        for upload, row in zip(files, proba):
            if predictor.multi_label_:  # the label set, and every class's probability, most probable first
                order = np.argsort(row)[::-1]
                results.append({"filename": upload.filename,
                                "labels": [classes[i] for i in range(len(classes)) if row[i] >= predictor.thresholds_[i]],
                                "probabilities": {classes[i]: float(row[i]) for i in range(len(classes))},
                                "top_k": [{"class": classes[i], "probability": float(row[i])} for i in order]})
                continue
            order = np.argsort(row)[::-1][:k]
            results.append({"filename": upload.filename, "class": classes[order[0]],
                            "probability": float(row[order[0]]),
                            "top_k": [{"class": classes[i], "probability": float(row[i])} for i in order]})
        return {"predictions": results}

    return app


def _decode(predictor, data: bytes, name: str) -> np.ndarray:
    from fastapi import HTTPException
    from PIL import Image

    if not data:
        raise HTTPException(400, f"{name}: empty file")
    try:
        return network_input(io.BytesIO(data), predictor.preprocessing)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, f"{name}: image too large, refused as a possible decompression bomb") from None
    except Exception as exc:  # Pillow raises many exception types for malformed files
        raise HTTPException(400, f"{name}: not an image headstart can read ({type(exc).__name__})") from None


def _describe(predictor) -> dict:
    if hasattr(predictor, "metadata"):
        return {"backbone": predictor.metadata.get("backbone"), "engine": "onnxruntime"}
    score = "mean_ap" if predictor.multi_label_ else "accuracy"
    return {"backbone": predictor.config_.backbone.name, "engine": "pytorch", "metrics": {
        k: predictor.metrics_[k][score] for k in ("val", "test") if predictor.metrics_ and k in predictor.metrics_}}


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None) -> None:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UsageError("headstart serve needs the serve extra: pip install 'headstart[serve]'") from None
    uvicorn.run(create_app(model, config), host=host, port=port, log_level="warning")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>headstart</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:16px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
#drop{border:2px dashed #888;border-radius:.5rem;padding:2.5rem;text-align:center;cursor:pointer}
#drop.over{background:#eef5ff;border-color:#36c}
.result{display:flex;gap:1rem;margin:1rem 0;align-items:flex-start}
.result img{width:8rem;height:8rem;object-fit:cover;border-radius:.3rem}
.result>div{flex:1}
.bar{height:.9rem;background:#36c;border-radius:.2rem}
.row{display:grid;grid-template-columns:8rem 1fr 4rem;gap:.5rem;align-items:center;margin:.2rem 0}
.error{color:#b00}
</style></head><body>
<h1>headstart</h1>
<p>Classes: {{CLASSES}}</p>
<div id="drop">Drop images here, or click to choose<input id="pick" type="file" accept="image/*" multiple hidden></div>
<div id="results"></div>
<script>
const drop = document.getElementById("drop"), pick = document.getElementById("pick");
const results = document.getElementById("results");
drop.onclick = () => pick.click();
pick.onchange = () => send(pick.files);
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files); };
async function send(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f);
  const response = await fetch("/predict", {method: "POST", body: form});
  const body = await response.json();
  if (!response.ok) { show(null, null, body.error); return; }
  body.predictions.forEach((p, i) => show(files[i], p, null));
}
function show(file, prediction, error) {
  const box = document.createElement("div"); box.className = "result";
  if (file) { const img = document.createElement("img"); img.src = URL.createObjectURL(file); box.append(img); }
  const text = document.createElement("div");
  if (error) { text.className = "error"; text.textContent = error; }
  else if (prediction.labels) {
    const set = document.createElement("p"); set.textContent = "Labels: " + (prediction.labels.join(", ") || "none");
    text.append(set);
  }
  if (!error) for (const t of prediction.top_k) {
    const row = document.createElement("div"); row.className = "row";
    const name = document.createElement("span"); name.textContent = t.class;
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = (100 * t.probability) + "%";
    const pct = document.createElement("span"); pct.textContent = (100 * t.probability).toFixed(1) + "%";
    row.append(name, bar, pct); text.append(row);
  }
  box.append(text); results.prepend(box);
}
</script></body></html>
"""
