"""Fused forms: two layers run as one op, swapped in by a container at build time.

:func:`rewrite` returns the list a container runs: the built layers, with each pair that has a
fused form replaced by one layer object that shares the pair's parameter and gradient dicts
(the optimizer, files and interop keep seeing the original layers). The originals keep working
on their own; nothing here reads or writes their saved values.

- Conv2D then AvgPool2D: :mod:`xpcnn.functional.conv_pool` (pooling commutes with the conv's
  matmul), when every pool window averages its full size (:func:`~xpcnn.functional.conv_pool.fuses`).
- Conv2D then BatchNorm2D: in training the two as they are (batch statistics); at inference one
  convolution whose weight and bias are the pair's, folded (:func:`folded_weight_and_bias`).
- ReLU then MaxPool2D: max pooling then ReLU on the pooled values (both monotone, so they commute),
  where the kernels take their fewest-operations forms (a GPU, or :func:`xpcnn.fewest_operations`
  at build): there it saves operations; on a CPU it does not pay.

Why each pays is in docs/performance.md.
"""

from __future__ import annotations

import copy

from ..backend import namespace_of
from ..functional.conv import conv2d_kernel
from ..functional.conv_pool import conv2d_avg_pool2d_backward_kernel, conv2d_avg_pool2d_kernel, fuses
from ..functional.pool import relu_max_pool2d_backward_kernel, relu_max_pool2d_kernel
from .activations import ReLU
from .base import Layer, weight_and_bias
from .conv import Conv2D
from .normalization import BatchNorm2D
from .pooling import AvgPool2D, MaxPool2D


class ConvAvgPool(Layer):
    """``avg_pool2d(conv2d(x))`` for a built Conv2D and the AvgPool2D after it: (N, C, H, W) ->
    (N, out_channels, PH, PW). The conv's full-size output is never made."""

    def __init__(self, conv: Conv2D, pool: AvgPool2D) -> None:
        super().__init__()
        self.params, self.grads = conv.params, conv.grads  # shared: one set of parameters
        self.bias, self.input_shape = conv.bias, conv.input_shape
        self.geometry = (conv.geometry, pool.geometry)

    def forward(self, x, training=False):
        y, pooled = conv2d_avg_pool2d_kernel(namespace_of(x), x, self.params["weight"], self.params.get("bias"),
                                             *self.geometry)
        self.save_for_backward(x, pooled)
        return y

    def backward(self, grad_y):
        x, pooled = self.saved
        grad_x, grad_w, grad_b = conv2d_avg_pool2d_backward_kernel(
            namespace_of(grad_y), grad_y, x, self.params["weight"], *self.geometry, bias=self.bias, pooled=pooled,
            input_grad=self.needs_input_grad)
        weight_and_bias(self, grad_w, grad_b)
        return grad_x


def folded_weight_and_bias(w, b, bn: BatchNorm2D) -> tuple:
    """The weight (out, in / groups, kh, kw) and bias (out,) of ``bn(conv(x))`` at inference as one
    Conv2D, given the convolution's weight ``w`` and bias ``b`` or None (PyTorch's ``fuse_conv_bn_eval``)."""
    xp = namespace_of(w)
    scale = bn.params["weight"] / xp.sqrt(bn.buffers["running_var"] + bn.eps)
    shift = bn.params["bias"] - bn.buffers["running_mean"] * scale
    return w * xp.reshape(scale, (-1, 1, 1, 1)), shift if b is None else b * scale + shift


class ConvBatchNorm(Layer):
    """``bn(conv(x))`` for a built Conv2D and the BatchNorm2D after it: (N, C, H, W) ->
    (N, out_channels, OH, OW). Training runs the pair as it is; inference runs one convolution
    with the normalisation folded in, so the normalised output is never made."""

    def __init__(self, conv: Conv2D, bn: BatchNorm2D) -> None:
        super().__init__()
        self.pair = (conv, bn)
        self.params, self.grads = conv.params, conv.grads
        self.input_shape, self.geometry = conv.input_shape, conv.geometry

    def forward(self, x, training=False):
        conv, bn = self.pair
        if training:
            # Shallow copies of the pair as it is now (a momentum set after build counts): they
            # share its dicts and keep this forward's values, the originals' stay untouched.
            conv, bn = copy.copy(conv), copy.copy(bn)
            self.save_for_backward(conv, bn)
            return bn.forward(conv.forward(x, True), True)
        self.save_for_backward(x)
        w, b = folded_weight_and_bias(conv.params["weight"], conv.params.get("bias"), bn)
        return conv2d_kernel(namespace_of(x), x, w, b, self.geometry, keep_columns=False)[0]

    def backward(self, grad_y):
        saved = self.saved
        if len(saved) == 1:  # after an inference forward: the pair's backward needs its unfolded values
            conv, bn = (copy.copy(layer) for layer in self.pair)
            bn.forward(conv.forward(saved[0], False), False)
        else:
            conv, bn = saved
        conv.needs_input_grad = self.needs_input_grad
        return conv.backward(bn.backward(grad_y))


class ReLUMaxPool(Layer):
    """``max_pool2d(relu(x))`` computed as ``relu(max_pool2d(x))``: (N, C, H, W) -> (N, C, PH, PW)."""

    def __init__(self, relu: ReLU, pool: MaxPool2D) -> None:
        super().__init__()
        self.input_shape, self.geometry = relu.input_shape, pool.geometry

    def forward(self, x, training=False):
        y, pooled, taps = relu_max_pool2d_kernel(namespace_of(x), x, self.geometry)
        self.save_for_backward(x, pooled, taps)
        return y

    def backward(self, grad_y):
        x, pooled, taps = self.saved
        return relu_max_pool2d_backward_kernel(namespace_of(grad_y), grad_y, x, self.geometry, pooled, taps)


def fused_pair(first: Layer, second: Layer, fewest_operations: bool = False) -> Layer | None:
    """The fused form of ``first`` then ``second`` (both built), or None. Only the built-in classes
    themselves fuse: a subclass may change either op."""
    if type(first) is Conv2D and type(second) is AvgPool2D and fuses(second.geometry):
        return ConvAvgPool(first, second)
    if type(first) is Conv2D and type(second) is BatchNorm2D:
        return ConvBatchNorm(first, second)
    if type(first) is ReLU and type(second) is MaxPool2D and fewest_operations:
        return ReLUMaxPool(first, second)
    return None


def rewrite(layers: list[Layer], fewest_operations: bool = False) -> list[Layer]:
    """What a container runs for the built ``layers``: each fusable pair as one layer."""
    out, i = [], 0
    while i < len(layers):
        pair = fused_pair(layers[i], layers[i + 1], fewest_operations) if i + 1 < len(layers) else None
        out.append(layers[i] if pair is None else pair)
        i += 1 if pair is None else 2
    return out
