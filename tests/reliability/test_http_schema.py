"""schemathesis against the server's own /openapi.json: whatever the schema allows, and what it
does not, gets an answer the schema describes (status, content type, body), never a 5xx.

Bounded for CI: the shipped `mlp` (no training), a synthetic test set, 30 examples per operation
and mode, no deadline per example.
"""

from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks as generic  # noqa: E402
from schemathesis.specs.openapi import checks as openapi  # noqa: E402

from barenet.app.server import create_app  # noqa: E402
from barenet.app.shipped import shipped_path  # noqa: E402
from barenet.serialize import load_model  # noqa: E402

_MODEL = shipped_path("mlp")
if _MODEL is None:
    pytest.skip("the shipped mlp model file is not installed", allow_module_level=True)


def _app():
    model, meta = load_model(_MODEL)
    rng = np.random.default_rng(0)
    test = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40)
    return create_app(model, meta, test, max_body=256 * 1024)


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)

CHECKS = [
    generic.not_a_server_error,
    openapi.status_code_conformance,
    openapi.content_type_conformance,
    openapi.response_schema_conformance,
    openapi.response_headers_conformance,
    openapi.negative_data_rejection,
    openapi.unsupported_method,
]


def test_the_schema_tells_the_truth():
    """What the issue found missing: the 404 of test-images, kind=class needing a digit, the
    28x28 shape of pixels, errors as {"error"}."""
    spec = APP.openapi()
    paths = spec["paths"]
    assert "404" in paths["/api/test-images/{index}"]["get"]["responses"]
    kind = next(p for p in paths["/api/gallery"]["get"]["parameters"] if p["name"] == "kind")
    assert "needs `digit`" in kind["description"]
    seed = next(p for p in paths["/api/gallery"]["get"]["parameters"] if p["name"] == "seed")
    assert any(s.get("minimum") == 0 for s in seed["schema"].get("anyOf", [seed["schema"]]))
    body = paths["/api/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    pixels = body["properties"]["pixels"]
    rows = pixels["items"]
    assert pixels["minItems"] == pixels["maxItems"] == 28
    assert rows["minItems"] == rows["maxItems"] == 28
    assert rows["items"]["minimum"] == 0 and rows["items"]["maximum"] == 255
    for path, methods in paths.items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error"), (method, path, status)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)
