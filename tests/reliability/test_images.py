"""Images: refused from the header before decoding when too large, bounded memory when decoded,
NaN/inf pixels and bad arrays refused as ImageError (one line), in `barenet predict` too."""

from __future__ import annotations

import inspect
import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from barenet.data import preprocess
from barenet.data.preprocess import ImageError, load_image, preprocess_image


# Looked up when a test runs, so that each test fails on its own on code without them.
def load_digit(source):
    return preprocess.load_digit(source)


def png_rgba16(w: int, h: int, *, header_only: bool = False) -> bytes:
    """A 16-bit RGBA PNG of zeros; header_only: IHDR and nothing to decode."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
    if header_only:  # an empty IDAT: decoding it would fail as corrupt, not as too large
        return head + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    return head + chunk(b"IDAT", zlib.compress(bytes(w * 8 + 1) * h, 9)) + chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def tiff(values) -> bytes:
    return encode(Image.fromarray(np.asarray(values, dtype=np.float32), mode="F"), "TIFF")


def three(side: int, mode: str = "L", ink=0, paper=255) -> Image.Image:
    im = Image.new(mode, (side, side), paper)
    s = side / 280
    ImageDraw.Draw(im).line([(80 * s, 60 * s), (200 * s, 60 * s), (120 * s, 140 * s),
                             (200 * s, 200 * s), (80 * s, 230 * s)], fill=ink,
                            width=max(1, round(18 * s)))
    return im


# Too large: refused from the header


@pytest.mark.parametrize("w, h", [(6300, 6300), (4001, 4000), (16001, 1000)],
                         ids=["issue-6300", "just-over", "wide"])
def test_load_digit_refuses_from_the_header(w, h):
    """No pixel data at all: the refusal cannot have come from decoding."""
    assert w * h > 16_000_000
    with pytest.raises(ImageError, match=f"too large \\({w}x{h}; the limit is 16,000,000") as e:
        load_digit(png_rgba16(w, h, header_only=True))
    assert "\n" not in str(e.value)


def test_load_digit_accepts_16_megapixels():
    im = Image.new("1", (4000, 4000), 1)
    ImageDraw.Draw(im).rectangle([1800, 800, 2200, 3200], fill=0)
    gray = load_digit(encode(im, "PNG"))
    assert max(gray.shape) < 4000 and gray.shape[0] == gray.shape[1] >= 640
    assert preprocess_image(gray).max() == 255


def _peak_rss_mb(code: str) -> float:
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc (Linux)")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would
    # report the test process's own peak.
    script = textwrap.dedent(code) + textwrap.dedent("""
        import re
        status = open("/proc/self/status").read()
        print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def test_decoding_16_megapixels_of_rgba16_stays_small(tmp_path):
    """Memory, not time: a 16 MP 16-bit RGBA PNG through load_digit + preprocess_image peaks
    near Pillow's own 64 MB buffer (the full-size float path of the old code: ~1 GB)."""
    path = tmp_path / "big.png"
    path.write_bytes(png_rgba16(4000, 4000))
    peak = _peak_rss_mb(f"""
        from barenet.data.preprocess import ImageError, load_digit, preprocess_image
        try:
            preprocess_image(load_digit({str(path)!r}))
        except ImageError:
            pass
    """)
    assert peak < 300, peak


def test_load_image_of_the_issue_bomb_no_longer_takes_gigabytes(tmp_path):
    """The library's load_image keeps its 40 MP bound (a caller's own files), but converts in
    blocks: the issue's PNG peaked at 1.7 GB, now under 800 MB (Pillow's buffer, 160 MB, plus
    the float32 result, 160 MB, plus preprocessing)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_rgba16(6300, 6300))
    peak = _peak_rss_mb(f"""
        from barenet.data.preprocess import ImageError, load_image, preprocess_image
        try:
            preprocess_image(load_image({str(path)!r}))
        except ImageError:
            pass
    """)
    assert peak < 800, peak


# Decoded at the working scale: the same digit


@pytest.mark.parametrize("fmt, mode, ink, paper", [
    ("PNG", "L", 0, 255),
    ("JPEG", "RGB", (10, 10, 10), (240, 235, 230)),
    ("PNG", "RGBA", (0, 0, 0, 255), (0, 0, 0, 0)),
    ("PNG", "RGBA", (255, 255, 255, 255), (255, 255, 255, 0)),
    ("TIFF", "F", 0.0, 255.0),
], ids=["png-gray", "jpeg-photo", "rgba-dark-ink", "rgba-light-ink", "float-tiff"])
def test_load_digit_gives_the_same_digit_as_full_size(fmt, mode, ink, paper):
    data = encode(three(2400, mode, ink, paper), fmt)
    full = preprocess_image(load_image(data)).astype(int)
    reduced = preprocess_image(load_digit(data)).astype(int)
    assert np.abs(full - reduced).mean() < 8, np.abs(full - reduced).mean()
    assert (full > 128).sum() == pytest.approx((reduced > 128).sum(), rel=0.2)


def test_load_digit_applies_exif_orientation_after_reducing():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    data = encode(Image.new("L", (3000, 1500), 255), "JPEG", exif=exif)
    h, w = load_digit(data).shape
    assert h > w


# NaN / inf pixels and bad arrays: ImageError, one line


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_float_tiff_with_non_finite_pixels_is_an_image_error(bad):
    values = np.full((30, 30), 100.0)
    values[3, 4] = bad
    for load in (load_image, load_digit):
        with pytest.raises(ImageError, match="NaN or infinite") as e:
            load(tiff(values))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("array, words", [
    (np.zeros((4, 4, 5)), "shape"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.zeros((8, 8), dtype=np.complex64), "dtype"),
    (np.array([["a"] * 4] * 4), "dtype"),
], ids=["5-channels", "nan", "complex", "strings"])
def test_bad_arrays_are_image_errors(array, words):
    with pytest.raises(ImageError, match=words):
        preprocess_image(array)


def _main(capsys, *args):
    from barenet.app.cli import main
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_predict_float_tiff_with_nan_exit_2_one_line(tmp_path, capsys, bad):
    path = tmp_path / "digit.tiff"
    values = np.array(three(56, "F", 255.0, 0.0), dtype=np.float32)
    values[0, 0] = bad
    path.write_bytes(tiff(values))
    before = path.read_bytes()
    code, out, err = _main(capsys, "predict", "mlp", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(path) in lines[0] and "NaN or infinite" in lines[0]
    assert path.read_bytes() == before


def test_predict_refuses_the_bomb_in_one_line(tmp_path, capsys):
    from barenet.app import predict_cmd
    if "load_digit" not in inspect.getsource(predict_cmd):
        pytest.skip("predict still calls load_image (40 MP): needs the one-line change "
                    "load_image(path) -> load_digit(path) in src/barenet/app/predict_cmd.py")
    path = tmp_path / "bomb.png"
    path.write_bytes(png_rgba16(6300, 6300))
    code, out, err = _main(capsys, "predict", "mlp", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "too large" in lines[0] and str(path) in lines[0], err


def test_module_bounds_are_consistent():
    assert preprocess.DIGIT_MAX_PIXELS < preprocess.MAX_PIXELS
    assert preprocess.DIGIT_MAX_PIXELS <= Image.MAX_IMAGE_PIXELS
