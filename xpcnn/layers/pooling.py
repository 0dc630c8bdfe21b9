"""Pooling: AvgPool2D, MaxPool2D (PyTorch's semantics, asymmetric padding too) and GlobalAvgPool2D."""

from __future__ import annotations

from .._validate import flag, pair, sample_shape
from ..backend import namespace_of
from ..errors import ShapeError
from ..functional.pool import (
    avg_pool2d_backward_kernel,
    avg_pool2d_kernel,
    max_pool2d_backward_kernel,
    max_pool2d_kernel,
    pool_geometry,
)
from .base import Layer, json_padding, padding_spec


class Pool2D(Layer):
    """What the two windowed pools share: kernel, stride (the kernel by default), padding (an int,
    a pair or ((top, bottom), (left, right))) and ``ceil_mode``."""

    count_include_pad = True

    def __init__(self, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = padding_spec(padding, self.kernel_size, self.stride, (1, 1), strings=False)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")
        pool_geometry((1, 1, *self.largest_input()), self.kernel_size, self.stride, self.padding,
                      name=type(self).__name__, ceil_mode=self.ceil_mode)

    def largest_input(self) -> tuple[int, int]:
        """A size every window fits in: the options are checked at construction on it."""
        return tuple(4 * k for k in self.kernel_size)

    def plan(self, input_shape):
        return pool_geometry((1, *input_shape), self.kernel_size, self.stride, self.padding, name=type(self).__name__,
                             ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, f"{type(self).__name__} input_shape", "(C, H, W)", ndim=3)
        oh, ow = self.plan(input_shape).out_hw
        return (input_shape[0], oh, ow)

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride), padding=json_padding(self.padding),
                    ceil_mode=self.ceil_mode)


class AvgPool2D(Pool2D):
    """Average pooling (N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel size; padded
    zeros count in the average unless ``count_include_pad=False`` (PyTorch's meaning)."""

    def __init__(self, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        self.count_include_pad = flag(count_include_pad, "count_include_pad")
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode)

    def get_config(self):
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def forward(self, x, training=False):
        self.save_for_backward(tuple(x.shape[2:]))  # the backward needs only the input's (H, W)
        return avg_pool2d_kernel(namespace_of(x), x, self.geometry)

    def backward(self, grad_y):
        (size,) = self.saved
        return avg_pool2d_backward_kernel(namespace_of(grad_y), grad_y, size, self.geometry)


class MaxPool2D(Pool2D):
    """Max pooling (N, C, H, W) -> (N, C, OH, OW); padding counts as -inf; ties send the gradient
    to the first maximum."""

    def forward(self, x, training=False):
        y, taps = max_pool2d_kernel(namespace_of(x), x, self.geometry)
        self.save_for_backward(x, y, taps)
        return y

    def backward(self, grad_y):
        x, y, taps = self.saved
        return max_pool2d_backward_kernel(namespace_of(grad_y), grad_y, x, self.geometry, y, taps)


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, "GlobalAvgPool2D input_shape", "(C, H, W)", ndim=3)
        return (input_shape[0],)

    def forward(self, x, training=False):
        if len(x.shape) != 4:
            raise ShapeError(f"x: expected (N, C, H, W), got shape {tuple(x.shape)}")
        self.save_for_backward(tuple(x.shape))
        return namespace_of(x).mean(x, axis=(2, 3))

    def backward(self, grad_y):
        (shape,) = self.saved
        n, c, h, w = shape
        xp = namespace_of(grad_y)
        return xp.broadcast_to(xp.reshape(grad_y / (h * w), (n, c, 1, 1)), shape)
