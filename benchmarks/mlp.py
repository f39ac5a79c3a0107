"""MLP cases: a training epoch (SGD momentum, Adam) and inference on the test set.

Both sides get the same network (784-256-128-10 ReLU, PyTorch's copy starts from barenet's
initial weights), the same uint8 images turned into float32 per batch, batch 128, and the
same bookkeeping per batch (loss and accuracy summed, as barenet's fit logs them). PyTorch
indexes tensors directly, without a DataLoader, and runs its optimizers with their defaults.
"""

from __future__ import annotations

import numpy as np

import barenet as bn
from barenet.training import History, TrainState

from .common import Result, alternate, check, median

HIDDEN = [256, 128]
BATCH = 128


def build_barenet(n_in: int, seed: int = 0, dropout: float = 0.0) -> bn.Sequential:
    return bn.mlp(n_in, HIDDEN, 10, dropout=dropout, rng=seed)


def torch_twin(model: bn.Sequential, torch):
    """The same network in PyTorch, starting from the same weights (W is (in, out) here)."""
    nn = torch.nn
    layers = []
    for layer in model.layers:
        if isinstance(layer, bn.Dense):
            linear = nn.Linear(layer.n_in, layer.n_out, bias=layer.b is not None)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.W.data.T.copy()))
                if layer.b is not None:
                    linear.bias.copy_(torch.from_numpy(layer.b.data.copy()))
            layers.append(linear)
        elif isinstance(layer, bn.ReLU):
            layers.append(nn.ReLU())
        elif isinstance(layer, bn.Dropout):
            layers.append(nn.Dropout(layer.p))
        else:
            raise TypeError(f"no PyTorch twin for {type(layer).__name__}")
    return nn.Sequential(*layers)


def barenet_optimizer(name: str, params):
    if name == "sgd":
        return bn.SGD(params, lr=0.05, momentum=0.9)
    return bn.Adam(params, lr=1e-3)


def torch_optimizer(name: str, params, torch):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.Adam(params, lr=1e-3)


class BarenetTrainer:
    """One more epoch of barenet's own `fit` per call (state carries over, as in a long run)."""

    def __init__(self, model, optimizer, x, y, *, seed=0, schedule=None, validation=None,
                 state=None, augment=None):
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.schedule, self.validation, self.augment = schedule, validation, augment
        self.state = state or TrainState(model, optimizer, np.random.default_rng(seed),
                                         History())

    def epoch(self) -> float:
        bn.fit(self.model, bn.softmax_cross_entropy, self.optimizer, self.x, self.y,
               epochs=self.state.epoch + 1, batch_size=BATCH, state=self.state,
               schedule=self.schedule, validation=self.validation, augment=self.augment)
        return self.state.history.rows[-1]["time"]


class TorchTrainer:
    """The idiomatic PyTorch loop over tensors indexed directly; one epoch per call.

    `lr_at(t)` (fractional epoch -> learning rate) reproduces barenet's per-batch schedules;
    `validation` is evaluated inside the timed epoch, as barenet's fit does.
    """

    def __init__(self, net, optimizer, x, y, torch, *, seed=0, lr_at=None, validation=None,
                 sample_shape=(-1,), augment=None):
        self.torch, self.net, self.optimizer = torch, net, optimizer
        self.augment = augment          # float batch -> augmented float batch, on tensors
        # uint8 (N, D) for an MLP; sample_shape=(1, 28, 28) gives a CNN its (N, C, H, W).
        self.x = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), *sample_shape)))
        self.y = torch.from_numpy(y.astype(np.int64))
        self.generator = torch.Generator().manual_seed(seed)
        self.lr_at, self.epochs_done = lr_at, 0
        self.validation = None
        if validation is not None:
            xv, yv = validation
            self.validation = (torch.from_numpy(np.ascontiguousarray(
                                   xv.reshape(len(xv), *sample_shape))),
                               torch.from_numpy(yv.astype(np.int64)))

    def epoch(self) -> float:
        import time

        torch, net, opt = self.torch, self.net, self.optimizer
        functional = torch.nn.functional
        start = time.perf_counter()
        net.train()
        n = len(self.x)
        n_batches = -(-n // BATCH)
        order = torch.randperm(n, generator=self.generator)
        sum_loss, correct = 0.0, 0
        for b in range(n_batches):
            idx = order[b * BATCH:(b + 1) * BATCH]
            if self.lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = self.lr_at(self.epochs_done + b / n_batches)
            xb = self.x[idx].to(torch.float32).mul_(1.0 / 255.0)
            if self.augment is not None:
                xb = self.augment(xb)
            yb = self.y[idx]
            logits = net(xb)
            loss = functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sum_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        if self.validation is not None:
            self.evaluate(*self.validation)
        self.epochs_done += 1
        return time.perf_counter() - start

    def evaluate(self, x, y) -> float:
        """Accuracy on uint8 tensors (N, D), in one batch, in eval mode."""
        torch = self.torch
        self.net.eval()
        with torch.inference_mode():
            logits = self.net(x.to(torch.float32).mul_(1.0 / 255.0))
            acc = float((logits.argmax(1) == y).float().mean())
        self.net.train()
        return acc


def epoch_case(optimizer: str, data, torch, *, epochs: int, warmup: int = 1,
               limit: int | None = None) -> Result:
    """Seconds per training epoch over the 60,000 training images (or `limit` of them)."""
    (x, y), _ = data
    if limit:
        x, y = x[:limit], y[:limit]
    model = build_barenet(int(np.prod(x.shape[1:])))
    runs = {"barenet": BarenetTrainer(model, barenet_optimizer(optimizer, model.parameters()),
                                      x, y).epoch}
    if torch is not None:   # the twin copies the initial weights (nothing has trained yet)
        net = torch_twin(model, torch)
        runs["torch"] = TorchTrainer(net, torch_optimizer(optimizer, net.parameters(), torch),
                                     x, y, torch).epoch
    samples = alternate(runs, repeats=epochs, warmup=warmup)
    bound = 0.85 if optimizer == "sgd" else 1.0
    what = "SGD momentum 0.9" if optimizer == "sgd" else "Adam"
    result = Result(
        case=f"epoch-{optimizer}",
        what=f"MLP training epoch, {what} ({len(x):,} images, batch {BATCH})",
        unit="s", barenet=median(samples["barenet"]),
        torch=median(samples["torch"]) if "torch" in samples else None,
        target=f"ratio <= {bound}", samples=samples)
    result.ok = check(result.ratio, "<=", bound)
    return result


def inference_case(batch_size: int | None, data, torch, *, repeats: int,
                   warmup: int = 2) -> Result:
    """Images per second classifying the test set: one batch, or batches of `batch_size`.

    Both sides produce the same thing from uint8 images, in eval mode: the predicted label,
    the argmax of the logits (the softmax does not change the order, neither side computes it).
    """
    _, (x_test, _) = data
    n = len(x_test)
    model = build_barenet(int(np.prod(x_test.shape[1:])))
    model.eval()
    step = batch_size or n
    runs = {"barenet": lambda: model.predict(x_test, batch_size=step)}
    if torch is not None:
        net = torch_twin(model, torch).eval()
        xt = torch.from_numpy(np.ascontiguousarray(x_test.reshape(n, -1)))

        def torch_predict():
            with torch.inference_mode():
                out = [net(xt[i:i + step].to(torch.float32).mul_(1.0 / 255.0)).argmax(1)
                       for i in range(0, n, step)]
                torch.cat(out)
        runs["torch"] = torch_predict
    samples = alternate(runs, repeats=repeats, warmup=warmup)
    rate = {k: n / median(v) for k, v in samples.items()}
    label = "one batch of 10,000" if batch_size is None else f"batches of {batch_size}"
    if n != 10_000:
        label = label.replace("10,000", f"{n:,}")
    result = Result(
        case="infer-batch" if batch_size is None else f"infer-{batch_size}",
        what=f"Inference on {n:,} test images, {label}", unit="images/s",
        barenet=rate["barenet"], torch=rate.get("torch"), higher_is_better=True,
        target="ratio >= 1.0" if batch_size is None else "", samples=samples)
    if batch_size is None:
        result.ok = check(result.ratio, ">=", 1.0)
    return result
