"""What `barenet serve`'s API accepts and answers: the response shapes (also the OpenAPI
schema), the error table every route documents, and the checks that turn a request body
(JSON pixels, a multipart upload) into input or into a one-line 4xx.

Routes are in server_routes.py, the model behind them in server_predictor.py.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from .asgi import BodyTooLarge

SIDE = 28
GALLERY_MAX = 100


class Prediction(BaseModel):
    label: int = Field(description="the most probable class")
    probabilities: list[float] = Field(description="one per class, summing to 1")
    input: list[list[int]] = Field(description="what the network sees: 28x28 uint8, white ink")
    saliency: list[list[float]] | None = Field(
        None, description="28x28 in [0, 1]: |d logit / d pixel| of the top class, scaled to "
                          "its maximum (null when not available)")
    index: int | None = Field(None, description="test-set index, for test images")
    true_label: int | None = Field(None, description="the test image's label")
    typical: bool | None = Field(
        None, description="false when the input is far from every training digit (the "
                          "training images' PCA subspace), whatever the model's confidence: "
                          "the page then answers \"not sure\"; null when the model file "
                          "has no such subspace")


class Attack(BaseModel):
    eps: float | None = Field(description="the smallest FGSM step (fraction of the pixel "
                                          "range) that changes the answer; null if none "
                                          "up to 0.5 does")
    label: int = Field(description="the answer for the input as sent")
    probability: float = Field(description="its probability")
    adversarial_label: int | None = Field(None, description="the answer after the change")
    adversarial_probability: float | None = None
    adversarial: list[list[float]] | None = Field(
        None, description="28x28 in [0, 255]: the changed input, which the network reads "
                          "as adversarial_label")


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
    reject_threshold: float = Field(description="the page answers \"not sure\" when the top "
                                                "probability is below this (adjustable): the "
                                                "run's calibrated threshold, else 0.9")
    attack: bool = Field(description="POST /api/attack works (not for ensembles)")
    input_space: bool = Field(False, description="the model file holds its training images' "
                                                 "subspace: predictions then say whether an "
                                                 "input looks like a digit (typical)")


class Error(BaseModel):
    error: str


Pixel = Annotated[float, Field(ge=0, le=255)]
Row = Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]


class PixelsBody(BaseModel):
    pixels: Annotated[list[Row], Field(min_length=SIDE, max_length=SIDE)] = Field(
        description="28x28 numbers in [0, 255], white ink on black: the network input itself")


def errors(*codes: int) -> dict:
    """OpenAPI responses: each error code a route can answer, all with the {"error"} body."""
    what = {400: "malformed body or image", 404: "not found (see the message)",
            408: "request body not received in time", 413: "body or image too large",
            415: "unsupported content type",
            422: "invalid parameters, no digit found, or wrong array shape",
            503: "server busy: too many requests in progress; retry (see Retry-After)"}
    return {code: {"model": Error, "description": what[code]} for code in (*codes, 503)}


def pixels(value: Any) -> np.ndarray:
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


async def upload(request: Request, max_body: int) -> bytes:
    """The bytes of a multipart body's `file` field; 400 for a malformed body, 422 without
    the field."""
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=max_body)
    except BodyTooLarge:
        raise
    except HTTPException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.detail}") from None
    except Exception as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    try:
        field = form.get("file")
        if field is None or isinstance(field, str):
            raise HTTPException(422, "multipart body needs a file field named `file`")
        return await field.read()
    finally:
        await form.close()
