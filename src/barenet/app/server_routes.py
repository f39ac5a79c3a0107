"""`barenet serve`'s routes: the page and the offline API docs (`pages`), and the JSON API
(`api`): model card, predict, gallery, test images.

Each route finds the model in `request.app.state.predictor` (server_predictor.Predictor) and
the body limit in `request.app.state.max_body`; create_app (server.py) sets both.
CPU work runs in worker threads so one slow image never stalls the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from .server_predictor import model_card as card
from .server_schema import (
    GALLERY_MAX,
    Attack,
    Gallery,
    ModelCard,
    PixelsBody,
    Prediction,
    errors,
    pixels,
    upload,
)

STATIC = Path(__file__).parent / "static"
ERRORS = errors(400, 408, 413, 415, 422)  # POST /api/predict
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": PixelsBody.model_json_schema()}}}}

ATTACK_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PixelsBody.model_json_schema()}}}}

pages = APIRouter(include_in_schema=False)
api = APIRouter()


@pages.get("/")
async def page():
    return FileResponse(STATIC / "index.html")


@pages.get("/docs")
async def docs():
    return FileResponse(STATIC / "docs.html")


@api.get("/api/model", response_model=ModelCard, responses=errors(), summary="Model card")
async def model_card(request: Request):
    """Architecture, parameter count, training configuration, test metrics, features."""
    return card(request.app.state.predictor, request.app.state.max_body)


@api.post("/api/predict", response_model=Prediction, responses=ERRORS,
          summary="Classify a digit image or a 28x28 pixel array", openapi_extra=PREDICT_BODY)
async def predict(request: Request):
    """Send a PNG (or any image/* Pillow reads) as the body or as the multipart field
    `file`: it is preprocessed like an MNIST digit (any polarity, size and position).
    Or send JSON `{"pixels": 28x28}`: the network input itself, used as is.
    Bodies are limited to 5 MB and images to 16 megapixels (refused from their header)."""
    predictor = request.app.state.predictor
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return await run_in_threadpool(predictor.predict, pixels(await _json_body(request)))
    if ctype.startswith("image/"):
        data = await request.body()
    elif ctype == "multipart/form-data":
        data = await upload(request, request.app.state.max_body)
    else:
        raise HTTPException(415, f"unsupported content type {ctype or '(none)'!r}: send "
                                 "image/png, multipart/form-data with a `file` field, or "
                                 "application/json {\"pixels\": 28x28 array}")
    if not data:
        raise HTTPException(400, "empty body: no image data (0 bytes)")
    image = await run_in_threadpool(predictor.preprocess, data)
    return await run_in_threadpool(predictor.predict, image)


@api.post("/api/attack", response_model=Attack, responses=errors(400, 408, 413, 415, 422),
          summary="The smallest change that flips the answer (FGSM)",
          openapi_extra=ATTACK_BODY)
async def attack(request: Request):
    """Send the network input `{"pixels": 28x28}` (a prediction's `input`): the smallest
    FGSM step eps (0.005 to 0.5) that makes the network answer differently, and the changed
    input. 422 for an ensemble (no single gradient)."""
    return await run_in_threadpool(request.app.state.predictor.attack,
                                   pixels(await _json_body(request)))


async def _json_body(request: Request):
    """The parsed JSON body, or a 415 (not JSON) / 400 (empty or malformed)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, f"unsupported content type {ctype or '(none)'!r}: send "
                                 "application/json {\"pixels\": 28x28 array}")
    body = await request.body()
    if not body:
        raise HTTPException(400, "empty body: send JSON {\"pixels\": 28x28 array}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(400, "body is not valid JSON") from None


@api.get("/api/gallery", response_model=Gallery, responses=errors(404, 422),
         summary="Test images")
async def gallery(request: Request,
                  kind: str = Query("random", pattern="^(random|misclassified|class)$",
                                    description="random | misclassified | class "
                                                "(class needs `digit`: 422 without it)"),
                  digit: int | None = Query(None, ge=0, le=9,
                                            description="true class: required with "
                                                        "kind=class; optional filter for "
                                                        "the others"),
                  count: int = Query(24, ge=1, le=GALLERY_MAX),
                  seed: int | None = Query(None, ge=0, description="for a repeatable draw")):
    """A random sample of test images, all of a class, or the misclassified ones.
    404 when the server has no test set; 422 for kind=class without a digit."""
    p = request.app.state.predictor
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


@api.get("/api/test-images/{index}", response_model=Prediction, responses=errors(404, 422),
         summary="Classify a test image")
async def test_image(request: Request, index: int):
    """The prediction for test image `index`, with its true label. 404 when there is no
    such image (see /api/model's test_images) or no test set."""
    p = request.app.state.predictor
    if p.x_test is None:
        raise HTTPException(404, "no test set loaded")
    if not 0 <= index < len(p.x_test):
        raise HTTPException(404, f"no test image {index}: 0-{len(p.x_test) - 1}")
    return await run_in_threadpool(p.predict, p.x_test[index], index=index,
                                   true_label=int(p.y_test[index]))
