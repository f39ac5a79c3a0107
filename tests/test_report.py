"""report.html, the plots in it and saliency maps; the report opened in headless Chromium."""

import base64
import io
import os
import re
import shutil
import sys

import numpy as np
import pytest

from barenet.app.cli import main
from barenet.layers import BatchNorm1d, Dense, Dropout, Flatten, Tanh
from barenet.model import Sequential
from barenet.saliency import input_gradient, saliency_map

CHROMIUM = "/usr/bin/chromium"
TINY = ["--set", "model.hidden=[32]", "--epochs", "2"]


@pytest.fixture
def run_dir(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "-q"]) == 0
    return out


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"',
                                                    page)]


def test_training_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    pngs = embedded_pngs(page)
    # Nine plots, minus the grid of mistakes: the synthetic digits are learnt perfectly.
    assert len(pngs) >= 8 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert not re.search(r'(src|href)="(?!data:)', page)          # nothing fetched from outside
    for text in ("test accuracy", "expected calibration error", "macro F1", "Per digit",
                 "Training curves", "Reliability", "Saliency", "First-layer weights",
                 "Configuration", "optimizer", "Timing"):
        assert text in page, text


def page_text(page: str) -> str:
    """The page without its embedded PNGs (base64 could spell anything)."""
    return re.sub(r"base64,[^\"]+", "", page)


def test_mnist_report_speaks_of_digits(run_dir):
    page = page_text((run_dir / "report.html").read_text())
    for text in ("<h2>Per digit</h2>", "<th>digit</th>", "<tr><td>0</td>", "Accuracy per digit",
                 "Rows are true digits", "probability of the predicted digit",
                 "The first test image of each digit"):
        assert text in page, text
    assert "class</th>" not in page and "T-shirt" not in page and "Per class" not in page


def test_fashion_report_names_the_classes_and_never_says_digit(tiny_data, tmp_path):
    out = tmp_path / "fashion"
    assert main(["train", *TINY, "--dataset", "fashion-mnist", "--out", str(out), "-q"]) == 0
    page = page_text((out / "report.html").read_text())
    assert "digit" not in page.lower()
    for text in ("fashion-mnist test set", "<h2>Per class</h2>", "<th>class</th>",
                 "<tr><td>T-shirt/top</td>", "<tr><td>Ankle boot</td>", "Accuracy per class",
                 "Rows are true classes", "probability of the predicted class"):
        assert text in page, text


def figure_texts(fig) -> list[str]:
    from matplotlib.text import Text
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_plots_name_fashion_classes_and_keep_digits_for_mnist(tiny_data):
    from barenet.app import plots
    from barenet.data import class_names
    from barenet.metrics import classification_report

    names = class_names("fashion_mnist")
    assert class_names("mnist") is None and names[0] == "T-shirt/top" and len(names) == 10
    (_, _), (x, y) = tiny_data
    y = y.astype(np.int64)
    probs = np.random.default_rng(0).dirichlet(np.full(10, 0.3), len(y))
    report = classification_report(y, probs)
    cm = np.array(report["confusion_matrix"])
    gradients, targets = input_gradient(Sequential(Dense(784, 10, rng=0)).eval(), x[:10])

    def texts(names):
        figures = [plots.confusion_heatmap(cm, names=names),
                   plots.per_class_accuracy_bars(report["per_class"], report["accuracy"],
                                                 names=names),
                   plots.misclassified_grid(x, y, probs, names=names),
                   plots.prediction_grid(x, y, probs, names=names),
                   plots.confidence_histogram(y, probs, names=names),
                   plots.reliability_diagram(report["reliability"], report["ece"], names=names),
                   plots.saliency_figure(x[:10], y[:10], probs[:10], gradients, targets,
                                         names=names)]
        return "\n".join(t for fig in figures for t in figure_texts(fig))

    fashion, mnist = texts(names), texts(None)
    assert "digit" not in fashion.lower()
    for text in ("predicted class", "true class", "Accuracy per class", "Ankle boot",
                 "T-shirt/top", "Ankle\nboot", "T-shirt →", "predicted class's score",
                 "bars: 0 T-shirt/top, 1 Trouser"):
        assert text in fashion, text
    for text in ("predicted digit", "true digit", "Accuracy per digit", "true 7 → ",
                 "predicted digit's score", "green: the true digit"):
        assert text in mnist, text
    assert "class" not in mnist and "T-shirt" not in mnist


def test_report_command_regenerates_it_and_saves_chosen_pngs(run_dir, tmp_path, capsys):
    (run_dir / "report.html").unlink()
    images = tmp_path / "images"
    assert main(["report", str(run_dir), "--png-dir", str(images),
                 "--only", "curves,confusion"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert not list(run_dir.glob("*.tmp"))
    assert sorted(p.name for p in images.iterdir()) == ["confusion.png", "curves.png"]
    assert main(["report", str(run_dir), "--only", "curvs"]) == 2
    assert "unknown plot curvs" in capsys.readouterr().err


def test_report_of_an_ensemble_lists_its_members_and_shows_the_first_ones_inside(
        run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", *TINY, "--seed", "1", "--out", str(other), "-q"]) == 0
    ens = tmp_path / "ens"
    assert main(["ensemble", str(run_dir), str(other), "--out", str(ens)]) == 0
    images = tmp_path / "images"
    capsys.readouterr()
    assert main(["report", str(ens), "--png-dir", str(images)]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "Traceback" not in captured.err
    page = page_text((ens / "report.html").read_text())
    assert page.count("<code>member</code> (weight 0.500)") == 2
    assert "Dense - ReLU - Dropout - Dense" in page and "identity" in page
    assert "first member (of 2)" in page                         # weights and saliency
    assert "<b>Training curves.</b> Nothing to show for this run." in page   # no epochs
    for row in ("epochs", "training time"):                      # not 0 epochs in 0.0 s
        assert re.search(rf"<td>{row}</td><td>—</td>", page), row
    assert {"weights.png", "saliency.png", "confusion.png"} <= {p.name for p in
                                                                images.iterdir()}
    assert "curves.png" not in {p.name for p in images.iterdir()}


def test_report_of_a_directory_without_a_model_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_without_matplotlib_training_still_succeeds(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib fails
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "barenet[plots]" in err and len(err.strip().splitlines()) == 1
    assert (out / "model.safetensors").exists() and not (out / "report.html").exists()
    assert main(["report", str(out)]) == 1
    assert "pip install" in capsys.readouterr().err


def test_a_failing_plot_does_not_fail_training(tiny_data, tmp_path, monkeypatch, capsys):
    from barenet.app import plots

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(plots, "confusion_heatmap", broken)
    assert main(["train", *TINY, "--out", str(tmp_path / "run"), "-q"]) == 0
    assert "report.html not written: RuntimeError: boom" in capsys.readouterr().err


def png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def test_every_plot_renders_at_a_readable_size(tiny_data):
    from barenet.app import plots
    from barenet.metrics import classification_report

    (_, _), (x, y) = tiny_data
    y = y.astype(np.int64)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), len(y))               # some right, most wrong
    report = classification_report(y, probs)
    model = Sequential(Dense(784, 16, rng=0), Tanh(), Dense(16, 10, rng=1)).eval()
    gradients, targets = input_gradient(model, x[:4])
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 0.5 / e, "val_loss": 1.2 / e,
                "val_accuracy": 1 - 0.6 / e, "lr": 0.1 / e, "time": 0.1} for e in (1, 2, 3)]
    figures = {
        "curves": plots.training_curves(history),
        "confusion": plots.confusion_heatmap(np.array(report["confusion_matrix"])),
        "mistakes": plots.misclassified_grid(x, y, probs),
        "predictions": plots.prediction_grid(x, y, probs),
        "confidence": plots.confidence_histogram(y, probs),
        "reliability": plots.reliability_diagram(report["reliability"], report["ece"]),
        "per_class": plots.per_class_accuracy_bars(report["per_class"], report["accuracy"]),
        "weights": plots.first_layer_weights(model),
        "saliency": plots.saliency_figure(x[:4], y[:4], probs[:4], gradients, targets),
        "compare": plots.compare_curves({"a": history, "b": history[:2]}),
    }
    for name, fig in figures.items():
        width, height = png_size(plots.png_bytes(fig))
        assert 500 <= width <= 2000 and 250 <= height <= 2000, (name, width, height)


def test_plots_skip_what_does_not_apply():
    from barenet.app import plots

    labels = np.array([0, 1, 2])
    assert plots.misclassified_grid(np.zeros((3, 28, 28), np.uint8), labels, np.eye(3)) is None
    not_an_image = Sequential(Dense(10, 4, rng=0))                # 10 inputs: no square picture
    assert plots.first_layer_weights(not_an_image) is None
    assert plots.first_layer_weights(Sequential(Flatten(), Tanh())) is None


def test_first_layer_weights_of_a_conv_net():
    from barenet.app import plots
    from barenet.conv import Conv2D

    fig = plots.first_layer_weights(Sequential(Conv2D(1, 6, 5, rng=0), Flatten()))
    assert fig is not None and "6 kernels" in fig.texts[0].get_text()


# Saliency: the network's own backward pass against centred differences, in float64.

def numerical_input_gradient(model, x, targets, eps=1e-6):
    grad = np.zeros_like(x)
    for n in range(len(x)):
        for idx in np.ndindex(x.shape[1:]):
            hi, lo = x[n:n + 1].copy(), x[n:n + 1].copy()
            hi[(0, *idx)] += eps
            lo[(0, *idx)] -= eps
            t = targets[n]
            grad[(n, *idx)] = (model.forward(hi)[0, t] - model.forward(lo)[0, t]) / (2 * eps)
    return grad


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)


def test_saliency_matches_numerical_gradient_of_mlp_with_batchnorm_and_dropout():
    rng = np.random.default_rng(0)
    f64 = np.float64
    bn = BatchNorm1d(8, dtype=f64)
    bn.running_mean[:] = rng.normal(size=8)                      # eval mode uses these
    bn.running_var[:] = rng.uniform(0.5, 2.0, 8)
    bn.gamma.data[:] = rng.normal(size=8)
    model = Sequential(Dense(16, 8, rng=1, dtype=f64), bn, Tanh(), Dropout(0.5, rng=2),
                       Dense(8, 3, rng=3, dtype=f64))
    model.train()                                                # input_gradient switches
    x = rng.uniform(0, 1, (3, 4, 4))
    gradient, targets = input_gradient(model, x, target=[0, 2, 1])
    assert model.training and gradient.shape == x.shape and gradient.dtype == f64
    assert targets.tolist() == [0, 2, 1]
    model.eval()
    assert relative_error(gradient, numerical_input_gradient(model, x, targets)) < 1e-6


def test_saliency_of_a_conv_net_and_of_the_predicted_class():
    from barenet.conv import BatchNorm2d, Conv2D
    from barenet.pooling import MaxPool2D

    rng = np.random.default_rng(1)
    f64 = np.float64
    bn = BatchNorm2d(2, dtype=f64)
    bn.running_var[:] = [0.5, 2.0]
    model = Sequential(Conv2D(1, 2, 3, rng=0, dtype=f64), bn, Tanh(), MaxPool2D(2), Flatten(),
                       Dense(18, 4, rng=1, dtype=f64)).eval()
    x = rng.uniform(0, 1, (2, 8, 8))
    gradient, targets = input_gradient(model, x)
    assert targets.tolist() == model.forward(x).argmax(axis=1).tolist()
    assert relative_error(gradient, numerical_input_gradient(model, x, targets)) < 1e-6


def test_saliency_map_of_one_uint8_image():
    model = Sequential(Dense(784, 10, rng=0)).eval()
    image = np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)
    s = saliency_map(model, image, 3)
    assert s.shape == (28, 28) and s.dtype == np.float32 and (s >= 0).all()
    # For one Dense layer the gradient of logit 3 is W[:, 3]: no magic in between.
    np.testing.assert_allclose(s.ravel(), np.abs(model.layers[0].W.data[:, 3]))


# The report in a real browser.

def test_report_opens_in_headless_chromium_without_broken_images(run_dir, tmp_path):
    in_ci = bool(os.environ.get("CI"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            raise
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing; CI must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto((run_dir / "report.html").resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate(
                "Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            title = page.title()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(widths) >= 8 and all(w > 0 for w in widths), widths
    assert "barenet report" in title
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("BARENET_SCREENSHOT_DIR")              # to look at it afterwards
    if keep:
        shutil.copy(shot, keep)
