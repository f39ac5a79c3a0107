"""Data sets as uint8 arrays, verified by SHA-256 and cached: MNIST and Fashion-MNIST."""

from barenet.data.errors import DataError
from barenet.data.idx import parse_idx
from barenet.data.mnist import (
    CLASS_NAMES,
    class_names,
    default_data_dir,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
)

__all__ = [
    "CLASS_NAMES",
    "DataError",
    "class_names",
    "default_data_dir",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "parse_idx",
]
