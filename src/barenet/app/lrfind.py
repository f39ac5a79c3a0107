"""`barenet lr-find`: the learning-rate range test (Smith 2015, fast.ai's lr_find).

Train from a config's fresh network while the learning rate grows exponentially from --start
to --end, one step per mini-batch; record the smoothed loss, stop when it explodes, plot loss
against learning rate and suggest a rate. The config's schedule is ignored: the test is one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np

from ..model import as_input

MIN_STEPS = 100          # one epoch of a small or full-batch set is too few points for a curve


def lr_range_test(model, loss_fn, optimizer, x: np.ndarray, labels: np.ndarray, *,
                  batch_size: int, steps: int, start: float = 1e-6, end: float = 1.0,
                  rng=None, augment=None, diverge: float = 4.0) -> dict:
    """Run the test; returns {'lr', 'loss', 'smoothed'} lists (one entry per step) and 'stopped'.

    Step i uses lr = start * (end / start) ** (i / (steps - 1)). While running, the loss is
    followed by an exponential moving average with bias correction (as Adam corrects its
    moments), averaging over ~4 % of the steps; the test stops early, with 'stopped' set, when
    that average exceeds `diverge` times its best value or a loss is not finite. 'smoothed' is
    the same average run forward and then backward, which removes its lag behind the rate.
    """
    rng = np.random.default_rng(rng)
    n = len(x)
    batch_size = min(batch_size, n)
    order = rng.permutation(n)
    beta = smoothing_factor(steps)
    lrs, losses = [], []
    average, best, stopped, pos = 0.0, math.inf, None, 0
    model.train()
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(steps):
            lr = start * (end / start) ** (i / max(steps - 1, 1))
            if pos + batch_size > n:                    # next pass over the data, reshuffled
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            inputs = as_input(x[idx])
            if augment is not None:
                inputs = augment(inputs, rng)
            logits = model.forward(inputs)
            loss, grad = loss_fn(logits, labels[idx])
            if not math.isfinite(loss):
                stopped = f"the loss became {loss} at learning rate {lr:.3g}"
                break
            model.backward(grad)
            optimizer.lr = lr
            optimizer.step()
            average = beta * average + (1.0 - beta) * loss
            value = average / (1.0 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(loss)
            best = min(best, value)
            if value > diverge * best:
                stopped = (f"the smoothed loss exceeded {diverge:g}x its best at learning "
                           f"rate {lr:.3g}")
                break
    model.eval()
    return {"lr": lrs, "loss": losses, "smoothed": smooth(losses, beta), "stopped": stopped}


def smoothing_factor(steps: int) -> float:
    """EMA factor beta averaging over ~4 % of the steps (1 / (1 - beta) ~ steps / 25), >= 0.5."""
    return 1.0 - 1.0 / max(steps / 25.0, 2.0)


def _ema(values: np.ndarray, beta: float) -> np.ndarray:
    out = np.empty_like(values)
    average = 0.0
    for i, v in enumerate(values):
        average = beta * average + (1.0 - beta) * v
        out[i] = average / (1.0 - beta ** (i + 1))       # bias correction: no pull toward 0
    return out


def smooth(values: list[float], beta: float) -> list[float]:
    """Zero-lag smoothing: a bias-corrected EMA forward, then again backward over the result."""
    if not values:
        return []
    forward = _ema(np.asarray(values, dtype=np.float64), beta)
    return _ema(forward[::-1], beta)[::-1].tolist()


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """Two suggestions: steepest descent of the smoothed loss, and the minimum's rate / 10.

    The steepest point is searched between the first 10 % of the steps (still dominated by the
    average's warm-up) and the minimum (beyond it the loss only rises).
    """
    lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
    if len(lrs) < 3:
        return {"steepest": None, "min_loss": None, "min_loss_over_10": None}
    lowest = int(np.argmin(smoothed))
    skip = len(lrs) // 10
    slope = np.gradient(smoothed, np.log10(lrs))        # d loss / d log10(lr)
    steepest = None
    if lowest - skip >= 2:
        steepest = float(lrs[skip + int(np.argmin(slope[skip:lowest]))])
    return {"steepest": steepest, "min_loss": float(lrs[lowest]),
            "min_loss_over_10": float(lrs[lowest]) / 10.0}


def plot(result: dict, suggestion: dict, path: Path, title: str = "") -> None:
    """Loss (raw, faint; smoothed, bold) against learning rate on a log axis, suggestions marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, smoothed = np.asarray(result["lr"]), np.asarray(result["smoothed"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ax.plot(lrs, result["loss"], color="tab:blue", alpha=0.25, lw=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="tab:blue", lw=2.0, label="smoothed loss")
    ax.set_xscale("log")
    if len(smoothed):
        # Keep the explosion at the end from flattening the interesting part of the curve.
        low, high = float(smoothed.min()), float(max(smoothed[0], smoothed.min()))
        ax.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.25 * (high - low + 1e-3))
    steepest, tenth = suggestion["steepest"], suggestion["min_loss_over_10"]
    if tenth is not None:
        ax.axvline(suggestion["min_loss"], color="gray", ls=":", lw=1.2,
                   label=f"minimum loss at {suggestion['min_loss']:.2g}")
        ax.axvline(tenth, color="tab:green", ls="--", lw=1.2,
                   label=f"minimum / 10 = {tenth:.2g}")
    if steepest is not None:
        y = float(np.interp(np.log10(steepest), np.log10(lrs), smoothed))
        ax.plot([steepest], [y], "o", color="tab:red", ms=9, zorder=5,
                label=f"suggested (steepest descent) = {steepest:.2g}")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning-rate range test")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@click.command("lr-find")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML run configuration (default: the built-in default network).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set optimizer.name=adam (repeatable).")
@click.option("--start", type=float, default=1e-6, show_default=True,
              help="First learning rate.")
@click.option("--end", type=float, default=1.0, show_default=True, help="Last learning rate.")
@click.option("--steps", type=click.IntRange(min=3), default=None,
              help=f"Mini-batch steps (default: one epoch, at least {MIN_STEPS}).")
@click.option("--out", type=click.Path(dir_okay=False), default="lr-find.png",
              show_default=True, help="Where to write the plot (PNG).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the curve and suggestions as JSON.")
def command(config_file, overrides, start, end, steps, out, data_dir, as_json) -> int:
    """Find a learning rate: train while raising it exponentially and plot the loss.

    Uses the config's data, model, optimizer, loss and batch size; its schedule is ignored.
    """
    from ..config import load_config
    from .common import Failure
    from .extras import require
    from .runs import Prepared

    require("plots", "lr-find")                     # the plot is the point: check first
    if not 0 < start < end:
        raise Failure(f"need 0 < --start < --end, got --start {start:g} --end {end:g}")
    config = load_config(config_file, list(overrides))
    run = Prepared(config, data_dir, progress=False)
    n = len(run.x_train)
    batch_size = config.training.batch_size or n
    steps = steps or max(math.ceil(n / batch_size), MIN_STEPS)
    result = lr_range_test(run.model, run.loss, run.optimizer, run.x_train, run.y_train,
                           batch_size=batch_size, steps=steps, start=start, end=end,
                           rng=run.state.rng, augment=run.augment)
    suggestion = suggest(result["lr"], result["smoothed"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = config.description.split(":")[0] if config.description else "default config"
    plot(result, suggestion, out,
         title=f"lr-find: {name} ({config.optimizer.name}, batch {batch_size})")
    if as_json:
        click.echo(json.dumps({**result, **{f"suggested_{k}": v for k, v in suggestion.items()},
                               "plot": str(out)}))
        return 0
    done = len(result["lr"])
    click.echo(f"{done} of {steps} steps, learning rate {start:g} -> "
               f"{result['lr'][-1] if done else start:.3g}"
               + (f"; stopped early: {result['stopped']}" if result["stopped"] else ""))
    if suggestion["steepest"] is not None:
        click.echo(f"suggested learning rate: {suggestion['steepest']:.3g} "
                   f"(steepest descent of the smoothed loss)")
    if suggestion["min_loss"] is not None:
        click.echo(f"minimum smoothed loss at {suggestion['min_loss']:.3g}; "
                   f"a tenth of it: {suggestion['min_loss_over_10']:.3g}")
    else:
        click.echo("too few steps for a suggestion; raise --steps or --end")
    click.echo(f"plot: {out}")
    return 0
