"""Named networks for MNIST-sized input (1, 28, 28), returned unbuilt.

``default_cnn``: the network ``xpcnn train`` trains (>= 95% held-out on mnist5k in a few epochs).
``notebook_cnn``: the teaching notebook's network, initialised as the notebook does.
"""

from __future__ import annotations

from .layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .model import Sequential


def default_cnn(num_classes: int = 10) -> Sequential:
    """Conv 3x3 (16) -> ReLU -> MaxPool 2 -> Conv 3x3 (32) -> ReLU -> MaxPool 2 -> Flatten ->
    Dense(num_classes). On (1, 28, 28): 26 -> 13 -> 11 -> 5, so the Dense sees 32*5*5 = 800
    features; 12,810 parameters. He-normal weights, zero biases."""
    return Sequential([
        Conv2D(16, 3), ReLU(), MaxPool2D(2),
        Conv2D(32, 3), ReLU(), MaxPool2D(2),
        Flatten(), Dense(num_classes),
    ])


def notebook_cnn(num_classes: int = 10) -> Sequential:
    """The notebook's network: Conv2D(16, 3, no bias) -> AvgPool2D(2) -> Flatten -> Dense(10),
    softmax in the loss. ``weight_init="notebook"`` draws standard normal / fan_in: kernels
    randn/9 and dense weights randn/2704 (for 28x28 input), bias zero, as the notebook."""
    return Sequential([
        Conv2D(16, 3, bias=False, weight_init="notebook"),
        AvgPool2D(2),
        Flatten(),
        Dense(num_classes, weight_init="notebook"),
    ])


NETWORKS = {"default": default_cnn, "notebook": notebook_cnn}


def get(name: str) -> Sequential:
    """A new unbuilt network by name: "default" or "notebook"."""
    if name not in NETWORKS:
        raise ValueError(f"model: unknown network {name!r}; valid names are {', '.join(NETWORKS)}")
    return NETWORKS[name]()
