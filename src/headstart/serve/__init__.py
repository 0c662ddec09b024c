"""``headstart serve``: an HTTP API and a web page for a trained or exported model, already opened
(any :class:`~headstart.predictor.Predictor`: the CLI opens the run folder or exported file).

Concurrent requests are batched together (micro-batching): each request's
images wait at most ``max_wait_ms`` for others, then one forward pass serves
them all, which on a CPU is several times cheaper than one pass per request.
Uploads are bounded in size, count and time. In a request of several images, a bad
one gets its own error entry (naming the file and the reason) and the good ones
their predictions; a request with no usable image gets a 4xx. Every error, FastAPI's
422 validation errors included, has one shape: ``{"error": "..."}``. Each request
is logged in one line (client, method, path, status, milliseconds). A single-label
model's answer carries each image's score (its highest probability); ``?reject=auto`` (or a
probability) answers ``unknown`` below the threshold, and ``?coverage=0.9`` adds the prediction
set (:mod:`headstart.trust`), the server's defaults coming from :class:`ServeConfig`. A client
gets ``timeout_s`` to send its whole request (headers and body), then the
connection is closed (408), and at most 64 kB of headers (431); open connections are bounded
by ``max_connections``, so slow or half-open clients cannot hold the server. At the bound, a
connection idle between requests (keep-alive) is closed to make room; with none, a new one is
answered 503. Those answers, given below the application, have the JSON error shape too.
"""


import asyncio
import html
import io
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import network_input
from ..errors import UsageError
from ..predictor import Predictor
from ..trust import UNKNOWN, TrustPolicy, reject_option
from .page import PAGE
from .protocol import MAX_HEADER_BYTES, deadline_protocol

__all__ = ["ServeConfig", "create_app", "server_config", "serve", "ACCESS_LOG"]

# One line per request; `headstart serve` prints it on stderr, an embedding application routes it as it likes.
ACCESS_LOG = logging.getLogger("headstart.serve.access")


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32
    max_wait_ms: float = 5.0  # 0 turns micro-batching off: one forward pass per request
    max_upload_mb: float = 20.0
    max_images: int = 16
    timeout_s: float = 30.0  # to receive a whole request, and for the model to answer it
    top_k: int = 3
    max_connections: int = 64  # open at once; more are closed on arrival
    reject: str | float | None = None  # a request's default "none of these" ("auto" or a probability)
    coverage: float | None = None  # a request's default prediction-set coverage


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


def create_app(predictor: Predictor, config: ServeConfig | None = None, source: str | Path | None = None):
    """The FastAPI application serving ``predictor``; ``source``, where it was opened from, is
    shown by ``/model``."""
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config = config or ServeConfig()
    batcher = _Batcher(predictor, config)
    classes = list(predictor.classes_)
    info = {"model": None if source is None else str(source), "classes": classes,
            "multi_label": predictor.multi_label_, **_describe(predictor)}
    app = FastAPI(title="headstart", description=f"Image classifier: {', '.join(classes)}")

    # Starlette's class, not FastAPI's subclass: a 404 or 405 from the router is caught too.
    @app.exception_handler(StarletteHTTPException)
    async def json_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        client = request.client.host if request.client else "-"
        ACCESS_LOG.info('%s "%s %s" %d %.1f ms', client, request.method, request.url.path,
                        response.status_code, 1000 * (time.perf_counter() - start))
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        # Class names come from folder names or a model file's metadata: text, never markup.
        return PAGE.replace("{{CLASSES}}", html.escape(", ".join(classes)))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    async def model_info() -> dict:
        return info

    @app.post("/predict")
    async def predict(files: list[UploadFile] = File(...), reject: str | None = None, coverage: float | None = None):
        if len(files) > config.max_images:
            raise HTTPException(413, f"too many images: {len(files)} (at most {config.max_images} per request)")
        try:  # the query's reject and coverage, else the server's; refused before any image is read
            policy = TrustPolicy.of(predictor.head_, classes, config.reject if reject is None else reject_option(reject),
                                    config.coverage if coverage is None else coverage)
        except UsageError as exc:
            raise HTTPException(400, str(exc)) from None
        decoded = [await _read(upload, predictor, config) for upload in files]
        good = [i for i, item in enumerate(decoded) if not isinstance(item, HTTPException)]
        if not good:  # nothing to predict: the request itself failed, with the first file's reason
            first = decoded[0]
            return JSONResponse({"error": first.detail, "predictions": _entries(files, decoded, {}, predictor, policy,
                                                                                    config)},
                                status_code=first.status_code)
        try:
            proba = await asyncio.wait_for(batcher.predict([decoded[i] for i in good]), config.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the model did not answer within {config.timeout_s:g} s") from None
        return {"predictions": _entries(files, decoded, dict(zip(good, proba)), predictor, policy, config)}

    return app


async def _read(upload, predictor, config: ServeConfig):
    """An upload's network input, or the HTTPException saying why there is none."""
    from fastapi import HTTPException

    limit = int(config.max_upload_mb * 2**20)
    data = await upload.read(limit + 1)
    name = upload.filename or "upload"
    if len(data) > limit:
        return HTTPException(413, f"{name}: larger than {config.max_upload_mb:g} MB")
    try:
        return await asyncio.to_thread(_decode, predictor, data, name)
    except HTTPException as exc:
        return exc


def _entries(files, decoded, proba: dict, predictor, policy: TrustPolicy, config: ServeConfig) -> list[dict]:
    """One entry per uploaded file, in upload order: its error, or its top-k classes (a multi-label
    model's: its label set, and every class's probability, most probable first; a single-label
    model's: its class, ``unknown`` when ``policy`` rejects it, its score, and its prediction set
    when a coverage is asked)."""
    classes = predictor.classes_
    k = len(classes) if predictor.multi_label_ else min(config.top_k, len(classes))
    entries = []
    for i, upload in enumerate(files):
        if i not in proba:
            entries.append({"filename": upload.filename, "error": decoded[i].detail})
            continue
        row = proba[i]
        order = np.argsort(row)[::-1][:k]
        entry = {"filename": upload.filename,
                 "top_k": [{"class": classes[j], "probability": float(row[j])} for j in order]}
        if predictor.multi_label_:
            entry["labels"] = [c for c, p, t in zip(classes, row, predictor.thresholds_) if p >= t]
            entry["probabilities"] = {c: float(p) for c, p in zip(classes, row)}
        else:
            judged = policy.judge(row)
            entry.update({"class": UNKNOWN if judged.unknown else classes[order[0]],
                          "probability": float(row[order[0]]), "score": judged.score})
            if judged.chosen is not None:
                entry["prediction_set"] = [classes[j] for j in judged.chosen]
        entries.append(entry)
    return entries


def _validation_message(exc) -> str:
    """FastAPI's list of validation problems as one line: "files: Field required"."""
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}" if where else problem.get("msg", "invalid"))
    return "; ".join(parts) + " (POST images as multipart form data, field 'files')"


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
    if hasattr(predictor, "metadata"):  # an exported file: its metrics travel in its metadata
        return {"backbone": predictor.metadata.get("backbone"), "engine": predictor.engine,
                "metrics": predictor.metadata.get("metrics", {})}
    return {"backbone": predictor.config_.backbone.name, "engine": "pytorch",
            "metrics": predictor.metrics_.scores() if predictor.metrics_ is not None else {}}


def server_config(app, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None):
    """uvicorn's settings for ``app``: every connection bounded in number and time (``config``)."""
    import uvicorn

    config = config or ServeConfig()
    # uvicorn's own access log is off: ours (ACCESS_LOG) has the timing, and one line per request is enough.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          http=deadline_protocol(config.timeout_s, config.max_connections), timeout_keep_alive=5,
                          # uvicorn answers 503 once connections reach its limit, so with max_connections
                          # open the last request would be refused: the bound itself is the protocol's.
                          limit_concurrency=config.max_connections + 1, h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          source: str | Path | None = None) -> None:
    """Serve ``predictor`` until interrupted, logging each request on stderr."""
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UsageError("headstart serve needs the serve extra: pip install 'headstart[serve]'") from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.setLevel(logging.INFO)
    uvicorn.Server(server_config(create_app(predictor, config, source), host, port, config)).run()
