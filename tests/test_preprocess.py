"""barenet.data.preprocess: user images -> MNIST-style 28x28 digits, and safe decoding."""

import io
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from barenet.data.preprocess import MAX_PIXELS, ImageError, load_image, preprocess_image


def draw_three(size=280, width=22, ink=0, paper=255, shift=(0, 0), scale=1.0, mode="L"):
    """A "3" of two arcs, drawn in a 280-px design space scaled by size/280 * scale."""
    im = Image.new(mode, (size, size), paper)
    s = scale * size / 280

    def at(x, y):
        return (size / 2 + shift[0] + (x - 140) * s, size / 2 + shift[1] + (y - 140) * s)

    draw = ImageDraw.Draw(im)
    stroke = max(1, round(width * s))
    draw.arc([*at(85, 40), *at(195, 145)], 200, 90, fill=ink, width=stroke)
    draw.arc([*at(80, 135), *at(200, 250)], 270, 160, fill=ink, width=stroke)
    return im


def draw_seven(size=280, width=22, ink=0, paper=255):
    im = Image.new("L", (size, size), paper)
    s = size / 280
    corners = [(70 * s, 50 * s), (210 * s, 50 * s), (120 * s, 240 * s)]
    ImageDraw.Draw(im).line(corners, fill=ink, width=max(1, round(width * s)), joint="curve")
    return im


def center_of_mass(out):
    m = out.astype(np.float64)
    return (np.arange(28) @ m.sum(axis=1) / m.sum(), np.arange(28) @ m.sum(axis=0) / m.sum())


def ink_box(out):
    """(height, width) of the nonzero pixels."""
    rows, cols = np.nonzero(out)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def mnist_like(im):
    """MNIST's own recipe on a dark-on-light drawing: crop, area-resize into 20x20, center."""
    a = 255 - np.asarray(im)
    rows, cols = np.nonzero(a)
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = a.shape
    size = (round(w * 20 / max(h, w)), round(h * 20 / max(h, w)))
    patch = np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX))
    com_row, com_col = (
        np.arange(patch.shape[0]) @ patch.sum(axis=1) / patch.sum(),
        np.arange(patch.shape[1]) @ patch.sum(axis=0) / patch.sum(),
    )
    top, left = round(14 - com_row), round(14 - com_col)
    out = np.zeros((28, 28), dtype=np.uint8)
    out[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return out


def encode(im, fmt, **options):
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def png_header(width, height):
    """A PNG that claims width x height but holds no pixel data: cheap to make, fails to decode."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# preprocess_image


def test_output_is_uint8_28x28_white_on_black():
    out = preprocess_image(np.asarray(draw_three()))
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert out.max() == 255
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: a.astype(np.float64) / 255.0,
        lambda a: a.astype(np.int64),
        lambda a: np.stack([a, a, a], axis=-1),
        lambda a: np.stack([a, a, a, np.full_like(a, 255)], axis=-1),
        lambda a: a[..., None],
    ],
    ids=["float32", "float64", "int64", "rgb", "rgba-opaque", "hw1"],
)
def test_input_dtypes_and_channels_agree(convert):
    a = np.asarray(draw_three())
    np.testing.assert_array_equal(preprocess_image(convert(a)), preprocess_image(a))


def test_large_inputs_are_shrunk_alike_whatever_their_channels():
    a = np.asarray(draw_seven(1000))  # shrunk 2x before the work starts
    expected = preprocess_image(a)
    opaque = np.full_like(a, 255)
    for image in (np.stack([a, a, a], axis=-1), np.stack([a, a, a, opaque], axis=-1), a / 255.0):
        assert np.abs(preprocess_image(image).astype(int) - expected).max() <= 1


def test_dark_on_light_equals_light_on_dark():
    a = np.asarray(draw_three())
    dark_ink, light_ink = preprocess_image(a), preprocess_image(255 - a)
    assert np.abs(dark_ink.astype(int) - light_ink).max() <= 1
    # Other levels than pure black and white: chalk on a board, pencil on grey paper.
    chalk = preprocess_image(np.asarray(draw_three(ink=220, paper=40)))
    pencil = preprocess_image(np.asarray(draw_three(ink=90, paper=200)))
    assert np.abs(chalk.astype(int) - dark_ink).mean() < 3
    assert np.abs(pencil.astype(int) - dark_ink).mean() < 3


@pytest.mark.parametrize(
    "im",
    [
        draw_three(400, scale=0.2, shift=(-130, 120)),  # small, near the bottom-left corner
        draw_three(400, scale=1.3),  # large, centered, nearly touching the edges
        draw_three(60, width=30, scale=0.9),  # a small canvas: the digit is upscaled
        draw_seven(1000, width=8),
    ],
    ids=["small-off-center", "large", "small-canvas", "1000px"],
)
def test_centered_by_mass_and_fit_to_20x20(im):
    out = preprocess_image(np.asarray(im))
    row, col = center_of_mass(out)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    assert max(ink_box(out)) in (19, 20)


def test_small_and_large_versions_agree():
    small = preprocess_image(np.asarray(draw_three(400, width=22, scale=0.4, shift=(90, -70))))
    large = preprocess_image(np.asarray(draw_three(400, width=22, scale=1.2)))
    # Same shape at different sizes; the stroke is relatively thicker in the small one.
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.8


def test_digit_touching_the_image_edges():
    for im in (draw_three(), draw_seven(), draw_three(width=40)):
        a = np.asarray(im)
        rows, cols = np.nonzero(a < 128)
        tight = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # ink on all 4 edges
        np.testing.assert_array_equal(preprocess_image(tight), preprocess_image(a))


def test_aspect_ratio_kept_for_tall_and_wide_strokes():
    one = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(one).line([(150, 30), (150, 270)], fill=0, width=14)
    height, width = ink_box(preprocess_image(np.asarray(one)))
    assert height == 20 and width <= 3  # 240 x 14 -> 20 x 1.2

    dash = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(dash).rectangle([40, 130, 260, 170], fill=0)  # 221 x 41
    height, width = ink_box(preprocess_image(np.asarray(dash)))
    assert width == 20 and height in (4, 5)  # 41 * 20 / 221 = 3.7, plus anti-aliased edges


def test_mnist_like_input_comes_back_nearly_unchanged():
    for im in (draw_three(), draw_seven(), draw_three(width=40), draw_seven(width=10)):
        digit = mnist_like(im)
        out = preprocess_image(digit)
        diff = np.abs(out.astype(int) - digit)
        assert diff.max() <= 10 and diff.mean() < 0.2  # only the faintest edge pixels change


def test_uneven_lighting_on_photographed_paper():
    rng = np.random.default_rng(0)
    h, w = 600, 800
    v, u = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    paper = 0.9 - 0.4 * u - 0.6 * ((u - 0.5) ** 2 + (v - 0.5) ** 2)  # gradient and vignette
    strokes = np.ones((h, w))
    strokes[20:580, 120:680] = np.asarray(draw_three(560, width=18)) / 255.0
    photo = np.clip(paper * (0.3 + 0.7 * strokes) + rng.normal(0.0, 0.02, (h, w)), 0.0, 1.0)
    jpeg = encode(Image.fromarray((photo * 255).astype(np.uint8)), "JPEG", quality=75)

    out = preprocess_image(load_image(jpeg))
    clean = preprocess_image(np.asarray(draw_three(560, width=18)))
    assert np.corrcoef(out.ravel(), clean.ravel())[0, 1] > 0.9
    assert abs(center_of_mass(out)[0] - 14) <= 1 and max(ink_box(out)) == 20


def test_faint_noise_and_a_detached_speck_are_ignored():
    rng = np.random.default_rng(1)
    clean = np.asarray(draw_seven()) / 255.0
    noisy = np.clip(clean + rng.normal(0.0, 0.03, clean.shape), 0.0, 1.0)
    noisy[262:268, 8:14] = 0.0  # a dot of dirt far from the digit
    out, expected = preprocess_image(noisy), preprocess_image(clean)
    assert ink_box(out) == ink_box(expected)
    assert np.abs(out.astype(int) - expected).mean() < 4


def blank_paper_photo():
    """Unevenly lit paper with sensor noise, JPEG-compressed, and nothing written on it."""
    v, u = np.mgrid[0:300, 0:400] / np.array([300.0, 400.0])[:, None, None]
    paper = 0.9 - 0.4 * u - 0.6 * ((u - 0.5) ** 2 + (v - 0.5) ** 2)
    paper = paper + np.random.default_rng(3).normal(0.0, 0.03, paper.shape)
    jpeg = encode(Image.fromarray((np.clip(paper, 0, 1) * 255).astype(np.uint8)), "JPEG")
    return load_image(jpeg)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((50, 50), np.uint8),
        np.full((50, 50), 255, np.uint8),
        np.full((28, 28), 0.5, np.float32),
        np.clip(np.random.default_rng(2).normal(0.8, 0.004, (64, 64)), 0, 1),  # paper, no ink
        np.pad(np.full((3, 3), 0.02), 20),  # far too faint to be ink
        np.zeros((0, 0), np.uint8),
        blank_paper_photo(),
    ],
    ids=["black", "white", "gray", "noise", "faint", "empty", "paper-photo"],
)
def test_blank_image_raises(image):
    with pytest.raises(ImageError, match="^no digit found: the image is blank"):
        preprocess_image(image)


def test_bad_arrays_raise_value_error():
    with pytest.raises(ValueError, match="shape"):
        preprocess_image(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        preprocess_image(np.full((8, 8), np.nan))


def test_transparent_canvas_with_dark_or_light_strokes():
    expected = preprocess_image(np.asarray(draw_three()))
    for ink, hidden in [((0, 0, 0, 255), (0, 0, 0, 0)), ((255, 255, 255, 255), (255, 255, 255, 0))]:
        canvas = draw_three(ink=ink, paper=hidden, mode="RGBA")
        from_array = preprocess_image(np.asarray(canvas))
        from_png = preprocess_image(load_image(encode(canvas, "PNG")))
        np.testing.assert_array_equal(from_array, from_png)
        assert np.abs(from_array.astype(int) - expected).max() <= 1
    # Gray-with-alpha (LA) takes the same path.
    la = draw_three(ink=(0, 255), paper=(0, 0), mode="LA")
    assert np.abs(preprocess_image(load_image(encode(la, "PNG"))).astype(int) - expected).max() <= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    canvas=st.tuples(st.integers(24, 320), st.integers(24, 320)),
    box=st.tuples(*[st.floats(0.0, 1.0)] * 4),
    shape=st.sampled_from(["rectangle", "ellipse", "ring", "line", "cross"]),
    width=st.integers(1, 12),
    low=st.integers(0, 195),
    contrast=st.integers(60, 255),
    dark_ink=st.booleans(),
)
def test_property_any_shape_ends_centered_and_fit(
    canvas, box, shape, width, low, contrast, dark_ink
):
    w, h = canvas
    margin = 2  # the shape stays inside the picture, as a digit does
    x0, x1 = sorted(margin + round(f * (w - 1 - 2 * margin)) for f in box[:2])
    y0, y1 = sorted(margin + round(f * (h - 1 - 2 * margin)) for f in box[2:])
    assume(max(x1 - x0, y1 - y0) >= 2)  # a lone pixel or two is noise, not a digit
    high = min(255, low + contrast)
    paper, ink = (high, low) if dark_ink else (low, high)
    im = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(im)
    if shape == "rectangle":
        draw.rectangle([x0, y0, x1, y1], fill=ink)
    elif shape == "ellipse":
        draw.ellipse([x0, y0, x1, y1], fill=ink)
    elif shape == "ring":
        draw.ellipse([x0, y0, x1, y1], outline=ink, width=width)
    elif shape == "line":
        draw.line([(x0, y0), (x1, y1)], fill=ink, width=width)
    else:
        draw.line([(x0, y0), (x1, y1)], fill=ink, width=width)
        draw.line([(x0, y1), (x1, y0)], fill=ink, width=width)

    pixels = np.asarray(im)
    if pixels.min() == pixels.max():  # Pillow draws nothing for some degenerate boxes
        with pytest.raises(ImageError):
            preprocess_image(pixels)
        return
    out = preprocess_image(pixels)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    row, col = center_of_mass(out)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    assert 18 <= max(ink_box(out)) <= 20


def test_quick_on_a_1000px_image():
    a = np.asarray(draw_three(1000))
    preprocess_image(a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        preprocess_image(a)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0  # about 10 ms when the machine is idle; this only catches a pixel loop


# load_image


def test_load_png_jpeg_and_path(tmp_path):
    im = draw_three()
    expected = np.asarray(im, dtype=np.float32) / 255.0

    from_png = load_image(encode(im, "PNG"))
    assert from_png.dtype == np.float32 and from_png.shape == (280, 280)
    np.testing.assert_allclose(from_png, expected, atol=1e-6)

    from_jpeg = load_image(encode(im.convert("RGB"), "JPEG", quality=90))
    assert from_jpeg.dtype == np.float32 and from_jpeg.shape == (280, 280)
    assert 0.0 <= from_jpeg.min() and from_jpeg.max() <= 1.0
    assert np.abs(from_jpeg - expected).mean() < 0.02

    path = tmp_path / "three.png"
    im.save(path)
    np.testing.assert_array_equal(load_image(path), from_png)
    np.testing.assert_array_equal(load_image(str(path)), from_png)
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), from_png)


def test_load_other_modes():
    three = np.asarray(draw_three()) / 255.0
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    loaded = load_image(encode(Image.fromarray(ramp), "PNG"))  # 16-bit gray
    np.testing.assert_allclose(loaded, ramp / 65535.0, atol=1e-6)

    gif = load_image(encode(draw_three().convert("P"), "GIF"))
    np.testing.assert_allclose(gif, three, atol=1e-6)

    floats = load_image(encode(draw_three().convert("F"), "TIFF"))  # float pixels 0..255
    np.testing.assert_allclose(floats, three, atol=1e-6)

    for mode, fmt in [("CMYK", "JPEG"), ("LAB", "TIFF"), ("1", "BMP")]:
        gray = load_image(encode(draw_three().convert(mode), fmt))
        assert gray.shape == (280, 280) and gray.dtype == np.float32
        assert np.abs(gray - three).mean() < 0.05, mode


def test_load_applies_exif_orientation():
    im = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    assert load_image(encode(im, "JPEG", exif=exif)).shape == (40, 20)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "zero bytes"),
        (b"\x00\x01garbage\xff" * 10, "not an image"),
        (b"Hello, this is a plain text file.\nIt has two lines.\n", "not an image"),
        (encode(draw_three(), "PNG")[:300], "corrupt"),  # truncated
    ],
    ids=["empty", "garbage", "text", "truncated"],
)
def test_load_refuses_bad_bytes_in_one_line(data, message, tmp_path):
    for source in (data, tmp_path / "input.png"):
        if not isinstance(source, bytes):
            source.write_bytes(data)
        with pytest.raises(ImageError, match=message) as caught:
            load_image(source)
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, ValueError)


def test_load_missing_file(tmp_path):
    with pytest.raises(ImageError, match="No such file") as caught:
        load_image(tmp_path / "nope.png")
    assert "\n" not in str(caught.value)


def test_load_rejects_other_types():
    with pytest.raises(TypeError):
        load_image(np.zeros((4, 4)))


@pytest.mark.parametrize(
    "side",
    [8000, 10_000, 20_000],  # our limit; Pillow's warning range; Pillow's error range
)
def test_load_refuses_huge_images_from_the_header(side):
    assert side * side > MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may leak
        with pytest.raises(ImageError, match="too large") as caught:
            load_image(png_header(side, side))  # decoding it would fail differently
    assert "\n" not in str(caught.value)


def test_load_accepts_a_large_image_under_the_limit():
    im = Image.new("1", (6000, 6000), 1)  # 36 MP, compresses to a few kB
    ImageDraw.Draw(im).rectangle([2000, 1000, 4000, 5000], fill=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray = load_image(encode(im, "PNG"))
    assert gray.shape == (6000, 6000)
    out = preprocess_image(gray)
    assert ink_box(out)[0] == 20


def test_load_from_many_threads_leaves_warning_filters_alone():
    inputs = [encode(draw_three(), "PNG"), png_header(10_000, 10_000), b"junk"]
    before = list(warnings.filters)

    def load(i):
        try:
            return load_image(inputs[i % 3]).shape
        except ImageError:
            return None

    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(load, range(48)))
    assert shapes.count((280, 280)) == 16
    assert warnings.filters == before
