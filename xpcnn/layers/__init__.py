"""Layers: ``from xpcnn import layers; layers.Conv2D(16, 3)``.

One module per family; :mod:`~xpcnn.layers.base` holds the contract a custom layer follows
(docs/layers.md), :mod:`~xpcnn.layers.containers` what Sequential and Residual share and
:mod:`~xpcnn.layers.fused` the fused forms a container swaps in at build.
"""

from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .augment import Normalize, RandomCrop, RandomFlip, RandomTranslation
from .base import LAYERS, Buffer, Layer, Param, inference, layer_from_config, layers_from_config, register
from .containers import Container, Residual
from .conv import Conv2D, Conv2DTranspose
from .core import Dense, Dropout, Flatten
from .normalization import BatchNorm1D, BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

for _cls in (Conv2D, Conv2DTranspose, AvgPool2D, MaxPool2D, GlobalAvgPool2D, Dense, ReLU, LeakyReLU, Tanh, Sigmoid,
             GELU, Flatten, BatchNorm2D, BatchNorm1D, Dropout, Residual, RandomFlip, RandomCrop, RandomTranslation,
             Normalize):
    register(_cls)

__all__ = [
    "Layer", "Param", "Buffer", "Container", "register", "inference", "LAYERS", "layer_from_config",
    "layers_from_config",
    "Conv2D", "Conv2DTranspose", "AvgPool2D", "MaxPool2D", "GlobalAvgPool2D", "Dense", "Flatten", "Dropout",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "BatchNorm1D", "BatchNorm2D", "Residual",
    "RandomFlip", "RandomCrop", "RandomTranslation", "Normalize",
]
