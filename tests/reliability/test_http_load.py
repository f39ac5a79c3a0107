"""A bounded load test of a real `barenet serve` process on 127.0.0.1: 5,000 requests over 32
keep-alive connections (pixels, a PNG upload, the gallery, test images, the model card) while
200 idle connections are held open (re-opened whenever the server's deadline closes them).

Asserts 0 errors and a flat RSS (memory, not time: the second half of the requests may not grow
the server by more than RSS_GROWTH_MB over the first half). The p99 latency is printed (-s) and
recorded in the test report (record_property); it is not asserted.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

FAKE = Path(__file__).resolve().parent / "fake_barenet.py"
REQUESTS = 5000  # measured, in two halves, after WARMUP
WARMUP = 400
CONCURRENCY = 32
IDLE = 200
RSS_GROWTH_MB = 25.0


def _png() -> bytes:
    im = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(im).line([(70, 25), (70, 115)], fill=0, width=9)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _requests() -> list[bytes]:
    pixels = np.zeros((28, 28), dtype=int)
    pixels[4:24, 13:15] = 255
    body_json = json.dumps({"pixels": pixels.tolist()}).encode()
    body_png = _png()

    def post(path, ctype, body):
        return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def get(path):
        return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()

    return [post("/api/predict", "application/json", body_json),
            post("/api/predict", "image/png", body_png),
            get("/api/gallery?count=8&seed=3"),
            get("/api/test-images/7"),
            post("/api/predict", "application/json", body_json),
            get("/api/model")]


class Conn:
    """One keep-alive HTTP/1.1 connection; answers must carry Content-Length (uvicorn's do)."""

    def __init__(self, port):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, raw: bytes) -> int:
        for attempt in (0, 1):  # the server may close an idle keep-alive connection: reconnect
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1",
                                                                             self.port)
                self.writer.write(raw)
                head = await self.reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                await self.reader.readexactly(length)
                return int(head.split(b" ", 2)[1])
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def hold_idle(port: int, n: int, stop: asyncio.Event, reopened: list[int]):
    """Keep n connections open that never send a byte; re-open each one the server closes."""
    async def one():
        first = True
        while not stop.is_set():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if not first:
                reopened[0] += 1
            first = False
            closed = asyncio.create_task(reader.read(1))
            done, _ = await asyncio.wait({closed, asyncio.create_task(stop.wait())},
                                         return_when=asyncio.FIRST_COMPLETED)
            writer.close()
            if closed not in done:
                closed.cancel()
    await asyncio.gather(*(one() for _ in range(n)))


async def run_batch(port: int, total: int, latencies: list[float], statuses: dict):
    kinds = _requests()
    counter = iter(range(total))

    async def worker():
        conn = Conn(port)
        try:
            for i in counter:
                start = time.perf_counter()
                try:
                    status = await asyncio.wait_for(conn.request(kinds[i % len(kinds)]), 20)
                except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError,
                        AttributeError, ValueError) as exc:  # no answer, or not HTTP
                    status = type(exc).__name__
                    conn.close()
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
                if sum(n for k, n in statuses.items() if k != 200) >= 50:
                    return  # failed already: no need to wait out every timeout
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@pytest.fixture
def served():
    if not Path("/proc/self/status").exists():
        pytest.skip("the server's RSS is read from /proc (Linux)")
    env = {**os.environ, "BARENET_OFFLINE": "1", "NO_COLOR": "1", "BARENET_FAKE_N": "100"}
    proc = subprocess.Popen([sys.executable, str(FAKE), "serve", "mlp", "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, int(match.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read()
        assert "Traceback" not in err, err


def test_load_5000_requests_with_200_idle_connections(served, record_property):
    proc, port = served

    async def scenario():
        stop, reopened = asyncio.Event(), [0]
        idle = asyncio.create_task(hold_idle(port, IDLE, stop, reopened))
        await asyncio.sleep(0.5)
        statuses, latencies = {}, []
        await run_batch(port, WARMUP, [], statuses)
        rss = [rss_mb(proc.pid)]
        try:
            for _ in range(2):
                await run_batch(port, REQUESTS // 2, latencies, statuses)
                rss.append(rss_mb(proc.pid))
        finally:
            stop.set()
            await asyncio.wait_for(idle, 30)
        return statuses, latencies, rss, reopened[0]

    statuses, latencies, rss, reopened = asyncio.run(scenario())
    assert set(statuses) == {200}, statuses
    p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    summary = (f"{len(latencies)} requests at concurrency {CONCURRENCY}, {IDLE} idle "
               f"connections (re-opened {reopened} times): statuses {statuses}, p50 {p50:.1f} ms, "
               f"p99 {p99:.1f} ms, server RSS {rss[0]:.0f} -> {rss[1]:.0f} -> {rss[2]:.0f} MB")
    print("\n" + summary)
    record_property("p99_ms", round(p99, 1))
    record_property("load_summary", summary)
    assert len(latencies) == REQUESTS
    assert rss[2] - rss[1] <= RSS_GROWTH_MB, summary
    assert proc.poll() is None
