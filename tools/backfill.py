"""Give model files made before December 5 what `barenet train` now stores at the end of a
run: `python tools/backfill.py MODEL.safetensors ...`.

- the training images' subspace (barenet.inputspace), fitted on the run's training images
  after its validation split (same seed);
- with a validation split, the calibrated "not sure" threshold (metrics.calibrated_reject on
  those validation images), as metadata "reject".

Both are computed exactly as a new run of the file's command would, so the file equals what
that run would hold; weights and all other metadata stay as they are. The shipped models in
src/barenet/models/ were completed this way.
"""

from __future__ import annotations

import sys

from barenet.app.common import dataset_of
from barenet.app.runs import seeds_for, split
from barenet.config import from_dict
from barenet.data import load_dataset
from barenet.inputspace import PREFIX, InputSpace
from barenet.metrics import calibrated_reject
from barenet.modelfile import FORMAT_VERSION, save_arrays
from barenet.serialize import load_arrays, load_model


def main(paths: list[str]) -> int:
    for path in paths:
        arrays, meta = load_arrays(path)
        model, _ = load_model(path)
        config = from_dict(meta.get("config") or {})     # with the defaults a run had
        (x, y), _ = load_dataset(dataset_of(meta))
        split_rng, _, _ = seeds_for(config.training.seed)
        (x_train, _), validation = split(x, y, config.data.validation, split_rng)
        space = InputSpace.fit(x_train)
        arrays = {k: v for k, v in arrays.items() if not k.startswith(PREFIX)}
        meta.pop("reject", None)
        meta["format_version"] = FORMAT_VERSION      # a file with input_space arrays
        if validation is not None:
            meta["reject"] = calibrated_reject(validation[1], model.predict_proba(validation[0]))
        save_arrays(path, {**arrays, **space.to_arrays()}, meta)
        print(f"{path}: input space from {len(x_train):,} training images (residual "
              f"threshold {space.threshold:.3f}); reject {meta.get('reject')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
