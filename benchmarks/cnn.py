"""The LeNet-like CNN case: one training epoch, barenet against the same network in PyTorch.

conv 1->8 5x5, ReLU, max-pool 2, conv 8->16 5x5, ReLU, max-pool 2, dense 256->128->10, SGD with
momentum 0.9, batch 128, the 60,000 training images. PyTorch's copy starts from barenet's initial
weights (both store conv kernels as (C_out, C_in, kh, kw) and flatten (C, H, W) in that order).
"""

from __future__ import annotations

import numpy as np

import barenet as bn
from barenet.conv import BatchNorm2d, Conv2D
from barenet.pooling import MaxPool2D

from .common import Result, alternate, check, median
from .mlp import BATCH, BarenetTrainer, TorchTrainer

GOAL = 1.0      # issue 17 (issue 6 asked for 1.5): barenet / PyTorch seconds per epoch


def build_barenet(seed: int = 0) -> bn.Sequential:
    return bn.Sequential(
        Conv2D(1, 8, 5, rng=seed), bn.ReLU(), MaxPool2D(2),        # (N, 8, 12, 12)
        Conv2D(8, 16, 5, rng=seed), bn.ReLU(), MaxPool2D(2),       # (N, 16, 4, 4)
        bn.Flatten(), bn.Dense(256, 128, rng=seed), bn.ReLU(), bn.Dense(128, 10, rng=seed))


def torch_twin(model: bn.Sequential, torch):
    nn = torch.nn
    layers = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            twin = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             stride=layer.stride, padding=layer.padding,
                             bias=layer.b is not None)
            weight = layer.W.data
        elif isinstance(layer, bn.Dense):
            twin = nn.Linear(layer.n_in, layer.n_out, bias=layer.b is not None)
            weight = layer.W.data.T
        elif isinstance(layer, (BatchNorm2d, bn.BatchNorm1d)):
            kind = nn.BatchNorm2d if isinstance(layer, BatchNorm2d) else nn.BatchNorm1d
            twin = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            with torch.no_grad():
                twin.weight.copy_(torch.from_numpy(layer.gamma.data.copy()))
                twin.bias.copy_(torch.from_numpy(layer.beta.data.copy()))
                twin.running_mean.copy_(torch.from_numpy(layer.running_mean.copy()))
                twin.running_var.copy_(torch.from_numpy(layer.running_var.copy()))
            layers.append(twin)
            continue
        else:
            twin = {bn.ReLU: nn.ReLU, bn.Flatten: nn.Flatten}.get(type(layer))
            if isinstance(layer, MaxPool2D):
                twin = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
            elif type(layer) is bn.Dropout:
                twin = nn.Dropout(layer.p)
            elif twin is None:
                raise TypeError(f"no PyTorch twin for {type(layer).__name__}")
            else:
                twin = twin()
            layers.append(twin)
            continue
        with torch.no_grad():
            twin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            if layer.b is not None:
                twin.bias.copy_(torch.from_numpy(layer.b.data.copy()))
        layers.append(twin)
    return nn.Sequential(*layers)


def epoch_case(data, torch, *, epochs: int, warmup: int = 1, limit: int | None = None) -> Result:
    """Seconds per LeNet-like training epoch, SGD momentum 0.9, lr 0.05."""
    (x, y), _ = data
    if limit:
        x, y = x[:limit], y[:limit]
    model = build_barenet()
    runs = {"barenet": BarenetTrainer(model, bn.SGD(model.parameters(), lr=0.05, momentum=0.9),
                                      x, y).epoch}
    if torch is not None:
        net = torch_twin(model, torch)
        runs["torch"] = TorchTrainer(net, torch.optim.SGD(net.parameters(), lr=0.05,
                                                          momentum=0.9),
                                     x, y, torch, sample_shape=(1, *x.shape[1:])).epoch
    samples = alternate(runs, repeats=epochs, warmup=warmup)
    result = Result(
        case="epoch-cnn",
        what=f"LeNet-like CNN training epoch, SGD momentum 0.9 ({len(x):,} images, "
             f"batch {BATCH})",
        unit="s", barenet=median(samples["barenet"]),
        torch=median(samples["torch"]) if "torch" in samples else None,
        target=f"ratio <= {GOAL}", samples=samples)
    result.ok = check(result.ratio, "<=", GOAL)
    return result
