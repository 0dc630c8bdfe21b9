"""Pure Array API math: each op's forward with its backward. Every function takes its
namespace from its inputs and returns arrays of the same library, device and dtype."""

from .activation import log_softmax, log_softmax_backward, relu, relu_backward, softmax, softmax_backward
from .conv import conv2d, conv2d_backward, conv2d_forward, conv_transpose2d, conv_transpose2d_backward
from .linear import linear, linear_backward
from .loss import cross_entropy, cross_entropy_backward, cross_entropy_with_grad, one_hot
from .pool import (
    avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_avg_pool2d_backward, max_pool2d, max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "conv2d", "conv2d_forward", "conv2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "relu", "relu_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "linear", "linear_backward",
    "cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad", "one_hot",
]
