"""`barenet explore` (textual app driven by its pilot) and the `barenet` menu."""

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textual")

from barenet.app.cli import main  # noqa: E402
from barenet.app.explore import Browser, ExploreApp, bar, bars_text, build_app, image_text  # noqa: E402
from barenet.app.menu import run_menu  # noqa: E402


def test_image_text_is_half_blocks_with_gray_colors():
    image = np.zeros((28, 28), np.uint8)
    image[0, 0] = 255  # top half of the first cell
    image[3, 1] = 128  # bottom half of the second cell on the second line
    text = image_text(image)
    lines = text.plain.split("\n")
    assert len(lines) == 14 and all(line == "▀" * 28 for line in lines)
    styles = {(span.start, span.style.color.triplet.hex, span.style.bgcolor.triplet.hex)
              for span in text.spans}
    assert (0, "#ffffff", "#000000") in styles
    assert (29 + 1, "#000000", "#808080") in styles  # line 2 starts at 29 (28 + newline)
    assert len(image_text(image, scale=2).plain.split("\n")) == 28


def test_bar_resolution_and_bars_text():
    assert bar(0.0, 4) == "    " and bar(1.0, 4) == "████" and bar(0.5, 4) == "██  "
    assert bar(1 / 32, 4) == "▏   "
    probs = np.array([0.05, 0.9, 0.05] + [0.0] * 7)
    lines = bars_text(probs, truth=2).plain.split("\n")
    assert len(lines) == 10
    assert lines[1].startswith("1 ") and lines[1].rstrip().endswith("90.00%")
    assert lines[2].endswith("← true")


def test_browser_filters_and_wraps():
    labels = np.array([0, 1, 1, 2, 1, 0])
    predicted = np.array([0, 1, 2, 2, 0, 0])  # 2 and 4 are wrong
    b = Browser(labels, predicted, rng=0)
    b.step(-1)
    assert b.index == 5
    assert b.set_filter(1, False) and list(b.indices) == [1, 2, 4]
    assert b.index == 4  # nearest image of the class at or after 5: the last one
    assert b.set_filter(1, True) and list(b.indices) == [2, 4] and b.index == 4  # kept
    b.step(1)
    assert b.index == 2  # wrapped around
    assert not b.set_filter(0, True)  # no misclassified 0: filter unchanged
    assert b.digit == 1 and b.misclassified
    assert b.go_to(4) and b.index == 4
    assert not b.go_to(0) and b.digit is None and not b.misclassified and b.index == 0
    with pytest.raises(IndexError):
        b.go_to(6)


def _app(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--set", "model.hidden=[32]", "--epochs", "3", "--out", str(run),
                 "-q"]) == 0
    return build_app(str(run))


def _status(app) -> str:
    return str(app.query_one("#status").render())


def test_explore_app_driven_by_keys(tiny_data, tmp_path):
    app = _app(tiny_data, tmp_path)
    (_, _), (x_test, y_test) = tiny_data

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            assert "test image 0 of 200" in _status(app)
            image = str(app.query_one("#image").render())
            assert image.count("▀") == 28 * 14
            bars = str(app.query_one("#bars").render()).split("\n")
            assert len(bars) == 10 and "← true" in bars[int(y_test[0])]

            await pilot.press("right", "n", "space")
            assert app.browser.index == 3 and "test image 3 of 200" in _status(app)
            await pilot.press("left")
            assert app.browser.index == 2

            await pilot.press("7")  # class filter: only true 7s, staying in order
            assert all(y_test[i] == 7 for i in app.browser.indices)
            assert y_test[app.browser.index] == 7 and "class 7" in _status(app)
            first = app.browser.index
            await pilot.press("n")
            assert y_test[app.browser.index] == 7 and app.browser.index > first
            await pilot.press("7")  # again: all classes
            assert app.browser.digit is None and len(app.browser.indices) == 200

            await pilot.press("r")
            assert 0 <= app.browser.index < 200

            await pilot.press("g")
            await pilot.press("1", "5", "0", "enter")
            assert app.browser.index == 150 and "test image 150 " in _status(app)
            await pilot.press("g", "9", "9", "9", "enter")  # out of range: stays, no crash
            assert app.browser.index == 150
            await pilot.press("g", "escape")
            assert not app.query_one("#goto").has_class("visible")

            await pilot.press("z")
            assert str(app.query_one("#image").render()).count("▀") == 56 * 28
            await pilot.press("q")
        assert app.return_code in (0, None)

    asyncio.run(drive())


def test_explore_misclassified_toggle(tiny_data, tmp_path):
    app = _app(tiny_data, tmp_path)
    # Make some mistakes on purpose: swap the probabilities of two images.
    app.probs[[5, 9]] = app.probs[[5, 9]][:, ::-1]
    app.browser.predicted = app.probs.argmax(axis=1)

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("m")
            wrong = set(np.flatnonzero(app.browser.labels != app.browser.predicted).tolist())
            assert set(app.browser.indices.tolist()) == wrong and {5, 9} <= wrong
            assert "misclassified" in _status(app) and "wrong" in _status(app)
            await pilot.press("m")
            assert len(app.browser.indices) == 200
            await pilot.press("q")

    asyncio.run(drive())


def test_explore_command_bad_model(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err


def test_explore_app_direct_construction():
    images = np.zeros((3, 28, 28), np.uint8)
    probs = np.eye(10, dtype=np.float32)[[1, 2, 3]]
    app = ExploreApp(images, np.array([1, 2, 4]), probs, start=2)
    assert app.browser.index == 2


class Answers:
    """Scripted replies for the menu's prompts."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = []

    def __call__(self, prompt, default=None):
        self.asked.append(prompt)
        if not self.answers:
            raise EOFError
        answer = self.answers.pop(0)
        return default if answer == "" and default is not None else answer


def test_menu_runs_actions_through_the_cli(tmp_path, monkeypatch):
    calls = []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mnist-1").mkdir(parents=True)
    (tmp_path / "runs" / "mnist-1" / "model.safetensors").write_bytes(b"x")

    def fake_main(argv):
        calls.append(argv)
        return 0

    answers = Answers("2", "", "3", "1", "4", "", "", "1", "", "5", "", "7", "q")
    assert run_menu(fake_main, ask=answers, echo=lambda *a: None) == 0
    model = str(Path("runs") / "mnist-1")
    assert calls == [["evaluate", model], ["explore", model], ["serve", model, "--port", "8000"],
                     ["train", "--dataset", "mnist", "--epochs", "5"]]
    assert answers.asked[-1] == "choice"


def test_menu_quits_on_end_of_input():
    assert run_menu(main, ask=Answers(), echo=lambda *a: None) == 0


def test_explore_marks_answers_below_the_reject_threshold_not_sure():
    images = np.zeros((2, 28, 28), np.uint8)
    probs = np.array([[0.95] + [0.05 / 9] * 9, [0.6, 0.4] + [0.0] * 8], np.float32)
    app = ExploreApp(images, np.array([0, 0]), probs, reject=0.9)

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            assert "right" in _status(app) and "not sure" not in _status(app)
            await pilot.press("n")
            assert "not sure (below 90%)" in _status(app)
            await pilot.press("q")

    asyncio.run(drive())
