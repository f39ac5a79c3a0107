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
                   data=None, clock=time.thread_time, model_name: str = "mlp",
                   limit: int | None = None) -> tuple[dict[str, float], float, int]:
    """({part: seconds per epoch}, seconds per epoch, batches per epoch) on `clock`.

    model_name: "mlp" (784-256-128-10), "lenet" (the LeNet-like CNN) or "cnn-best" (its
    network, SGD Nesterov as in the suite's cnn-best cases). A conv model trains on every core
    as `fit` does unless BLAS is limited to one thread; then the parts timed are those of the
    calling thread's share of the batch.
    """
    import barenet as bn
    from barenet.training import History, TrainState

    from .mlp import BATCH, barenet_optimizer, build_barenet

    if data is None:
        from barenet.data import load_mnist
        data = load_mnist(progress=False)
    (x, y), _ = data
    if limit:
        x, y = x[:limit], y[:limit]
    if model_name == "cnn-best":
        from . import cnn_best
        model = cnn_best.build_barenet()
        opt = cnn_best.barenet_sgd(model)
    elif model_name == "lenet":
        from . import cnn
        model = cnn.build_barenet()
        opt = bn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
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
        elif hasattr(layer, "out_channels"):
            name += f" {layer.in_channels}->{layer.out_channels}"
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
    p.add_argument("--model", choices=("mlp", "lenet", "cnn-best"), default="mlp")
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    args = p.parse_args(argv)
    from .common import set_threads

    set_threads(args.threads)
    # One thread: CPU time of this thread, immune to other processes. More: wall time (the
    # BLAS workers' or the other parts' share is not on this thread's clock), meaningful on a
    # quiet machine only.
    clock, what = ((time.thread_time, "CPU time") if args.threads == 1
                   else (time.perf_counter, "wall time"))
    parts, total, batches = profile_epochs(args.optimizer, args.dropout, args.epochs,
                                           clock=clock, model_name=args.model,
                                           limit=args.limit)
    print(f"{args.model}: {what} per epoch, {batches} batches, BLAS threads {args.threads}: "
          f"{total:.3f} s")
    width = max(len(k) for k in parts)
    for key, seconds in parts.items():
        print(f"  {key:<{width}}  {seconds:7.3f} s  {seconds / total:6.1%}  "
              f"{seconds / batches * 1e6:7.0f} us/batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
