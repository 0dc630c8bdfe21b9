"""Batch normalisation over the channel axis: BatchNorm2D (N, C, H, W) and BatchNorm1D (N, F)."""

from __future__ import annotations

import math

from .. import init as initializers
from .._validate import sample_shape
from ..backend import namespace_of
from ..errors import ArgumentError, ShapeError
from ..functional.norm import batch_norm_backward_kernel, batch_norm_kernel
from .base import Buffer, Layer, Param


class BatchNorm(Layer):
    """PyTorch semantics: training mode normalises with the biased batch variance and moves the
    running statistics toward the batch's (the running variance takes the unbiased one);
    inference mode uses the running statistics. Params "weight" (ones), "bias" (zeros); buffers
    "running_mean" (zeros), "running_var" (ones)."""

    layout, ndim = "", 0

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArgumentError(f"{name}: expected a finite real number, got {value!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ArgumentError(f"momentum: expected a value in [0, 1], got {momentum!r}")
        if eps <= 0:
            raise ArgumentError(f"eps: expected a value > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)

    def output_shape(self, input_shape):
        return sample_shape(input_shape, f"{type(self).__name__} input_shape", self.layout, ndim=self.ndim)

    def param_specs(self, input_shape):
        c = input_shape[0]
        return {"weight": Param((c,), initializers.ones, c, c), "bias": Param((c,), initializers.zeros, c, c)}

    def buffer_specs(self, input_shape):
        c = input_shape[0]
        return {"running_mean": Buffer((c,), initializers.zeros), "running_var": Buffer((c,), initializers.ones)}

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def forward(self, x, training=False):
        if training and math.prod(x.shape) == x.shape[1]:
            raise ShapeError(f"x: {type(self).__name__} in training mode needs more than 1 value per channel, "
                             f"got shape {tuple(x.shape)} (as PyTorch); use a batch of 2 or more (an epoch's last "
                             "batch holds N % batch_size samples), or inference mode")
        y, saved, mean, var = batch_norm_kernel(namespace_of(x), x, self.params["weight"], self.params["bias"],
                                                self.buffers["running_mean"], self.buffers["running_var"],
                                                training=training, momentum=self.momentum, eps=self.eps)
        self.buffers["running_mean"], self.buffers["running_var"] = mean, var
        self.save_for_backward(x, saved, training)
        return y

    def backward(self, grad_y):
        x, saved, training = self.saved
        grad_x, self.grads["weight"], self.grads["bias"] = batch_norm_backward_kernel(
            namespace_of(grad_y), grad_y, x, self.params["weight"], saved, training=training, bias=True)
        return grad_x


class BatchNorm2D(BatchNorm):
    """BatchNorm over (N, C, H, W), statistics per channel over N, H, W (``torch.nn.BatchNorm2d``)."""

    layout, ndim = "(C, H, W)", 3


class BatchNorm1D(BatchNorm):
    """BatchNorm over (N, F), statistics per feature over N (``torch.nn.BatchNorm1d``)."""

    layout, ndim = "(F,)", 1
