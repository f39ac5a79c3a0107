"""`barenet serve` under bad input and bad clients: every error a 4xx {"error": ...}; idle,
slowloris and slow-body clients cost a connection for a bounded time, never service.

In-process (TestClient) for the answers; a real uvicorn on 127.0.0.1 in a thread, with the
deadlines shortened, for what needs sockets.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from barenet.app.asgi import bind  # noqa: E402
from barenet.app.server import create_app  # noqa: E402
from barenet.app.shipped import shipped_path  # noqa: E402
from barenet.serialize import load_model  # noqa: E402


def serving():  # imported when a test needs it: the other tests still run on older code
    from barenet.app import serving
    return serving


def synthetic_test_set(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def app():
    path = shipped_path("mlp")
    if path is None:
        pytest.skip("the shipped mlp model file is not installed")
    model, meta = load_model(path)
    return create_app(model, meta, synthetic_test_set())


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def tiff(values) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, dtype=np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


def drawn_one() -> bytes:
    im = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(im).line([(140, 50), (140, 230)], fill=0, width=18)
    return png(im)


def png_bomb(side=6300) -> bytes:
    """A side x side 16-bit RGBA PNG of zeros: ~300 kB that decode to 40 MP (the issue's)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = zlib.compress(bytes(side * 8 + 1) * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)  # 16-bit, RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def error_of(r, status: int, *words: str) -> str:
    """The response is `status` with a JSON {"error": one line} holding every word."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


def still_alive(client):
    r = client.post("/api/predict", content=drawn_one(), headers={"content-type": "image/png"})
    assert r.status_code == 200


# The HTTP 500s, and the {"detail"} answers


def pixels_json(value, at=(0, 0)) -> bytes:
    rows = [["0"] * 28 for _ in range(28)]
    rows[at[0]][at[1]] = value
    return ('{"pixels": [' + ",".join("[" + ",".join(r) + "]" for r in rows) + "]}").encode()


@pytest.mark.parametrize("value, words", [
    ("1" + "0" * 400, ["pixels[3][5]", "integer of about 401 digits", "[0, 255]"]),
    ("-" + "9" * 30, ["pixels[3][5]", "[0, 255]"]),
    ("1e400", ["pixels[3][5]", "inf"]),
    ("NaN", ["pixels[3][5]", "nan"]),
    ("-Infinity", ["pixels[3][5]", "-inf"]),
    ('"12"', ["pixels[3][5]", "a string"]),
    ("[1, 2]", ["pixels[3][5]", "a list"]),
    ("null", ["pixels[3][5]", "null"]),
], ids=["10^400", "huge-negative", "1e400", "NaN", "-Infinity", "string", "nested", "null"])
def test_pixel_values_outside_numbers_0_255_get_422(client, value, words):
    r = client.post("/api/predict", content=pixels_json(value, (3, 5)),
                    headers={"content-type": "application/json"})
    error_of(r, 422, *words)
    still_alive(client)


@pytest.mark.parametrize("rows, words", [
    ([[0] * 28] * 27 + [[0] * 27], ["row 27 has 27 numbers", "differ in length"]),
    ([[0] * 28] * 5 + [[0] * 29] + [[0] * 28] * 22, ["row 5 has 29 numbers"]),
    ([[[0] * 28] * 28] * 28, ["must be numbers", "a list"]),
    ([[0] * 28] * 28 + [[0] * 28], ["got shape 29x28"]),
], ids=["ragged-short", "ragged-long", "28x28x28", "29x28"])
def test_wrong_shapes_are_named_plainly(client, rows, words):
    message = error_of(client.post("/api/predict", json={"pixels": rows}), 422, *words)
    assert "28x27x28" not in message


@pytest.mark.parametrize("values, words", [
    ([[np.nan] * 40] * 40, ["NaN"]),
    ([[np.inf] * 40] * 40, ["infinite"]),
    ([[0.0] * 40] * 39 + [[-np.inf] + [0.0] * 39], ["infinite"]),
], ids=["nan", "inf", "one-minus-inf"])
def test_float_tiff_with_nan_or_inf_gets_400(client, values, words):
    r = client.post("/api/predict", content=tiff(values), headers={"content-type": "image/tiff"})
    error_of(r, 400, "cannot read image data", *words)
    still_alive(client)


@pytest.mark.parametrize("params, words", [
    ({"seed": -1}, ["seed", "greater than or equal to 0"]),
    ({"seed": "x"}, ["seed"]),
    ({"kind": "class"}, ["kind=class needs digit"]),
    ({"count": 0}, ["count"]),
    ({"digit": 10}, ["digit"]),
], ids=["seed=-1", "seed=x", "class-without-digit", "count=0", "digit=10"])
def test_gallery_parameters_get_422(client, params, words):
    error_of(client.get("/api/gallery", params=params), 422, *words)


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/nothing-here", 404, ["/nothing-here", "no such page"]),
    ("GET", "/api/nothing", 404, ["/api/nothing"]),
    ("GET", "/static/missing.css", 404, []),
    ("GET", "/api/test-images/50", 404, ["no test image 50"]),
    ("GET", "/api/test-images/-1", 404, ["no test image -1"]),
    ("GET", "/api/test-images/x", 422, ["index"]),
    ("GET", "/api/predict", 405, ["GET not allowed", "POST"]),
    ("DELETE", "/api/model", 405, ["DELETE not allowed", "GET"]),
], ids=["404-page", "404-api", "404-static", "404-index", "404-negative", "422-index",
        "405-get", "405-delete"])
def test_every_error_is_error_json(client, method, path, status, words):
    r = client.request(method, path)
    error_of(r, status, *words)
    if status == 405:
        assert r.headers["allow"]  # RFC 9110: a 405 names the methods that work


def test_bomb_png_refused_from_its_header(client):
    """The issue's 6300x6300 16-bit RGBA PNG (~300 kB): 413 before any decoding."""
    data = png_bomb()
    assert len(data) < 400_000
    r = client.post("/api/predict", content=data, headers={"content-type": "image/png"})
    error_of(r, 413, "too large", "6300x6300", "16,000,000")
    r = client.post("/api/predict", files={"file": ("bomb.png", data, "image/png")})
    error_of(r, 413, "too large")
    still_alive(client)


def test_a_large_photo_under_the_bound_still_works(client):
    im = Image.new("RGB", (4000, 3000), (235, 230, 220))  # 12 MP phone photo of a "1"
    ImageDraw.Draw(im).line([(2000, 600), (2000, 2400)], fill=(20, 20, 30), width=120)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert np.array(r.json()["input"]).max() == 255


# A real server on a socket, deadlines shortened


class Live:
    """uvicorn (the serve settings) in a thread on 127.0.0.1, stopped at the end."""

    def __init__(self, app, **limits):
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = serving().uvicorn_server(app, **limits)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def idle_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def short_deadlines(monkeypatch):
    monkeypatch.setattr(serving(), "HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(serving(), "BODY_TIMEOUT", 1.0)


@pytest.mark.parametrize("idle, slowloris", [(200, 0), (0, 40), (200, 40)],
                         ids=["200-idle", "40-slowloris", "both"])
def test_idle_and_slowloris_clients_do_not_deny_service(app, idle, slowloris):
    """The issue: 63 idle connections made serve answer 503 to everyone, indefinitely."""
    with Live(app) as live:
        held = idle_sockets(live.port, idle + slowloris)
        stop = threading.Event()

        def trickle():  # one byte of a request head a second, never finished
            head = b"GET /api/model HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            for k in range(len(head)):
                if stop.wait(1.0):
                    return
                for s in held[idle:]:
                    try:
                        s.send(head[k : k + 1])
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()
        try:
            time.sleep(1.5)
            with httpx.Client(base_url=live.url, timeout=10) as c:
                for _ in range(10):
                    assert c.get("/api/model").status_code == 200
                    r = c.post("/api/predict", content=drawn_one(),
                               headers={"content-type": "image/png"})
                    assert r.status_code == 200
        finally:
            stop.set()
            for s in held:
                s.close()


def test_a_connection_that_sends_nothing_is_closed(app, short_deadlines):
    with Live(app) as live:
        (s,) = idle_sockets(live.port, 1)
        assert closed_by_server(s, within=10)
        s.close()


def test_slowloris_is_closed_although_bytes_keep_coming(app, short_deadlines):
    with Live(app) as live:
        (s,) = idle_sockets(live.port, 1)
        s.settimeout(0.2)
        closed = False
        for byte in b"GET /api/model HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa":
            try:
                s.send(bytes([byte]))
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        s.close()
        assert closed  # 20 bytes at 0.2 s each: kept alive by uvicorn's keep-alive alone


def test_slow_body_gets_408_and_the_connection_closes(app, short_deadlines):
    with Live(app) as live:
        (s,) = idle_sockets(live.port, 1)
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000\r\n\r\n" + bytes(10))
        s.settimeout(10)
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        s.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert "not received within 1 s" in json.loads(body)["error"]


def test_the_longest_idle_connection_is_closed_when_there_are_too_many(app, monkeypatch):
    monkeypatch.setattr(serving().DeadlineProtocol, "max_connections", 20)
    with Live(app) as live:
        held = idle_sockets(live.port, 40)
        time.sleep(0.5)
        with httpx.Client(base_url=live.url, timeout=10) as c:
            assert c.get("/api/model").status_code == 200
        closed = sum(closed_by_server(s, within=0.05) for s in held)
        assert closed >= 20
        assert not any(closed_by_server(s, within=0.01) for s in held[-5:])  # newest kept
        for s in held:
            s.close()


def test_503_only_when_requests_are_at_work():
    """Admission counts requests being answered, not connections: the limit+1-th gets 503
    with Retry-After and {"error"}, and service resumes as soon as one finishes."""
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    admission = serving().Admission(slow_app, limit=2)

    async def one():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await admission({"type": "http", "headers": []}, receive, send)
        return sent

    async def scenario():
        first = [asyncio.create_task(one()) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await one()
        release.set()
        done = await asyncio.gather(*first)
        return refused, done, await one()

    refused, done, after = asyncio.run(scenario())
    assert refused[0]["status"] == 503
    assert (b"retry-after", b"1") in refused[0]["headers"]
    assert "server busy" in json.loads(refused[1]["body"])["error"]
    assert [d[0]["status"] for d in done] == [200, 200] and after[0]["status"] == 200
