"""Datasets on the host: MNIST loaders and a mini-batch index iterator."""

from .batches import check_batch_size, iterate_batches
from .mnist import load_data, preprocess

load_mnist = load_data
to_float_images = preprocess

__all__ = [
    "check_batch_size",
    "iterate_batches",
    "load_data",
    "load_mnist",
    "preprocess",
    "to_float_images",
]
