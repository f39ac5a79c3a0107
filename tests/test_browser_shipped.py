"""`barenet serve` with no MODEL, no data and an empty HOME: the shipped model answers drawings.

What a new user gets right after `pip install`: the page comes up without a gallery (no test
set anywhere) and recognizes digits drawn with the mouse. Headless Debian chromium through
Playwright, as in test_browser.py (whose drawing helpers this reuses); skips outside CI when
the browser is missing.
"""

import os
import re
import subprocess
import sys

import pytest

from test_browser import browser, draw, screenshot_dir  # noqa: F401  (browser: a fixture)


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("empty-home")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "BARENET_DATA_DIR": str(home / "no-data"), "BARENET_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from barenet.app.cli import run; run()",
                             "serve", "--port", "0", "--data-dir", str(home / "no-data")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=home)
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if not match:
            proc.kill()
            pytest.fail(f"barenet serve did not start: {line!r} {proc.stderr.read()}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_shipped_model_recognizes_drawn_digits_with_no_data(browser, bare_server,  # noqa: F811
                                                              tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(bare_server + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#gallery .thumb").count() == 0          # no test set anywhere
    assert draw(page, 1) == "1"
    assert draw(page, 7) == "7"
    page.screenshot(path=str(screenshot_dir(tmp_path) / "web-shipped.png"), full_page=True)
    context.close()
    assert not errors, errors
