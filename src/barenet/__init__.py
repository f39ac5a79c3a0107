"""barenet: neural networks from scratch in NumPy. Public names only."""

__version__ = "0.1.0"

from .conv import BatchNorm2d, Conv2D, Dropout2d
from .ensemble import Ensemble
from .layers import (
    GELU,
    BatchNorm1d,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    Parameter,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .losses import mean_squared_error, softmax_cross_entropy
from .model import Sequential, mlp
from .optim import (
    SGD,
    Adam,
    AdamW,
    CosineWarmup,
    ExponentialDecay,
    OneCycle,
    ReduceOnPlateau,
    RMSprop,
    StepDecay,
)
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .serialize import load_model, save_model
from .training import (
    Callback,
    EarlyStopping,
    History,
    evaluate,
    fit,
    split_validation,
    train_step,
)

__all__ = [
    "AvgPool2D", "BatchNorm2d", "Conv2D", "Dropout2d", "Ensemble", "GlobalAvgPool2D",
    "MaxPool2D", "GELU", "SGD", "Adam", "AdamW", "BatchNorm1d", "Callback", "CosineWarmup", "Dense",
    "Dropout", "EarlyStopping", "ExponentialDecay", "Flatten", "History", "Layer", "LeakyReLU",
    "OneCycle", "Parameter", "RMSprop", "ReLU", "ReduceOnPlateau", "Sequential", "SiLU",
    "Sigmoid", "Softmax", "StepDecay", "Tanh", "evaluate", "fit", "load_model",
    "mean_squared_error", "mlp", "save_model", "softmax_cross_entropy", "split_validation",
    "train_step", "__version__",
]
