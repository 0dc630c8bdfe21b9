"""Average and max pooling over (N, C, H, W), forward and backward side by side, with
PyTorch's semantics: stride defaults to the kernel size, output size rounds down,
average pooling counts padded zeros (count_include_pad=True), max pooling pads with
-inf and sends the gradient to the first maximum of each window."""

from __future__ import annotations

from ..backend import device_of, namespace_of
from ..errors import ShapeError
from ._checks import check_float, check_ndim, output_size, pair
from ._windows import crop2d, pad2d, stack_windows, unstack_windows_add


def pool_geometry(x_shape, kernel_size, stride, padding, dilation=1, name="pool"):
    """Normalised (kernel, stride, padding, dilation) pairs and the output size (OH, OW)."""
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding", minimum=0)
    dilation = pair(dilation, "dilation")
    for a in range(2):
        if padding[a] > kernel[a] // 2:
            raise ShapeError(f"padding: must be at most half the kernel size {kernel}, got {padding} (as PyTorch)")
    out_hw = tuple(output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], name) for a in range(2))
    return kernel, stride, padding, dilation, out_hw


def _check(x, name):
    xp = namespace_of(x)
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_float(xp, "x", x)
    return xp


def _is_tiling(kernel, stride, padding, dilation):
    """Non-overlapping, unpadded windows: pooling is a reshape, no window stacking needed."""
    return kernel == stride and padding == (0, 0) and dilation == (1, 1)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """(N, C, H, W) -> (N, C, OH, OW): mean of each window, padded zeros included."""
    xp = _check(x, "avg_pool2d")
    kernel, stride, padding, _, (oh, ow) = pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d")
    n, c = x.shape[:2]
    kh, kw = kernel
    scale = 1.0 / (kh * kw)
    if _is_tiling(kernel, stride, padding, (1, 1)):
        tiles = xp.reshape(x[:, :, : oh * kh, : ow * kw], (n, c, oh, kh, ow, kw))
        return xp.sum(tiles, axis=(3, 5)) * scale
    windows = stack_windows(pad2d(x, padding), kernel, stride, (1, 1), (oh, ow), axis=0)
    return xp.sum(windows, axis=0) * scale


def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0):
    """grad_x (N, C, H, W) of :func:`avg_pool2d` given grad_y (N, C, OH, OW)."""
    xp = _check(x, "avg_pool2d")
    namespace_of(x, grad_y)
    kernel, stride, padding, _, (oh, ow) = pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d")
    n, c, h, w = x.shape
    kh, kw = kernel
    g = grad_y * (1.0 / (kh * kw))
    if _is_tiling(kernel, stride, padding, (1, 1)):
        spread = xp.broadcast_to(xp.reshape(g, (n, c, oh, 1, ow, 1)), (n, c, oh, kh, ow, kw))
        grad_x = xp.reshape(spread, (n, c, oh * kh, ow * kw))
        if (oh * kh, ow * kw) == (h, w):
            return grad_x
        # Rows/columns the floor division dropped get no gradient.
        grad_full = xp.zeros((n, c, h, w), dtype=x.dtype, device=device_of(x))
        grad_full[:, :, : oh * kh, : ow * kw] = grad_x
        return grad_full
    padded_shape = (n, c, h + 2 * padding[0], w + 2 * padding[1])
    grad_xp = unstack_windows_add([g] * (kh * kw), padded_shape, kernel, stride, (1, 1), (oh, ow), like=x)
    return crop2d(grad_xp, padding, (h, w))


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1):
    """y (N, C, OH, OW) and argmax (N, C, OH, OW): the position of each window's first maximum."""
    xp = _check(x, "max_pool2d")
    kernel, stride, padding, dilation, (oh, ow) = pool_geometry(
        x.shape, kernel_size, stride, padding, dilation, name="max_pool2d"
    )
    windows = stack_windows(pad2d(x, padding, value=-float("inf")), kernel, stride, dilation, (oh, ow), axis=4)
    argmax = xp.argmax(windows, axis=4)
    return xp.max(windows, axis=4), argmax


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """(N, C, H, W) -> (N, C, OH, OW): maximum of each window (padding is -inf)."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation)[0]


def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1, argmax=None):
    """grad_x (N, C, H, W) of :func:`max_pool2d`: each window's gradient goes to its first maximum.

    A one-hot mask over the window taps times grad_y, summed back by slices: no scatter."""
    xp = _check(x, "max_pool2d")
    namespace_of(x, grad_y)
    kernel, stride, padding, dilation, (oh, ow) = pool_geometry(
        x.shape, kernel_size, stride, padding, dilation, name="max_pool2d"
    )
    if argmax is None:
        argmax = max_pool2d_forward(x, kernel_size, stride, padding, dilation)[1]
    n, c, h, w = x.shape
    zero = xp.zeros((), dtype=x.dtype, device=device_of(x))
    taps = [xp.where(argmax == k, grad_y, zero) for k in range(kernel[0] * kernel[1])]
    padded_shape = (n, c, h + 2 * padding[0], w + 2 * padding[1])
    grad_xp = unstack_windows_add(taps, padded_shape, kernel, stride, dilation, (oh, ow), like=x)
    return crop2d(grad_xp, padding, (h, w))
