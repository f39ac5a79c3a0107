"""`barenet serve`: the JSON API, bad input (always a 4xx JSON error), limits, offline page."""

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from barenet.app.cli import main  # noqa: E402
from barenet.app.server import STATIC, BodyLimit, create_app  # noqa: E402
from barenet.serialize import load_model  # noqa: E402

LIMIT = 64 * 1024  # small, so over-limit bodies are cheap to send


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import barenet.data
    from conftest import synthetic_digits

    data = synthetic_digits()
    out = tmp_path_factory.mktemp("serve") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(barenet.data, "load_dataset", lambda *a, **k: data)
        assert main(["train", "--set", "model.hidden=[32]", "--epochs", "3", "--out", str(out),
                     "-q"]) == 0
    return out, data


@pytest.fixture(scope="module")
def client(run_dir):
    out, (_, test) = run_dir
    model, meta = load_model(out / "model.safetensors")
    app = create_app(model, meta, test, max_body=LIMIT)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def png(image: np.ndarray | Image.Image) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def drawn_one(size=280) -> bytes:
    """Black stroke on white, like the page's canvas."""
    im = Image.new("L", (size, size), 255)
    ImageDraw.Draw(im).line([(140, 50), (140, 230)], fill=0, width=18)
    return png(im)


def check_prediction(body, preprocessed=True):
    assert set(body) >= {"label", "probabilities", "input", "saliency"}
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert body["label"] == int(np.argmax(body["probabilities"]))
    image = np.array(body["input"])
    assert image.shape == (28, 28) and image.min() >= 0
    assert image.max() == 255 or not preprocessed  # preprocessing saturates the ink
    return image


def still_alive(client):
    assert client.get("/api/model").status_code == 200
    r = client.post("/api/predict", content=drawn_one(), headers={"content-type": "image/png"})
    assert r.status_code == 200


# The API


def test_model_card(client, run_dir):
    card = client.get("/api/model").json()
    assert card["architecture"][0] == {"type": "Dense", "config": {"n_in": 784, "n_out": 32,
                                                                   "init": "he"}}
    assert card["parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    metrics = json.loads((run_dir[0] / "metrics.json").read_text())
    assert card["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert card["config"]["training"]["epochs"] == 3 and card["epochs"] == 3
    assert card["gallery"] and card["test_images"] == 200
    assert card["max_body_bytes"] == LIMIT


def test_predict_png_body_is_preprocessed(client):
    r = client.post("/api/predict", content=drawn_one(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    image = check_prediction(r.json())
    rows, cols = np.nonzero(image > 128)
    assert rows.min() >= 4 and rows.max() <= 23  # a vertical bar fit into the 20x20 box
    assert abs(cols.mean() - 13.5) <= 1.0  # ... centered; white ink on black


def test_predict_multipart_upload_same_answer(client):
    data = drawn_one()
    a = client.post("/api/predict", content=data, headers={"content-type": "image/png"}).json()
    r = client.post("/api/predict", files={"file": ("digit.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["probabilities"] == a["probabilities"]
    assert r.json()["input"] == a["input"]


def test_predict_pixels_is_the_network_input(client, run_dir):
    _, (_, (x_test, _)) = run_dir
    model, _ = load_model(run_dir[0] / "model.safetensors")
    r = client.post("/api/predict", json={"pixels": x_test[3].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input"] == x_test[3].tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(x_test[3:4])[0],
                               atol=1e-6)


def test_gallery_and_test_images(client, run_dir):
    _, (_, (x_test, y_test)) = run_dir
    g = client.get("/api/gallery", params={"count": 5, "seed": 1}).json()
    assert g["kind"] == "random" and g["total"] == 200 and len(g["images"]) == 5
    assert g == client.get("/api/gallery", params={"count": 5, "seed": 1}).json()
    item = g["images"][0]
    assert item["pixels"] == x_test[item["index"]].tolist()
    assert item["label"] == y_test[item["index"]]
    c = client.get("/api/gallery", params={"kind": "class", "digit": 4, "count": 100}).json()
    assert c["total"] == int(np.sum(y_test == 4)) and {i["label"] for i in c["images"]} == {4}
    m = client.get("/api/gallery", params={"kind": "misclassified"}).json()
    assert all(i["label"] != i["predicted"] for i in m["images"])
    t = client.get("/api/test-images/7").json()
    assert t["index"] == 7 and t["true_label"] == y_test[7] and t["input"] == x_test[7].tolist()
    check_prediction(t, preprocessed=False)


# Bad input: a 4xx JSON error that names the problem, and the server goes on


def _big_png() -> bytes:
    return png(Image.new("1", (8000, 6250)))  # 50 megapixels, a few kB compressed


BAD = [
    ("empty canvas", dict(content=png(np.full((280, 280), 255, np.uint8)),
                          headers={"content-type": "image/png"}), 422, "no digit found"),
    ("non-image", dict(content=b"this is not a picture", headers={"content-type": "image/png"}),
     400, "not an image"),
    ("non-image upload", dict(files={"file": ("notes.txt", b"hello", "text/plain")}), 400,
     "not an image"),
    ("truncated png", dict(content=drawn_one()[:100], headers={"content-type": "image/png"}),
     400, "cannot read"),
    ("50 megapixels", dict(content=None, headers={"content-type": "image/png"}), 413,
     "too large"),
    ("0-byte body", dict(content=b"", headers={"content-type": "image/png"}), 400, "empty"),
    ("0-byte upload", dict(files={"file": ("d.png", b"", "image/png")}), 400, "empty"),
    ("multipart without file", dict(data={"name": "x"}, files={"other": ("a", b"b")}), 422,
     "`file`"),
    ("wrong content type", dict(content=b"1234", headers={"content-type": "text/plain"}), 415,
     "unsupported content type 'text/plain'"),
    ("no content type", dict(content=b"1234"), 415, "unsupported content type"),
    ("wrong shape", dict(json={"pixels": [[0] * 27] * 28}), 422, "28x27"),
    ("flat array", dict(json={"pixels": [0] * 784}), 422, "28x28 array"),
    ("no pixels key", dict(json={"image": []}), 422, "pixels"),
    ("out of range", dict(json={"pixels": [[300] * 28] * 28}), 422, "[0, 255]"),
    ("strings", dict(json={"pixels": [["a"] * 28] * 28}), 422, "numbers"),
    ("broken json", dict(content=b"{pixels:", headers={"content-type": "application/json"}),
     400, "not valid JSON"),
    ("empty json", dict(content=b"", headers={"content-type": "application/json"}), 400,
     "empty"),
    ("over the limit", dict(content=b"\x89PNG" + bytes(LIMIT),
                            headers={"content-type": "image/png"}), 413, "too large"),
]


@pytest.mark.parametrize("name, request_args, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_json(client, name, request_args, status, words):
    if name == "50 megapixels":
        request_args = {**request_args, "content": _big_png()}
    r = client.post("/api/predict", **request_args)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    still_alive(client)


def test_bad_requests_elsewhere(client):
    assert client.get("/api/test-images/200").status_code == 404
    assert "no test image" in client.get("/api/test-images/200").json()["error"]
    r = client.get("/api/gallery", params={"kind": "class"})
    assert r.status_code == 422 and "digit" in r.json()["error"]
    r = client.get("/api/gallery", params={"kind": "nonsense"})
    assert r.status_code == 422 and "kind" in r.json()["error"]
    r = client.get("/api/gallery", params={"count": 10**6})
    assert r.status_code == 422
    assert client.get("/api/predict").status_code == 405
    assert client.get("/nothing-here").status_code == 404
    still_alive(client)


def _limit_run(headers, chunks):
    """Drive BodyLimit with a body arriving in `chunks`; (status, bytes the app pulled)."""
    pulled, sent = [], []

    async def app(scope, receive, send):  # reads everything, like request.body()
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        chunk = chunks[len(pulled)]
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    asyncio.run(BodyLimit(app, limit=1000)(scope, receive, send))
    return sent[0]["status"], sum(pulled)


def test_body_limit_refuses_before_reading():
    chunks = [bytes(100)] * 1000  # 100 kB
    assert _limit_run([(b"content-length", b"100000")], chunks) == (413, 0)  # not one byte
    status, pulled = _limit_run([], chunks)  # no Content-Length: counted while streaming
    assert status == 413 and pulled <= 1100
    assert _limit_run([], [bytes(100)] * 10) == (200, 1000)
    assert _limit_run([(b"content-length", b"x")], chunks)[0] == 400


def test_chunked_upload_over_limit(client):
    def body():
        for _ in range(100):
            yield bytes(4096)  # 400 kB, no Content-Length: sent chunked

    r = client.post("/api/predict", content=body(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    still_alive(client)


# The page: served by barenet, nothing from elsewhere


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for path in [a for a in assets if a.startswith("/static/")] + ["/static/docs.js"]:
        assert client.get(path).status_code == 200, path
    for f in STATIC.iterdir():
        text = f.read_text()
        # XML namespace names (the SVG namespace) are identifiers, never fetched.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), \
            f"{f.name} refers to another site"


def test_docs_offline_and_openapi(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/redoc").status_code == 404
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"image/png", "multipart/form-data",
                                                      "application/json"}
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert {"/api/model", "/api/gallery", "/api/test-images/{index}"} <= set(spec["paths"])


# The real server, as the command starts it


def test_serve_command_end_to_end(run_dir, tmp_path):
    env = {**os.environ, "BARENET_DATA_DIR": str(tmp_path / "no-data"), "BARENET_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from barenet.app.cli import run; run()",
                             "serve", str(run_dir[0]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        import httpx
        base = f"http://127.0.0.1:{match.group(1)}"
        with httpx.Client(base_url=base, timeout=10) as http:
            card = http.get("/api/model").json()
            assert not card["gallery"]  # no test set here: the page works without it
            assert http.get("/api/gallery").status_code == 404
            big = http.post("/api/predict", content=bytes(6 * 1024 * 1024),
                            headers={"content-type": "image/png"})
            assert big.status_code == 413
            r = http.post("/api/predict", content=drawn_one(),
                          headers={"content-type": "image/png"})
            assert r.status_code == 200
            check_prediction(r.json())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "warning: no gallery" in proc.stderr.read()


def test_serve_refuses_a_busy_port(run_dir, tmp_path, monkeypatch, capsys):
    import socket
    monkeypatch.setenv("BARENET_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("BARENET_OFFLINE", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["serve", str(run_dir[0]), "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_static_dir_holds_the_page():
    names = {p.name for p in Path(STATIC).iterdir()}
    assert {"index.html", "app.js", "style.css", "docs.html", "docs.js", "docs.css"} <= names


def test_ensemble_model_card(tmp_path):
    from barenet.ensemble import Ensemble, save_ensemble
    from barenet.model import mlp

    save_ensemble(tmp_path / "e.safetensors", Ensemble([mlp(784, [8], 10, rng=1),
                                                        mlp(784, [16], 10, rng=2)]))
    model, meta = load_model(tmp_path / "e.safetensors")
    with TestClient(create_app(model, meta)) as c:
        card = c.get("/api/model").json()
        assert [len(m) for m in card["ensemble"]] == [3, 3] and card["architecture"] == []
        assert card["parameters"] == 784 * 8 + 8 + 8 * 10 + 10 + 784 * 16 + 16 + 16 * 10 + 10
        assert not card["saliency"] and not card["gallery"]
        r = c.post("/api/predict", content=drawn_one(), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["saliency"] is None
        assert not card["attack"]
        r = c.post("/api/attack", json={"pixels": r.json()["input"]})
        assert r.status_code == 422 and "ensemble" in r.json()["error"]


def test_saliency_shown_when_available(client):
    r = client.post("/api/predict", content=drawn_one(), headers={"content-type": "image/png"})
    s = r.json()["saliency"]
    card = client.get("/api/model").json()
    if not card["saliency"]:
        assert s is None
        return
    s = np.array(s)
    assert s.shape == (28, 28) and s.min() >= 0 and s.max() == pytest.approx(1.0)


def test_attack_finds_the_smallest_flipping_change(client, run_dir):
    out, (_, (x_test, _)) = run_dir
    card = client.get("/api/model").json()
    # The run's own threshold, calibrated on its validation images (metrics.json "reject")
    calibrated = json.loads((out / "metrics.json").read_text())["reject"]["threshold"]
    # 60 validation images are too few to calibrate on (metrics.REJECT_MIN_IMAGES): 0.9
    assert card["attack"] and card["reject_threshold"] == (calibrated or 0.9)
    r = client.post("/api/attack", json={"pixels": x_test[0].tolist()})
    assert r.status_code == 200, r.text
    a = r.json()
    model, _ = load_model(out / "model.safetensors")
    assert a["label"] == int(model.predict(x_test[:1])[0])
    if a["eps"] is None:                       # nothing up to 0.5 flips it: nothing to check
        return
    adversarial = np.array(a["adversarial"]) / 255.0
    assert 0 < a["eps"] <= 0.5 and adversarial.shape == (28, 28)
    assert np.abs(adversarial - x_test[0] / 255.0).max() <= a["eps"] + 1e-4
    assert int(model.predict(adversarial[None].astype(np.float32))[0]) == \
        a["adversarial_label"] != a["label"]


@pytest.mark.parametrize("body, headers, status", [
    (b"", {"content-type": "application/json"}, 400),
    (b"{", {"content-type": "application/json"}, 400),
    (b"[]", {"content-type": "application/json"}, 422),
    (b'{"pixels": [[0]]}', {"content-type": "application/json"}, 422),
    (b"x", {"content-type": "text/plain"}, 415),
])
def test_attack_refuses_bad_bodies_in_json(client, body, headers, status):
    r = client.post("/api/attack", content=body, headers=headers)
    assert r.status_code == status and set(r.json()) == {"error"}
