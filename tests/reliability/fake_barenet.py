"""`barenet` on the synthetic digit set: `python fake_barenet.py train --out DIR ...`.

The reliability tests run the real CLI in a child process (so they can kill it, send it
signals, run two at once, limit its memory) without MNIST: this launcher only swaps
`barenet.data.load_dataset` for the tests' synthetic digits, then calls the real entry point.
BARENET_FAKE_N sets the number of training images (default 600).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tests/, for conftest

import barenet.data  # noqa: E402
from conftest import synthetic_digits  # noqa: E402

_DATA = synthetic_digits(n_train=int(os.environ.get("BARENET_FAKE_N", "600")))


def _load(name="mnist", data_dir=None, *, progress=None):
    return _DATA


barenet.data.load_dataset = _load

if __name__ == "__main__":
    import barenet.app.runs
    barenet.app.runs._write_report = lambda out: None            # seconds saved per run
    from barenet.app.cli import run
    sys.argv[0] = "barenet"
    run()
