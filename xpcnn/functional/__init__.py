"""Pure Array API math: each op's forward with its backward. Every function takes its
namespace from its inputs and returns arrays of the same library, device and dtype.

Each public op validates its arguments, then calls a ``*_kernel(xp, ...)`` twin in its module
that does the math; layers compute the geometry once at build (``conv.conv2d_geometry``,
``conv.conv_transpose2d_geometry``, ``pool.pool_geometry``) and call the kernels directly."""

from .activation import (
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .conv import conv2d, conv2d_backward, conv2d_forward, conv_transpose2d, conv_transpose2d_backward
from .dropout import dropout, dropout_backward, dropout_mask
from .linear import linear, linear_backward
from .loss import cross_entropy, cross_entropy_backward, cross_entropy_with_grad, one_hot
from .norm import batch_norm, batch_norm_backward
from .pool import (
    WindowArgmax,
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool_method,
)

__all__ = [
    "conv2d", "conv2d_forward", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "max_pool_method", "WindowArgmax", "global_avg_pool2d", "global_avg_pool2d_backward",
    "relu", "relu_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "leaky_relu", "leaky_relu_backward",
    "gelu", "gelu_backward",
    "batch_norm", "batch_norm_backward",
    "dropout", "dropout_backward", "dropout_mask",
    "linear", "linear_backward",
    "cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad", "one_hot",
]
