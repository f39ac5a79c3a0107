"""The cnn-best network against the same network in PyTorch: training epochs (plain and
augmented), inference on the test set, and what augmentation alone costs per epoch.

The network is `configs/cnn-best.toml`'s, built by barenet's config code (conv5x5(32)-BN-ReLU-
pool-conv5x5(64)-BN-ReLU-pool-1024-256-10, dropout 0.4); PyTorch's copy starts from its
initial weights. Both train with SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.05,
batch 128. The augmented cases give each side its own implementation of the same
augmentation (the config's rotation, scaling, shift and elastic field, bilinear resampling):
barenet's NumPy `Augmenter`, and for PyTorch the usual `affine_grid` + `grid_sample` with a
Gaussian-smoothed displacement field made by two 1-D convolutions. Nothing sets threads:
each library runs with its defaults, as a user's `barenet train --config configs/cnn-best.toml`
does (the suite's --threads option can still set both).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import barenet as bn

from .cnn import torch_twin
from .common import Result, alternate, check, median
from .mlp import BATCH, BarenetTrainer, TorchTrainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn-best.toml"
EPOCH_GOAL = 1.0        # issue 17: barenet / PyTorch seconds per epoch
INFER_GOAL = 1.0        # issue 17: barenet / PyTorch images per second


def load_config():
    from barenet.config import load_config as load

    return load(CONFIG)


def build_barenet(seed: int = 0) -> bn.Sequential:
    from barenet.build import build_model

    return build_model(load_config(), rng=seed)


def barenet_sgd(model):
    return bn.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4)


def torch_sgd(net, torch):
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)


def barenet_augment():
    from barenet.build import build_augment

    return build_augment(load_config())


class TorchAugment:
    """barenet's augmentation written the PyTorch way, on (N, 1, H, W) float tensors.

    Per image: rotation, zoom and shift drawn as barenet draws them, an elastic displacement
    field (uniform noise, Gaussian-smoothed with zero padding, times alpha), then one bilinear
    `grid_sample` with zeros outside. Same work, PyTorch's kernels and threads.
    """

    def __init__(self, config, torch, seed: int = 0):
        self.torch, self.c = torch, config
        self.generator = torch.Generator().manual_seed(seed)
        sigma = config.elastic_sigma
        radius = int(4.0 * sigma + 0.5)
        k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32)
                              / sigma) ** 2)
        self.kernel = (k / k.sum()).reshape(1, 1, 1, -1)     # (1, 1, 1, 2r + 1)
        self.radius = radius

    def _uniform(self, low, high, *shape):
        t = self.torch.rand(*shape, generator=self.generator)
        return t * (high - low) + low

    def __call__(self, x):
        torch, c = self.torch, self.c
        functional = torch.nn.functional
        n, _, h, w = x.shape
        angle = self._uniform(-c.rotate, c.rotate, n) * (math.pi / 180.0)
        zoom = self._uniform(1.0 - c.scale, 1.0 + c.scale, n)
        shift = self._uniform(-c.shift, c.shift, 2, n)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        y = torch.arange(h, dtype=torch.float32)[None, :, None] - (cy + shift[0])[:, None, None]
        xs = torch.arange(w, dtype=torch.float32)[None, None, :] - (cx + shift[1])[:, None, None]
        cs, sn = cos[:, None, None], sin[:, None, None]
        rows = cs * y - sn * xs + cy                                   # (N, H, W)
        cols = sn * y + cs * xs + cx
        if c.elastic_alpha:
            noise = self._uniform(-1.0, 1.0, 2 * n, 1, h, w)
            r = self.radius
            smooth = functional.conv2d(noise, self.kernel, padding=(0, r))      # along W
            smooth = functional.conv2d(smooth, self.kernel.transpose(2, 3), padding=(r, 0))
            smooth = smooth[:, 0] * c.elastic_alpha
            rows = rows + smooth[:n]
            cols = cols + smooth[n:]
        # grid_sample wants (x, y) in [-1, 1]; align_corners=True maps -1/1 to pixel centres.
        grid = torch.stack((cols * (2.0 / (w - 1)) - 1.0, rows * (2.0 / (h - 1)) - 1.0), -1)
        return functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=True)


def epoch_case(data, torch, *, epochs: int, augment: bool, warmup: int = 1,
               limit: int | None = None) -> Result:
    """Seconds per cnn-best training epoch, plain or augmented."""
    (x, y), _ = data
    if limit:
        x, y = x[:limit], y[:limit]
    model = build_barenet()
    runs = {"barenet": BarenetTrainer(model, barenet_sgd(model), x, y,
                                      augment=barenet_augment() if augment else None).epoch}
    if torch is not None:
        net = torch_twin(model, torch)
        augment_fn = TorchAugment(load_config().augment, torch) if augment else None
        runs["torch"] = TorchTrainer(net, torch_sgd(net, torch), x, y, torch,
                                     sample_shape=(1, *x.shape[1:]), augment=augment_fn).epoch
    samples = alternate(runs, repeats=epochs, warmup=warmup)
    what = "augmented (rotation, scale, shift, elastic), " if augment else ""
    result = Result(
        case="epoch-cnn-best-aug" if augment else "epoch-cnn-best",
        what=f"cnn-best network training epoch, {what}SGD Nesterov ({len(x):,} images, "
             f"batch {BATCH})",
        unit="s", barenet=median(samples["barenet"]),
        torch=median(samples["torch"]) if "torch" in samples else None,
        target=f"ratio <= {EPOCH_GOAL}", samples=samples)
    result.ok = check(result.ratio, "<=", EPOCH_GOAL)
    return result


def inference_case(data, torch, *, repeats: int, warmup: int = 1) -> Result:
    """Images per second classifying the test set with cnn-best's network in eval mode.

    barenet's `predict` takes the 10,000 images at once (it bounds memory itself); PyTorch
    runs batches of 1,000 under inference_mode (10,000 at once would hold 740 MB of maps).
    """
    _, (x_test, _) = data
    n = len(x_test)
    model = build_barenet()
    model.eval()
    runs = {"barenet": lambda: model.predict(x_test)}
    if torch is not None:
        net = torch_twin(model, torch).eval()
        xt = torch.from_numpy(np.ascontiguousarray(x_test.reshape(n, 1, *x_test.shape[1:])))

        def torch_predict():
            with torch.inference_mode():
                torch.cat([net(xt[i:i + 1000].to(torch.float32).mul_(1.0 / 255.0)).argmax(1)
                           for i in range(0, n, 1000)])
        runs["torch"] = torch_predict
    samples = alternate(runs, repeats=repeats, warmup=warmup)
    rate = {k: n / median(v) for k, v in samples.items()}
    result = Result(case="infer-cnn-best",
                    what=f"cnn-best network inference on {n:,} test images",
                    unit="images/s", barenet=rate["barenet"], torch=rate.get("torch"),
                    higher_is_better=True, target=f"ratio >= {INFER_GOAL}", samples=samples)
    result.ok = check(result.ratio, ">=", INFER_GOAL)
    return result


def augment_case(data, torch, *, epochs: int, warmup: int = 1,
                 limit: int | None = None) -> Result:
    """Seconds per epoch spent augmenting alone: every batch of 128 of the training set."""
    (x, _), _ = data
    if limit:
        x = x[:limit]
    augmenter = barenet_augment()
    rng = np.random.default_rng(0)
    batches = [(x[i:i + BATCH].astype(np.float32) * np.float32(1 / 255.0))
               for i in range(0, len(x), BATCH)]
    runs = {"barenet": lambda: [augmenter(b, rng) for b in batches]}
    if torch is not None:
        augment = TorchAugment(load_config().augment, torch)
        tensors = [torch.from_numpy(b[:, None]) for b in batches]
        runs["torch"] = lambda: [augment(t) for t in tensors]
    samples = alternate(runs, repeats=epochs, warmup=warmup)
    return Result(case="augment",
                  what=f"augmentation alone, one epoch ({len(x):,} images in batches of "
                       f"{BATCH}; cnn-best's rotation, scale, shift, elastic)",
                  unit="s", barenet=median(samples["barenet"]),
                  torch=median(samples["torch"]) if "torch" in samples else None,
                  samples=samples)
