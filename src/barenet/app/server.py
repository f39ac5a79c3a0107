"""`barenet serve MODEL`: a draw-a-digit page and a JSON API (FastAPI + uvicorn), loopback only.

Every user image goes through barenet.data.preprocess, as in `barenet predict`. Request bodies are
limited (Content-Length checked first, then counted while streaming), images too (from their
header, before decoding); every error, bad input or unknown route, gets JSON {"error": "..."};
CPU work runs in worker threads so one slow image never stalls the page. Deadlines for slow and
idle clients are in serving.py. The API is described at /openapi.json (each error it can answer
included) and shown by /docs, an offline page (no CDN).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Annotated, Any

import click
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..saliency import saliency_map

STATIC = Path(__file__).parent / "static"
MAX_BODY = 5 * 1024 * 1024  # bytes; a 280x280 canvas PNG is ~10 kB
SIDE = 28
GALLERY_MAX = 100


# Bodies, limited


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, size: int | None = None):
        got = f" ({size:,} bytes)" if size is not None else ""
        super().__init__(413, f"request body too large{got}: the limit is {limit:,} bytes")


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes without reading them whole.

    A declared Content-Length over the limit is answered 413 before any byte is read; without
    one (chunked), bytes are counted as they arrive and reading stops at the limit. (uvicorn
    then discards the rest as it arrives, without keeping it, so the client gets the answer;
    closing at once would reset the connection and lose the 413.)
    """

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_error(send, 400, "malformed Content-Length header")
            if size > self.limit:
                return await _send_error(send, 413, str(BodyTooLarge(self.limit, size).detail))
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised outside a route's exception handling
            if not started:
                await _send_error(send, 413, str(exc.detail))


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# API shapes (also the OpenAPI schema)


class Prediction(BaseModel):
    label: int = Field(description="the most probable class")
    probabilities: list[float] = Field(description="one per class, summing to 1")
    input: list[list[int]] = Field(description="what the network sees: 28x28 uint8, white ink")
    saliency: list[list[float]] | None = Field(
        None, description="28x28 in [0, 1]: |d logit / d pixel| of the top class, scaled to "
                          "its maximum (null when not available)")
    index: int | None = Field(None, description="test-set index, for test images")
    true_label: int | None = Field(None, description="the test image's label")


class GalleryImage(BaseModel):
    index: int
    label: int = Field(description="true label")
    predicted: int
    pixels: list[list[int]] = Field(description="28x28 uint8")


class Gallery(BaseModel):
    kind: str
    total: int = Field(description="how many test images match (before `count`)")
    images: list[GalleryImage]


class ModelCard(BaseModel):
    architecture: list[dict] = Field(description="layers: {type, config}; empty for ensembles")
    ensemble: list[list[dict]] | None = Field(None, description="each member's layers")
    parameters: int
    dataset: str
    test_accuracy: float | None = Field(None, description="measured after training")
    test_loss: float | None = None
    epochs: int | None = Field(None, description="epochs trained")
    config: dict = Field(description="the training configuration, as in config.json")
    augmentation: str | None = Field(None, description="the training augmentation in words, "
                                                       "\"none\" when off")
    barenet_version: str | None = None
    saliency: bool = Field(description="predictions include saliency maps")
    gallery: bool = Field(description="a test set is loaded (gallery endpoints work)")
    test_images: int
    test_set_accuracy: float | None = Field(None, description="on the loaded test set")
    max_body_bytes: int = Field(description="request bodies over this are refused (413)")


class Error(BaseModel):
    error: str


Pixel = Annotated[float, Field(ge=0, le=255)]
Row = Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]


class PixelsBody(BaseModel):
    pixels: Annotated[list[Row], Field(min_length=SIDE, max_length=SIDE)] = Field(
        description="28x28 numbers in [0, 255], white ink on black: the network input itself")


def _errors(*codes: int) -> dict:
    """OpenAPI responses: each error code a route can answer, all with the {"error"} body."""
    what = {400: "malformed body or image", 404: "not found (see the message)",
            408: "request body not received in time", 413: "body or image too large",
            415: "unsupported content type",
            422: "invalid parameters, no digit found, or wrong array shape",
            503: "server busy: too many requests in progress; retry (see Retry-After)"}
    return {code: {"model": Error, "description": what[code]} for code in (*codes, 503)}


ERRORS = _errors(400, 408, 413, 415, 422)  # POST /api/predict


# Model-side work


class Predictor:
    """The model and its test set; a lock because layers cache activations for backward."""

    def __init__(self, model, meta: dict, test: tuple[np.ndarray, np.ndarray] | None = None):
        self.model, self.meta = model, meta
        self._lock = threading.Lock()
        self._decode = threading.BoundedSemaphore(2)  # large decodes at a time: bounds memory
        # Saliency backpropagates through one layer stack; ensembles have several.
        self.has_saliency = hasattr(model, "layers")
        self.x_test = self.y_test = self.predicted = None
        if test is not None:
            self.x_test, self.y_test = test[0], np.asarray(test[1]).astype(np.int64)
            self.predicted = self.model.predict(self.x_test)

    def preprocess(self, data: bytes) -> np.ndarray:
        from ..data.preprocess import ImageError, load_digit, preprocess_image

        with self._decode:
            try:
                return preprocess_image(load_digit(data))
            except ImageError as exc:
                raise HTTPException(_image_error_status(str(exc)), str(exc)) from None

    def predict(self, image: np.ndarray, **extra) -> dict:
        """uint8 (28, 28) -> the Prediction fields."""
        with self._lock:
            probs = self.model.predict_proba(image[None])[0]
            label = int(probs.argmax())
            saliency = self._saliency_map(image, label)
        return {"label": label, "probabilities": [round(float(p), 6) for p in probs],
                "input": image.tolist(), "saliency": saliency, **extra}

    def _saliency_map(self, image: np.ndarray, label: int) -> list | None:
        if not self.has_saliency:
            return None
        try:
            s = saliency_map(self.model, image, label).astype(np.float64)
            s = s.reshape(SIDE, SIDE)
            top = float(s.max())
            s = s / top if top > 0 and math.isfinite(top) else np.zeros_like(s)
            return np.round(s, 4).tolist()
        except Exception:  # a failing optional view must not cost the prediction
            return None


def _image_error_status(message: str) -> int:
    if "too large" in message:
        return 413
    if "no digit found" in message:
        return 422
    return 400


def _pixels(value: Any) -> np.ndarray:
    """JSON {"pixels": 28x28 numbers in [0, 255]} -> uint8 (28, 28), or a 422 naming the first
    wrong row or value. Values are checked in Python before NumPy sees them: an integer of 400
    digits is out of range here, not an OverflowError in np.asarray."""
    need = "a 28x28 array (a list of 28 lists of 28 numbers)"
    if not isinstance(value, dict) or "pixels" not in value:
        raise HTTPException(422, 'JSON body must be an object {"pixels": 28x28 array}')
    rows = value["pixels"]
    if not isinstance(rows, list):
        raise HTTPException(422, f"pixels must be {need}, not {_json_type(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise HTTPException(422, f"pixels must be {need}: item {i} is {_json_type(row)}, "
                                     f"not a list")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:  # ragged: name a short or long row, not a made-up 3-D shape
        odd = next(i for i, r in enumerate(rows) if len(r) != SIDE)
        raise HTTPException(422, f"pixels must be {need}, but its rows differ in length: row "
                                 f"{odd} has {len(rows[odd])} numbers")
    if len(rows) != SIDE or lengths != [SIDE]:
        raise HTTPException(422, f"pixels must be a 28x28 array, got shape "
                                 f"{len(rows)}x{lengths[0] if lengths else 0}")
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise HTTPException(422, f"pixels must be numbers: pixels[{i}][{j}] is "
                                         f"{_json_type(v)}")
            if not 0 <= v <= 255:  # also false for NaN; exact for integers of any size
                raise HTTPException(422, f"pixels must be finite numbers in [0, 255]: "
                                         f"pixels[{i}][{j}] is {_short(v)}")
    return np.rint(np.asarray(rows, dtype=np.float64)).astype(np.uint8)


def _json_type(v: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false",
             type(None): "null", int: "a number", float: "a number"}
    return names.get(type(v), type(v).__name__)


def _short(v: float) -> str:
    if isinstance(v, int) and v.bit_length() > 64:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    return repr(v)


# The application


def create_app(model, meta: dict, test: tuple[np.ndarray, np.ndarray] | None = None, *,
               max_body: int = MAX_BODY) -> FastAPI:
    """The web app for one model; `test` = (x_test, y_test) enables the gallery."""
    from .. import __version__

    predictor = Predictor(model, meta, test)
    app = FastAPI(title="barenet", version=__version__,
                  description="Draw a digit, get the network's answer. All images are "
                              "preprocessed as MNIST digits were (barenet.data.preprocess).",
                  docs_url=None, redoc_url=None)  # their pages load from a CDN; /docs is ours
    app.add_middleware(BodyLimit, limit=max_body)
    app.state.predictor = predictor

    @app.exception_handler(StarletteHTTPException)  # also routing's 404 and 405, not only ours
    async def http_error(request, exc: StarletteHTTPException):
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such page or API route: {request.url.path} (the API is at /docs)"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"method {request.method} not allowed on {request.url.path}" + (
                f": use {allowed}" if allowed else "")
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors())
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):  # logged by uvicorn; the server goes on
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model", response_model=ModelCard, responses=_errors(),
             summary="Model card")
    async def model_card():
        """Architecture, parameter count, training configuration, test metrics, features."""
        return _model_card(predictor, max_body)

    @app.post("/api/predict", response_model=Prediction, responses=ERRORS,
              summary="Classify a digit image or a 28x28 pixel array",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["file"],
                      "properties": {"file": {"type": "string", "format": "binary"}}}},
                  "application/json": {"schema": PixelsBody.model_json_schema()}}}})
    async def predict(request: Request):
        """Send a PNG (or any image/* Pillow reads) as the body or as the multipart field
        `file`: it is preprocessed like an MNIST digit (any polarity, size and position).
        Or send JSON `{"pixels": 28x28}`: the network input itself, used as is.
        Bodies are limited to 5 MB and images to 16 megapixels (refused from their header)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = await request.body()
            if not body:
                raise HTTPException(400, "empty body: send JSON {\"pixels\": 28x28 array}")
            try:
                value = json.loads(body)
            except (ValueError, RecursionError):
                raise HTTPException(400, "body is not valid JSON") from None
            return await run_in_threadpool(predictor.predict, _pixels(value))
        if ctype.startswith("image/"):
            data = await request.body()
        elif ctype == "multipart/form-data":
            data = await _upload(request, max_body)
        else:
            raise HTTPException(415, f"unsupported content type {ctype or '(none)'!r}: send "
                                     "image/png, multipart/form-data with a `file` field, or "
                                     "application/json {\"pixels\": 28x28 array}")
        if not data:
            raise HTTPException(400, "empty body: no image data (0 bytes)")
        image = await run_in_threadpool(predictor.preprocess, data)
        return await run_in_threadpool(predictor.predict, image)

    @app.get("/api/gallery", response_model=Gallery, responses=_errors(404, 422),
             summary="Test images")
    async def gallery(kind: str = Query("random", pattern="^(random|misclassified|class)$",
                                        description="random | misclassified | class "
                                                    "(class needs `digit`: 422 without it)"),
                      digit: int | None = Query(None, ge=0, le=9,
                                                description="true class: required with "
                                                            "kind=class; optional filter for "
                                                            "the others"),
                      count: int = Query(24, ge=1, le=GALLERY_MAX),
                      seed: int | None = Query(None, ge=0,
                                               description="for a repeatable draw")):
        """A random sample of test images, all of a class, or the misclassified ones.
        404 when the server has no test set; 422 for kind=class without a digit."""
        p = predictor
        if p.x_test is None:
            raise HTTPException(404, "no test set loaded: the gallery is off")
        keep = np.ones(len(p.y_test), dtype=bool)
        if kind == "class" and digit is None:
            raise HTTPException(422, "kind=class needs digit=0..9")
        if digit is not None:
            keep &= p.y_test == digit
        if kind == "misclassified":
            keep &= p.y_test != p.predicted
        indices = np.flatnonzero(keep)
        chosen = np.random.default_rng(seed).permutation(indices)[:count]
        if kind == "misclassified":
            chosen.sort()
        images = [{"index": int(i), "label": int(p.y_test[i]), "predicted": int(p.predicted[i]),
                   "pixels": p.x_test[i].tolist()} for i in chosen]
        return {"kind": kind, "total": int(indices.size), "images": images}

    @app.get("/api/test-images/{index}", response_model=Prediction, responses=_errors(404, 422),
             summary="Classify a test image")
    async def test_image(index: int):
        """The prediction for test image `index`, with its true label. 404 when there is no
        such image (see /api/model's test_images) or no test set."""
        p = predictor
        if p.x_test is None:
            raise HTTPException(404, "no test set loaded")
        if not 0 <= index < len(p.x_test):
            raise HTTPException(404, f"no test image {index}: 0-{len(p.x_test) - 1}")
        return await run_in_threadpool(p.predict, p.x_test[index], index=index,
                                       true_label=int(p.y_test[index]))

    return app


async def _upload(request: Request, max_body: int) -> bytes:
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=max_body)
    except BodyTooLarge:
        raise
    except HTTPException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.detail}") from None
    except Exception as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart body needs a file field named `file`")
        return await upload.read()
    finally:
        await form.close()


def _layers(spec) -> list[dict]:
    """Architecture entries {"type": ..., **config} -> [{"type": ..., "config": {...}}]."""
    return [{"type": e.get("type", "?"), "config": {k: v for k, v in e.items() if k != "type"}}
            for e in spec if isinstance(e, dict)]


def augmentation_summary(augment) -> str | None:
    """A config's [augment] section in words: what is on, "none" when no image is changed
    (one test decides: data.augment.changes_images), None without a section. Settings that
    shape an augmentation that is off (erase_area without erase) are not shown."""
    import dataclasses

    from ..config import AugmentConfig
    from ..data.augment import changes_images

    if not isinstance(augment, dict):
        return None
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    try:
        a = AugmentConfig(**{k: float(v) for k, v in augment.items() if k in known})
    except (TypeError, ValueError):
        return None
    if not changes_images(a):
        return "none"
    parts = [f"shift {a.shift:g} px" if a.shift else "",
             f"rotate {a.rotate:g}°" if a.rotate else "",
             f"scale ±{a.scale:g}" if a.scale else "",
             f"elastic alpha {a.elastic_alpha:g} sigma {a.elastic_sigma:g}"
             if a.elastic_alpha else "",
             f"flip p {a.flip:g}" if a.flip else "",
             f"erase p {a.erase:g} (up to {a.erase_area:g} of the image)" if a.erase else ""]
    return ", ".join(p for p in parts if p)


def _model_card(p: Predictor, max_body: int) -> dict:
    meta = p.meta
    config = meta.get("config") or {}
    metrics = meta.get("metrics") or {}
    spec = meta.get("architecture", [])
    ensemble = None
    if isinstance(spec, dict):  # barenet ensemble: {"type": "Ensemble", "members": [...]}
        ensemble = [_layers(member) for member in spec.get("members", [])]
        spec = []
    return {
        "architecture": _layers(spec),
        "ensemble": ensemble,
        "parameters": int(sum(q.data.size for q in p.model.parameters())),
        "dataset": metrics.get("dataset") or config.get("data", {}).get("dataset", "mnist"),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "epochs": len(meta.get("history") or []) or None,
        "config": config,
        "augmentation": augmentation_summary(config.get("augment")),
        "barenet_version": meta.get("barenet_version"),
        "saliency": p.has_saliency,
        "gallery": p.x_test is not None,
        "test_images": 0 if p.x_test is None else int(len(p.x_test)),
        "test_set_accuracy": None if p.x_test is None
        else round(float(np.mean(p.predicted == p.y_test)), 6),
        "max_body_bytes": max_body,
    }


# The command


def _bind(host: str, port: int):
    """A listening socket on host:port: a browser that connects as soon as the URL is printed
    waits in the backlog while uvicorn starts, instead of being refused."""
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback by default: only this machine).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(model, host, port, data_dir):
    """Serve a draw-a-digit page and a JSON API for MODEL (run dir, model file or shipped
    name; left out, the default shipped model)."""
    from .extras import require
    require("web", "serve")

    from .. import data
    from .cli import Failure, _load_model

    net, meta = _load_model(model)
    dataset = (meta.get("config") or {}).get("data", {}).get("dataset", "mnist")
    try:
        _, test = data.load_dataset(dataset, data_dir)
    except data.DataError as exc:
        click.echo(f"warning: no gallery ({exc})", err=True)
        test = None
    app = create_app(net, meta, test)
    try:
        sock = _bind(host, port)
    except OSError as exc:
        raise Failure(str(exc), 1) from None
    if not _is_loopback(host):
        click.echo(f"warning: listening on {host}: other machines can reach this server",
                   err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"barenet serve: http://{shown}:{sock.getsockname()[1]}/  "
               f"(API docs at /docs; Ctrl-C stops)")
    import sys
    sys.stdout.flush()
    from .serving import uvicorn_server
    uvicorn_server(app, max_body=MAX_BODY).run(sockets=[sock])
    return 0
