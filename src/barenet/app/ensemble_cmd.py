"""`barenet ensemble RUN [RUN ...] [--tta VIEWS] --out DIR`: average trained models (and, with
--tta, each model's predictions on a few fixed views of every image) into one model file."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("ensemble")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for model.safetensors and metrics.json.")
@click.option("--tta", type=click.Choice(["none", "flip", "shift", "flip-shift"]),
              default="none", show_default=True,
              help="Test-time augmentation: also average over each image's left-right mirror "
                   "(flip, for garments), its four one-pixel shifts (shift), or both and the "
                   "mirror's shifts (flip-shift, 10 views).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(runs, out, tta, data_dir):
    """Average the probabilities of RUNS (run directories or model files) into one model.

    With --tta a single run is enough: the model averages over views of each image.
    """
    import numpy as np

    from ..data import load_dataset
    from ..ensemble import TTA_PRESETS, Ensemble, save_ensemble
    from ..serialize import load_model
    from ..training import evaluate
    from .common import Failure, dataset_of, resolve_model_path
    from .runs import MODEL_FILE, write_json

    if len(runs) < 2 and tta == "none":
        raise Failure("an ensemble needs at least two runs (or one run with --tta)")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise Failure(f"--out {out_dir} is a file, not a directory")
    if (out_dir / MODEL_FILE).exists():
        raise Failure(f"{out_dir} already holds a model; choose another --out")
    members, sources, datasets = [], [], []
    for run in runs:
        path = resolve_model_path(run)
        model, meta = load_model(path)
        if not hasattr(model, "layers"):
            raise Failure(f"{run}: is itself an ensemble; give the member runs instead")
        members.append(model)
        sources.append(str(path))
        datasets.append(dataset_of(meta))
    if len(set(datasets)) > 1:
        raise Failure(f"the runs were trained on different datasets: {', '.join(datasets)}")
    dataset = datasets[0]
    _, (x_test, y_test) = load_dataset(dataset, data_dir)

    start = time.perf_counter()
    views = TTA_PRESETS[tta]
    ensemble = Ensemble(members, views=views)
    ensemble.input_space = members[0].input_space       # the same dataset's training images
    member_accuracy = [float(np.mean(m.predict(x_test) == y_test)) for m in members]
    test = evaluate(ensemble, x_test, y_test)
    metrics = {
        "dataset": dataset,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "views": views,
        "members": [{"model": s, "test_accuracy": a} for s, a in zip(sources, member_accuracy)],
        "evaluate_seconds": round(time.perf_counter() - start, 3),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_ensemble(out_dir / MODEL_FILE, ensemble, config={"data": {"dataset": dataset}},
                  members=sources,
                  metrics={k: metrics[k] for k in ("test_accuracy", "test_loss", "dataset")})
    write_json(out_dir / "metrics.json", metrics)
    best = max(member_accuracy)
    seen = "" if tta == "none" else f" x {len(views)} views ({tta})"
    click.echo(f"ensemble of {len(members)}{seen}: test accuracy {test['accuracy']:.4f} "
               f"(best member {best:.4f}, mean {np.mean(member_accuracy):.4f}, one view each)")
    click.echo(f"saved {out_dir / MODEL_FILE}, metrics.json")
    return 0
