"""Average and max pooling over (N, C, H, W), forward and backward side by side, with
PyTorch's semantics: stride defaults to the kernel size, output size rounds down,
average pooling counts padded zeros (count_include_pad=True), max pooling pads with
-inf and sends the gradient to the first maximum of each window.

Both run over the kh*kw window taps (strided slices) with running sums / maxima: no
window tensor is ever stacked, which keeps memory at one output-sized buffer and is
5-15x faster on NumPy than reducing over a stacked or reshaped window axis.
"""

from __future__ import annotations

from ..errors import ShapeError
from ._checks import check_float, check_grad, check_ndim, namespace, output_size, pair
from ._windows import add_taps, pad2d, taps_of


def pool_geometry(x_shape, kernel_size, stride, padding, dilation=1, name="pool"):
    """Normalised (kernel, stride, padding, dilation) pairs and the output size (OH, OW)."""
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding", minimum=0)
    dilation = pair(dilation, "dilation")
    for a in range(2):
        if padding[a] > kernel[a] // 2:
            raise ShapeError(f"padding: must be at most half the kernel size {kernel}, got {padding} (as PyTorch)")
    out_hw = tuple(output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], f"{name} kernel_size") for a in range(2))
    return kernel, stride, padding, dilation, out_hw


def _check(x, grad_y=None):
    xp = namespace(x=x, grad_y=grad_y, optional=("grad_y",))
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_float(xp, "x", x)
    return xp


def avg_pool2d_kernel(xp, x, geometry):
    """Average pooling math on a checked input; ``geometry`` from :func:`pool_geometry`."""
    kernel, stride, padding, dilation, out_hw = geometry
    taps = taps_of(pad2d(x, padding), kernel, stride, dilation, out_hw)
    total = taps[0]
    for t in taps[1:]:
        total = total + t
    return total * (1.0 / (kernel[0] * kernel[1]))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """(N, C, H, W) -> (N, C, OH, OW): mean of each window, padded zeros included."""
    xp = _check(x)
    return avg_pool2d_kernel(xp, x, pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d"))


def avg_pool2d_backward_kernel(xp, grad_y, x, geometry):
    kernel, stride, padding, dilation, out_hw = geometry
    g = grad_y * (1.0 / (kernel[0] * kernel[1]))
    return add_taps([g] * (kernel[0] * kernel[1]), x, padding, kernel, stride, dilation, out_hw)


def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0):
    """grad_x (N, C, H, W) of :func:`avg_pool2d` given grad_y (N, C, OH, OW)."""
    xp = _check(x, grad_y)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d")
    check_grad(grad_y, "grad_y", x, (*x.shape[:2], *geometry[4]), "x")
    return avg_pool2d_backward_kernel(xp, grad_y, x, geometry)


def max_pool2d_kernel(xp, x, geometry):
    """Max pooling math on a checked input: y and the padded input's taps (for the backward)."""
    kernel, stride, padding, dilation, out_hw = geometry
    taps = taps_of(pad2d(x, padding, value=-float("inf")), kernel, stride, dilation, out_hw)
    # A chain of element-wise maxima: ~15x faster on NumPy than where/argmax over a window axis.
    y = taps[0]
    for t in taps[1:]:
        y = xp.maximum(y, t)
    return y, taps


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1):
    """y (N, C, OH, OW) and what the backward needs (the padded input's taps)."""
    xp = _check(x)
    return max_pool2d_kernel(xp, x, pool_geometry(x.shape, kernel_size, stride, padding, dilation, name="max_pool2d"))


def first_max_masks(xp, taps, y):
    """One float mask per tap, 1 where that tap is its window's *first* maximum (PyTorch's tie rule)."""
    masks, taken = [], None
    for t in taps:
        hit = t == y
        first = hit if taken is None else hit & ~taken
        taken = hit if taken is None else taken | hit
        masks.append(xp.astype(first, y.dtype))
    return masks


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """(N, C, H, W) -> (N, C, OH, OW): maximum of each window (padding is -inf)."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation)[0]


def max_pool2d_backward_kernel(xp, grad_y, x, geometry, y, taps):
    kernel, stride, padding, dilation, out_hw = geometry
    grads = [grad_y * mask for mask in first_max_masks(xp, taps, y)]
    return add_taps(grads, x, padding, kernel, stride, dilation, out_hw)


def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1, y=None, taps=None):
    """grad_x (N, C, H, W) of :func:`max_pool2d`: each window's gradient goes to its first
    maximum (a one-hot mask per tap times grad_y, summed back by slices: no scatter).
    ``y`` and ``taps`` from :func:`max_pool2d_forward` save recomputing them."""
    xp = _check(x, grad_y)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, dilation, name="max_pool2d")
    check_grad(grad_y, "grad_y", x, (*x.shape[:2], *geometry[4]), "x")
    if y is None or taps is None:
        y, taps = max_pool2d_kernel(xp, x, geometry)
    return max_pool2d_backward_kernel(xp, grad_y, x, geometry, y, taps)
