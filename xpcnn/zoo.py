"""Named networks for MNIST-sized input (1, 28, 28), returned unbuilt.

``default_cnn``: the network ``xpcnn train`` trains (its accuracy: README).
``notebook_cnn``: the teaching notebook's network, initialised as the notebook does.
``resnet8``: a small residual network with BatchNorm (``xpcnn train --model resnet8``).
"""

from __future__ import annotations

from ._validate import positive_int
from .errors import ArgumentError
from .layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Residual
from .model import Sequential


def default_cnn(num_classes: int = 10) -> Sequential:
    """Conv 3x3 (16) -> ReLU -> MaxPool 2 -> Conv 3x3 (32) -> ReLU -> MaxPool 2 -> Flatten ->
    Dense(num_classes). On (1, 28, 28): 26 -> 13 -> 11 -> 5, so the Dense sees 32*5*5 = 800
    features; 12,810 parameters. He-normal weights, zero biases."""
    return Sequential([
        Conv2D(16, 3), ReLU(), MaxPool2D(2),
        Conv2D(32, 3), ReLU(), MaxPool2D(2),
        Flatten(), Dense(positive_int(num_classes, "num_classes")),
    ])


def notebook_cnn(num_classes: int = 10) -> Sequential:
    """The notebook's network: Conv2D(16, 3, no bias) -> AvgPool2D(2) -> Flatten -> Dense(10),
    softmax in the loss. ``weight_init="notebook"`` draws standard normal / fan_in: kernels
    randn/9 and dense weights randn/2704 (for 28x28 input), bias zero, as the notebook."""
    return Sequential([
        Conv2D(16, 3, bias=False, weight_init="notebook"),
        AvgPool2D(2),
        Flatten(),
        Dense(positive_int(num_classes, "num_classes"), weight_init="notebook"),
    ])


def _stage(in_channels: int, channels: int, stride: int) -> list[Layer]:
    """One residual block then ReLU: conv3x3(stride)-BN-ReLU-conv3x3-BN plus the shortcut, which is
    the identity when the shape is kept and a strided 1x1 conv + BN when it changes."""
    block = [Conv2D(channels, 3, stride=stride, padding=1, bias=False), BatchNorm2D(), ReLU(),
             Conv2D(channels, 3, padding=1, bias=False), BatchNorm2D()]
    shortcut = None if stride == 1 and in_channels == channels else \
        [Conv2D(channels, 1, stride=stride, bias=False), BatchNorm2D()]
    return [Residual(block, shortcut), ReLU()]


def resnet8(num_classes: int = 10) -> Sequential:
    """Conv 3x3 (16, pad 1, no bias) -> BN -> ReLU -> three residual stages of 16, 32, 64 channels
    (the later two with stride 2 and a 1x1 conv + BN shortcut) -> GlobalAvgPool2D ->
    Dense(num_classes). Seven convolutions plus the Dense on the main path. On (1, 28, 28):
    28 -> 28 -> 14 -> 7 -> (64,); 77,754 parameters. He-normal conv weights, BN weight 1 bias 0.
    ``xpcnn.interop.torch_resnet8`` is the same network written in torch."""
    return Sequential([
        Conv2D(16, 3, padding=1, bias=False), BatchNorm2D(), ReLU(),
        *_stage(16, 16, 1), *_stage(16, 32, 2), *_stage(32, 64, 2),
        GlobalAvgPool2D(), Dense(positive_int(num_classes, "num_classes")),
    ])


NETWORKS = {"default": default_cnn, "notebook": notebook_cnn, "resnet8": resnet8}


def get(name: str) -> Sequential:
    """A new unbuilt network by name: "default", "notebook" or "resnet8"."""
    if not isinstance(name, str) or name not in NETWORKS:
        raise ArgumentError(f"model: unknown network {name!r}; expected one of {', '.join(map(repr, NETWORKS))}")
    return NETWORKS[name]()
