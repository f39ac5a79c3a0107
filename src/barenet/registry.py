"""Every name a config or a model file may use, in one place: layers, activations,
initializers, losses, optimizers and learning-rate schedules.

Adding a layer, an optimizer or a schedule is one line here; config.CHOICES, model files and
`barenet gradcheck` read these tables. Building the pieces a config describes is in build.py.
"""

from __future__ import annotations

from . import optim
from .conv import BatchNorm2d, Conv2D, Dropout2d
from .init import INITIALIZERS  # noqa: F401  (the initializers' table lives beside them)
from .layers import (
    GELU,
    BatchNorm1d,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .losses import mean_squared_error, softmax_cross_entropy
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

# Class name -> class: the "type" of a layer in an architecture (model files, [[model.layers]]).
LAYERS: dict[str, type[Layer]] = {cls.__name__: cls for cls in (
    Dense, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Softmax, Dropout, BatchNorm1d, Flatten,
    Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, BatchNorm2d, Dropout2d)}

# The layers model.activation (and mlp's `activation`) may name.
ACTIVATIONS: dict[str, type[Layer]] = {cls.__name__: cls for cls in (
    ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU)}

# training.loss -> fused (loss, grad) function.
LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": mean_squared_error}

# optimizer.name -> class; each class lists in `options` the [optimizer] keys it takes.
OPTIMIZERS: dict[str, type[optim.Optimizer]] = {
    "sgd": optim.SGD, "rmsprop": optim.RMSprop, "adam": optim.Adam, "adamw": optim.AdamW}

# schedule.name -> class (None: a constant rate); each lists in `options` its arguments, in
# order, as [schedule] keys ("epochs" is training.epochs).
SCHEDULES = {"none": None, "step": optim.StepDecay, "exponential": optim.ExponentialDecay,
             "cosine": optim.CosineWarmup, "onecycle": optim.OneCycle,
             "plateau": optim.ReduceOnPlateau}
