"""Building what a config describes: the model, optimizer, schedule, loss and augmentation.

Each builder takes a checked config.Config (config.py validates every name against the
tables in registry.py) and looks its names up there, so a new optimizer or schedule needs
no code here.
"""

from __future__ import annotations

from functools import partial

from .losses import softmax_cross_entropy
from .model import Sequential, mlp
from .optim import Optimizer, ReduceOnPlateau, Schedule
from .registry import LOSSES, OPTIMIZERS, SCHEDULES


def build_model(c, n_in: int = 784, n_out: int = 10, rng=None) -> Sequential:
    """The network of [model]: its `layers` tables when given, else an MLP of `hidden` sizes."""
    if c.model.layers:
        return Sequential.from_architecture(list(c.model.layers), rng=rng)
    return mlp(n_in, list(c.model.hidden), n_out, activation=c.model.activation,
               init=c.model.init, dropout=c.model.dropout, batch_norm=c.model.batch_norm,
               rng=rng)


def build_optimizer(c, params) -> Optimizer:
    """The [optimizer] over `params`: lr, the shared decay and clipping, and the keys its
    class lists in `options` (momentum for SGD, betas for Adam, ...)."""
    o = c.optimizer
    cls = OPTIMIZERS[o.name]
    return cls(params, o.lr, weight_decay=o.weight_decay, clip_value=o.clip_value or None,
               clip_norm=o.clip_norm or None, **{key: getattr(o, key) for key in cls.options})


def build_schedule(c) -> tuple[Schedule | None, ReduceOnPlateau | None]:
    """(Schedule or None, ReduceOnPlateau or None): fit takes the two separately."""
    cls = SCHEDULES[c.schedule.name]
    if cls is None:
        return None, None
    args = [c.training.epochs if key == "epochs" else getattr(c.schedule, key)
            for key in cls.options]
    schedule = cls(*args)
    return (None, schedule) if isinstance(schedule, ReduceOnPlateau) else (schedule, None)


def build_loss(c):
    """The (loss, grad) function of training.loss, with label smoothing for cross-entropy."""
    loss = LOSSES[c.training.loss]
    if c.training.label_smoothing and loss is softmax_cross_entropy:
        return partial(loss, label_smoothing=c.training.label_smoothing)
    return loss


def build_augment(c):
    """A callable (batch, rng) -> augmented batch, or None when augmentation is off."""
    if not c.augment.enabled:
        return None
    from .data.augment import Augmenter  # NumPy only, and only when augmentation is on
    return Augmenter(c.augment)
