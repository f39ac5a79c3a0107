"""Where a barenet training epoch spends its time: `python -m benchmarks.profile`.

Wraps every layer's forward and backward, the loss and the optimizer step of a real `fit`
run and sums each one's time. With one BLAS thread (the default here) that is CPU time of the
calling thread, which does all the work, so a loaded machine does not inflate it; with more,
wall time. "fit loop" is the rest: batch gathering, uint8 -> float32, bookkeeping.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np


def profile_epochs(optimizer: str = "sgd", dropout: float = 0.0, epochs: int = 2,
                   data=None, clock=time.thread_time) -> tuple[dict[str, float], float, int]:
    """({part: seconds per epoch}, seconds per epoch, batches per epoch) on `clock`."""
    import barenet as bn
    from barenet.training import History, TrainState

    from .mlp import BATCH, barenet_optimizer, build_barenet

    if data is None:
        from barenet.data import load_mnist
        data = load_mnist(progress=False)
    (x, y), _ = data
    model = build_barenet(int(np.prod(x.shape[1:])), dropout=dropout)
    opt = barenet_optimizer(optimizer, model.parameters())
    totals: dict[str, float] = defaultdict(float)

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            start = clock()
            out = fn(*args, **kwargs)
            totals[key] += clock() - start
            return out
        return wrapper

    shapes = []
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        if isinstance(layer, bn.Dense):
            name += f" {layer.n_in}x{layer.n_out}"
        shapes.append(name)
        layer.forward = timed(layer.forward, f"forward  {i} {name}")
    for i, layer in reversed(list(enumerate(model.layers))):
        layer.backward = timed(layer.backward, f"backward {i} {shapes[i]}")
    loss = timed(bn.softmax_cross_entropy, "loss (softmax cross-entropy)")
    opt.step = timed(opt.step, f"optimizer step ({type(opt).__name__})")
    state = TrainState(model, opt, np.random.default_rng(0), History())
    bn.fit(model, loss, opt, x, y, epochs=1, batch_size=BATCH, state=state)   # warm-up
    totals.clear()
    start = clock()
    bn.fit(model, loss, opt, x, y, epochs=1 + epochs, batch_size=BATCH, state=state)
    total = (clock() - start) / epochs
    parts = {k: v / epochs for k, v in totals.items()}
    parts["fit loop (gather, cast, bookkeeping)"] = total - sum(parts.values())
    return parts, total, -(-len(x) // BATCH)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=2, help="profiled epochs after one warm-up")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = p.parse_args(argv)
    from .common import set_threads

    set_threads(args.threads)
    # One thread: CPU time of this thread, immune to other processes. More: wall time (the
    # BLAS workers' share is not on this thread's clock), meaningful on a quiet machine only.
    clock, what = ((time.thread_time, "CPU time") if args.threads == 1
                   else (time.perf_counter, "wall time"))
    parts, total, batches = profile_epochs(args.optimizer, args.dropout, args.epochs,
                                           clock=clock)
    print(f"{what} per epoch, {batches} batches, BLAS threads {args.threads}: {total:.3f} s")
    width = max(len(k) for k in parts)
    for key, seconds in parts.items():
        print(f"  {key:<{width}}  {seconds:7.3f} s  {seconds / total:6.1%}  "
              f"{seconds / batches * 1e6:7.0f} us/batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
