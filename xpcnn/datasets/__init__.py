"""Datasets on the host: MNIST and CIFAR-10 loaders, image folders, the dataset protocol that
``fit`` accepts (ArrayDataset, NpyDataset, Prefetcher) and a mini-batch index iterator."""

from ..errors import ArgumentError
from . import cifar, mnist
from .batches import check_batch_size, iterate_batches
from .folder import image_folder
from .mnist import preprocess
from .protocol import ArrayDataset, NpyDataset, Prefetcher

SOURCES = (*mnist.SOURCES, "cifar10")


def load_data(source="mnist5k", path=None):
    """``(x_train, y_train), (x_test, y_test)`` of ``source``: "mnist5k" or "mnist" (x uint8
    (N, 28, 28); see :func:`xpcnn.datasets.mnist.load_data`) or "cifar10" (x uint8
    (N, 3, 32, 32) from the official binary version at ``path``; see
    :func:`xpcnn.datasets.cifar.load_data`). y int64 (N,); host NumPy."""
    if source == "cifar10":
        return cifar.load_data(path)
    if not isinstance(source, str) or source not in SOURCES:
        raise ArgumentError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
    return mnist.load_data(source, path)


load_mnist = load_data
to_float_images = preprocess

__all__ = ["ArrayDataset", "NpyDataset", "Prefetcher", "check_batch_size", "image_folder", "iterate_batches",
           "load_data", "load_mnist", "preprocess", "to_float_images"]
