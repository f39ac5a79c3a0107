"""The live training view in headless Chromium: a real training run's curves grow on the page.

Starts `barenet dashboard` on an empty runs directory and, while the page is open, a real
`barenet train` (a small network on real MNIST, a few seconds per epoch) in subprocesses; the
page is never reloaded. Drives Debian's /usr/bin/chromium through Playwright (never
`playwright install`); outside CI, a missing browser, Playwright or MNIST skips with the reason.
Screenshots go to $BARENET_SCREENSHOTS (default: the test's temporary directory).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CI = bool(os.environ.get("CI"))
BARENET = [sys.executable, "-c", "from barenet.app.cli import run; run()"]


def unavailable(reason: str):
    if CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} not found (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright (Python package) not installed")
    from barenet.data import DataError, load_mnist
    try:
        load_mnist(progress=False)
    except DataError as exc:
        unavailable(f"real MNIST not available: {exc}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def dashboard(tmp_path):
    """`barenet dashboard RUNS --port 0` on an empty directory: (url, runs directory)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = subprocess.Popen([*BARENET, "dashboard", str(runs), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if not match:
            proc.kill()
            pytest.fail(f"barenet dashboard did not start: {line!r} {proc.stderr.read()}")
        yield match.group(1), runs
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def screenshot_dir(tmp_path) -> Path:
    d = Path(os.environ.get("BARENET_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


EPOCHS = 30
# Batches of 16 keep an epoch near 0.6 s here: the page polls every 2 s, and with the default
# batches 20 epochs took ~3 s on this machine, too quick for three different looks.
BATCH = 16


def points(page) -> int:
    return int(page.get_attribute("#accuracy-chart", "data-points") or 0)


def test_curves_grow_while_a_real_run_trains(browser, dashboard, tmp_path):
    url, runs = dashboard
    shots = screenshot_dir(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors, foreign = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("data:", url))
            else foreign.append(r.url))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.is_visible("#empty")                       # nothing trained here yet
    page.evaluate("window.__sameDocument = true")           # gone if the page ever reloads

    # A real run: 784-64-10 on real MNIST, EPOCHS epochs of about a second each: enough that a
    # browser starved on a loaded machine (seen: first look at epoch 6 of 8) still sees growth.
    train = subprocess.Popen([*BARENET, "train", "--epochs", str(EPOCHS), "--out",
                              str(runs / "live"),
                              "--set", "model.hidden=[64]", "--set", "model.dropout=0.0",
                              "--batch-size", str(BATCH), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.wait_for_selector("tr.run[data-run='live'] .status.running", timeout=60_000)
        page.wait_for_function("+document.querySelector('#accuracy-chart').dataset.points >= 1",
                               timeout=120_000)
        seen = [points(page)]
        grown_at = None
        while train.poll() is None and len(set(seen)) < 3:
            page.wait_for_timeout(500)
            seen.append(points(page))
            if grown_at is None and seen[-1] >= 3:
                grown_at = seen[-1]
                page.screenshot(path=str(shots / "dashboard-training.png"))
                assert page.is_visible("#batch-bar")
                assert re.search(r"ETA \d", page.inner_text("#progress-text"))
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen   # grew, never shrank
        out, err = train.communicate(timeout=300)
        assert train.returncode == 0, err
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()

    page.wait_for_selector("tr.run[data-run='live'] .status.finished", timeout=30_000)
    page.wait_for_function(
        f"+document.querySelector('#accuracy-chart').dataset.points === {EPOCHS}")
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert int(page.get_attribute("#loss-chart", "data-points")) == EPOCHS
    assert page.locator("#loss-chart path.val").count() == 1      # validation curve drawn
    assert "test accuracy" in page.inner_text("#progress-text")
    if (runs / "live" / "report.html").is_file():
        link = page.locator("#runs a", has_text="report")
        page.wait_for_selector("#runs a[href^='/report']")
        response = page.request.get(url + link.first.get_attribute("href"))
        assert response.ok and "<html" in response.text().lower()
    page.screenshot(path=str(shots / "dashboard-finished.png"))
    context.close()
    assert not errors, errors
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
