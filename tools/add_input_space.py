"""Add the training images' subspace (barenet.inputspace) to model files made before runs
stored it: `python tools/add_input_space.py MODEL.safetensors ...`.

It is fitted exactly as `barenet train` now does at the end of a run: on the run's training
images after its validation split (same seed), so the file equals what a new run of its
command would hold. The weights and the metadata are kept as they are. The shipped models in
src/barenet/models/ were given theirs this way (December 5).
"""

from __future__ import annotations

import sys

from barenet.app.common import dataset_of
from barenet.app.runs import seeds_for, split
from barenet.data import load_dataset
from barenet.inputspace import InputSpace
from barenet.modelfile import save_arrays
from barenet.serialize import load_arrays


def main(paths: list[str]) -> int:
    for path in paths:
        arrays, meta = load_arrays(path)
        config = meta.get("config") or {}
        (x, y), _ = load_dataset(dataset_of(meta))
        split_rng, _, _ = seeds_for(int(config.get("training", {}).get("seed", 0)))
        (x_train, _), _ = split(x, y, float(config.get("data", {}).get("validation", 0)),
                                split_rng)
        space = InputSpace.fit(x_train)
        save_arrays(path, {**arrays, **space.to_arrays()}, meta)
        print(f"{path}: {len(x_train):,} training images, residual threshold "
              f"{space.threshold:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
