"""Average, max and global average pooling over (N, C, H, W), forward and backward side by
side, with PyTorch's semantics: stride defaults to the kernel size; the output size rounds
down, or up with ``ceil_mode`` (the last window must start inside the input or the left
padding); average pooling counts padded zeros unless ``count_include_pad=False``, and a
window running past the padding (``ceil_mode``) is averaged over its part inside it; max
pooling pads with -inf and sends the gradient to the first maximum of each window.

Average pooling is separable and linear: two matmuls by averaging matrices, forward and
backward. Max pooling reads the kh*kw window taps (strided slices), in one of two forms
(:func:`max_pool_method`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from .._validate import Padding, check_float, check_grad, check_ndim, conv_padding, flag, is_integral, namespace, pair
from ..backend import constant, device_of, fewest_operations_for
from ..errors import ArgumentError, ArgumentTypeError, ShapeError
from ._windows import add_taps, pad2d, place2d, taps_of
from .activation import relu_backward_kernel, relu_kernel, zero_like


class PoolGeometry(NamedTuple):
    """What the pool kernels need, fixed once per input shape. ``padding`` is the padded
    input's ((top, bottom), (left, right)): bottom/right grow past the requested padding when
    a ``ceil_mode`` window runs over. ``divisor`` is None when every average divides by
    kh*kw, else (rows per output row, columns per output column) of each window's count.
    ``out_hw`` is last so ``*_, (oh, ow) = pool_geometry(...)`` reads the output size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: Padding
    dilation: tuple[int, int]
    divisor: tuple[tuple[int, ...], tuple[int, ...]] | None
    out_hw: tuple[int, int]


def _pool_size(size, kernel, stride, before, after, dilation, ceil_mode, name) -> int:
    """PyTorch's pooling_output_shape with ``before`` + ``after`` padding: floor or ceil of
    (size + before + after - d(k-1) - 1) / s, plus one, minus the last window when
    ``ceil_mode`` would start it in the right (bottom) padding."""
    span = dilation * (kernel - 1) + 1
    out = (size + before + after - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    if out < 1:
        pads = f"2*padding {before}" if before == after else f"padding {before} + {after}"
        raise ShapeError(f"{name}: kernel_size {kernel} (dilation {dilation}, extent {span}) is larger than the "
                         f"padded input {size + before + after} (size {size} + {pads})")
    return out


def _counts(size, out, kernel, stride, before, after, include_pad) -> tuple[int, ...]:
    """How many rows (or columns) each window averages over, as PyTorch's avg_pool2d: the
    window clipped to the padded input, or to the input alone without ``include_pad``."""
    counts = []
    for o in range(out):
        start = o * stride - before
        end = min(start + kernel, size + after)
        counts.append(end - start if include_pad else min(end, size) - max(start, 0))
    return tuple(counts)


def pool_geometry(x_shape, kernel_size, stride=None, padding=0, dilation=1, name="pool", *, ceil_mode=False,
                  count_include_pad=True) -> PoolGeometry:
    """Normalised options and the output size (OH, OW) of a pool over x (N, C, H, W); validates.
    ``padding``: an int, an (h, w) pair or ((top, bottom), (left, right)), each side at most
    half the kernel (as PyTorch); asymmetric padding pools as ``torch.nn.functional.pad`` then
    the pool, except that with ``ceil_mode`` no window starts in the bottom/right padding."""
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    pad = conv_padding(padding, kernel, stride, dilation, strings=False)
    ceil_mode = flag(ceil_mode, "ceil_mode")
    count_include_pad = flag(count_include_pad, "count_include_pad")
    if any(p > k // 2 for sides, k in zip(pad, kernel) for p in sides):
        raise ShapeError(f"padding: each side must be at most half the kernel size {kernel}, got {pad} (as PyTorch)")
    sizes = tuple(x_shape[2:4])
    out_hw = tuple(_pool_size(sizes[a], kernel[a], stride[a], *pad[a], dilation[a], ceil_mode, f"{name} kernel_size")
                   for a in range(2))
    # The last window's far edge, so that every tap slice stays inside the padded input.
    ends = tuple((out_hw[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
    padded = tuple((pad[a][0], max(pad[a][1], ends[a] - sizes[a] - pad[a][0])) for a in range(2))
    divisor = None
    # Only a ceil_mode window past the padding, or padding left out of the count, averages
    # over fewer than kh*kw cells.
    if ceil_mode or (not count_include_pad and any(p for sides in pad for p in sides)):
        counts = tuple(_counts(sizes[a], out_hw[a], kernel[a], stride[a], *pad[a], count_include_pad) for a in range(2))
        if any(c != kernel[a] for a in range(2) for c in counts[a]):
            divisor = counts
    return PoolGeometry(kernel, stride, padded, dilation, divisor, out_hw)


def _check(x, grad_y=None):
    xp = namespace(x=x, grad_y=grad_y, optional=("grad_y",))
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_float(xp, "x", x)
    return xp


# ---------------------------------------------------------------- average


# y = A_h^T x A_w with A_w (W, OW) holding 1/count where input column j falls in window o, and
# A_h likewise for rows; the backward is the adjoint, A_h grad_y A_w^T. Padding needs no padded
# copy: padded cells are zeros and simply have no row in A. The matrices are built from Python
# numbers (exact) once per geometry, dtype and device.


def _averaging_matrix(size: int, out: int, kernel: int, stride: int, before: int, divisors) -> list[list[float]]:
    """(size, out): 1 / divisor[o] where input index i lies in window o (padded coordinates)."""
    return [[1.0 / divisors[o] if o * stride <= i + before < o * stride + kernel else 0.0 for o in range(out)]
            for i in range(size)]


@functools.lru_cache(maxsize=256)
def averaging_lists(geometry: PoolGeometry, size: tuple[int, int]) -> tuple:
    """(A_h^T, A_w) as Python lists for an input of ``size`` (H, W)."""
    divisors = geometry.divisor or tuple((k,) * o for k, o in zip(geometry.kernel, geometry.out_hw))
    rows, cols = (_averaging_matrix(size[a], geometry.out_hw[a], geometry.kernel[a], geometry.stride[a],
                                    geometry.padding[a][0], divisors[a]) for a in range(2))
    return [list(r) for r in zip(*rows)], cols


def averaging(xp, geometry: PoolGeometry, like, size: tuple[int, int]):
    """(A_h^T (OH, H), A_w (W, OW)) for an input of ``size`` (H, W), as arrays of ``like``'s dtype
    and device, kept per backend, dtype and device (:func:`xpcnn.backend.constant`)."""
    lists = averaging_lists(geometry, tuple(size))
    return constant(xp, like, ("averaging", geometry, tuple(size)),
                    lambda xp, dtype, device: tuple(xp.asarray(m, dtype=dtype, device=device) for m in lists))


def avg_pool2d_kernel(xp, x, geometry: PoolGeometry):
    """Average pooling math on a checked input; ``geometry`` from :func:`pool_geometry`."""
    a_h_t, a_w = averaging(xp, geometry, x, tuple(x.shape[2:]))
    return xp.matmul(a_h_t, xp.matmul(x, a_w))


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False, count_include_pad=True):
    """(N, C, H, W) -> (N, C, OH, OW): mean of each window (as ``torch.nn.functional.avg_pool2d``);
    ``padding`` an int, (ph, pw) or ((top, bottom), (left, right)) (see :func:`pool_geometry`)."""
    xp = _check(x)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d", ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad)
    return avg_pool2d_kernel(xp, x, geometry)


def avg_pool2d_backward_kernel(xp, grad_y, size: tuple[int, int], geometry: PoolGeometry):
    """grad_x (N, C, H, W) for an input of ``size`` (H, W), given grad_y (N, C, OH, OW)."""
    a_h_t, a_w = averaging(xp, geometry, grad_y, tuple(size))
    return xp.matmul(xp.matrix_transpose(a_h_t), xp.matmul(grad_y, xp.matrix_transpose(a_w)))


def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, *, ceil_mode=False, count_include_pad=True):
    """grad_x (N, C, H, W) of :func:`avg_pool2d` given grad_y (N, C, OH, OW)."""
    xp = _check(x, grad_y)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, name="avg_pool2d", ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad)
    check_grad(grad_y, "grad_y", x, (*x.shape[:2], *geometry.out_hw), "x")
    return avg_pool2d_backward_kernel(xp, grad_y, tuple(x.shape[2:]), geometry)


# ---------------------------------------------------------------- max


class WindowArgmax(NamedTuple):
    """What the ``"argmax"`` max-pool backward needs: each window's first maximum, (N, C, OH, OW)
    integers, as its tap index in row-major kernel order plus ``first``; a window whose index
    is below ``first`` sends no gradient (ReLU then max pooling puts a zero before the taps)."""

    index: Any
    first: int = 0


MAX_POOL_METHODS = ("taps", "argmax")


def max_pool_method(x, method: str | None = None) -> str:
    """How max pooling of ``x`` finds each window's first maximum: ``"taps"`` (a running maximum
    over the kh*kw strided taps; the backward four element-wise operations per tap) or
    ``"argmax"`` (the taps stacked once, one max and one argmax; the backward a one-hot select:
    the same few operations whatever the window). ``None`` chooses by device
    (:func:`xpcnn.backend.fewest_operations_for`): ``"argmax"`` on a GPU, where each operation
    is a kernel launch; ``"taps"`` on a CPU, where it is faster (argmax along a short axis runs
    window by window). See docs/performance.md."""
    if method is None:
        return "argmax" if fewest_operations_for(x) else "taps"
    if method not in MAX_POOL_METHODS:
        raise ArgumentError(f"method: expected one of {MAX_POOL_METHODS} or None (by library), got {method!r}")
    return method


def _padded_taps(xp, x, geometry: PoolGeometry) -> list:
    """The kh*kw window taps of x padded with -inf, each (N, C, OH, OW)."""
    return taps_of(pad2d(xp, x, geometry.padding, value=-float("inf")), geometry.kernel, geometry.stride,
                   geometry.dilation, geometry.out_hw)


def _window_argmax(xp, taps: list, first: int):
    """(max, :class:`WindowArgmax`) over the taps stacked on a last axis, the first of them at
    position ``first``."""
    windows = xp.stack(taps, axis=-1)  # (N, C, OH, OW, first + kh*kw)
    return xp.max(windows, axis=-1), WindowArgmax(xp.argmax(windows, axis=-1), first)


def max_pool2d_kernel(xp, x, geometry: PoolGeometry, method: str | None = None):
    """Max pooling math on a checked input: y and what the backward needs (the padded input's
    taps, or a :class:`WindowArgmax`; see :func:`max_pool_method`)."""
    taps = _padded_taps(xp, x, geometry)
    if max_pool_method(x, method) == "argmax":
        return _window_argmax(xp, taps, first=0)
    y = taps[0]
    for t in taps[1:]:
        y = xp.maximum(y, t)
    return y, taps


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False, method=None):
    """y (N, C, OH, OW) and what the backward needs (the padded input's taps, or with
    ``method="argmax"`` each window's first maximum; ``method`` as :func:`max_pool_method`)."""
    xp = _check(x)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, dilation, name="max_pool2d", ceil_mode=ceil_mode)
    return max_pool2d_kernel(xp, x, geometry, method)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False):
    """(N, C, H, W) -> (N, C, OH, OW): maximum of each window (padding is -inf), as
    ``torch.nn.functional.max_pool2d``; ``padding`` an int, (ph, pw) or ((top, bottom), (left,
    right)) (see :func:`pool_geometry`)."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)[0]


def max_pool2d_backward_kernel(xp, grad_y, x, geometry: PoolGeometry, y, saved):
    """Each window's gradient goes to its first maximum (PyTorch's tie rule). ``saved`` is what
    :func:`max_pool2d_kernel` returned beside y: the taps, or a :class:`WindowArgmax`.

    With taps, walking them in kernel order, a tap equal to its window's maximum takes the
    gradient still left there (exactly all of it, times 1.0) and leaves exactly zero for later
    ties: four element-wise ops per tap. That holds for a finite grad_y; an Inf or NaN one
    spreads NaN over its window (PyTorch and the argmax form give it to the maximum alone). A
    window of -inf values only (padding included) sends its gradient to its first tap, which
    may be padding, where it is dropped (PyTorch gives it to an input cell)."""
    if isinstance(saved, WindowArgmax):
        return _argmax_backward(xp, grad_y, x, geometry, saved)
    grads, rest = [], grad_y
    for i, t in enumerate(saved):
        taken = rest * xp.astype(t == y, rest.dtype)
        grads.append(taken)
        if i + 1 < len(saved):
            rest = rest - taken
    return add_taps(xp, grads, tuple(x.shape[2:]), geometry.padding, geometry.kernel, geometry.stride,
                    geometry.dilation, geometry.out_hw)


def _argmax_backward(xp, grad_y, x, geometry: PoolGeometry, argmax: WindowArgmax):
    """grad_x from each window's first maximum: a one-hot over the window axis selects where
    grad_y goes (a select, not a product: no dtype conversion), then the windows go back to
    the input's positions."""
    (kh, kw), count = geometry.kernel, geometry.kernel[0] * geometry.kernel[1]
    index, first = argmax
    taps = constant(xp, index, ("arange", first, count),
                    lambda xp, dtype, device: xp.arange(first, first + count, dtype=dtype, device=device))
    windows = xp.where(index[..., None] == taps, grad_y[..., None], zero_like(xp, grad_y))  # (N, C, OH, OW, kh*kw)
    size = tuple(x.shape[2:])
    if geometry.stride == geometry.kernel and geometry.dilation == (1, 1):
        # The windows tile the padded input: putting them back is one transpose-copy.
        n, c, oh, ow = grad_y.shape
        block = xp.permute_dims(xp.reshape(windows, (n, c, oh, ow, kh, kw)), (0, 1, 2, 4, 3, 5))
        return place2d(xp, xp.reshape(block, (n, c, oh * kh, ow * kw)), geometry.padding, size)
    return add_taps(xp, [windows[..., k] for k in range(count)], size, geometry.padding, geometry.kernel,
                    geometry.stride, geometry.dilation, geometry.out_hw)


def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1, y=None, taps=None, *,
                        ceil_mode=False, method=None):
    """grad_x (N, C, H, W) of :func:`max_pool2d`: each window's gradient goes to its first
    maximum. ``y`` and ``taps`` (what :func:`max_pool2d_forward` returned beside y) save
    recomputing them; without them the forward runs again with ``method``."""
    xp = _check(x, grad_y)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, dilation, name="max_pool2d", ceil_mode=ceil_mode)
    out = (*x.shape[:2], *geometry.out_hw)
    check_grad(grad_y, "grad_y", x, out, "x")
    if y is None and taps is None:
        y, taps = max_pool2d_kernel(xp, x, geometry, method)
    else:
        count = geometry.kernel[0] * geometry.kernel[1]
        if isinstance(taps, WindowArgmax):
            index = taps.index
            if not hasattr(index, "shape") or tuple(index.shape) != out or not is_integral(xp, index.dtype):
                got = (f"shape {tuple(index.shape)}, dtype {index.dtype}" if hasattr(index, "shape")
                       else type(index).__name__)
                raise ShapeError(f"taps: expected a WindowArgmax of integer shape {out}, got {got}")
        elif not isinstance(taps, (list, tuple)) or len(taps) != count:
            raise ArgumentTypeError(f"taps: expected what max_pool2d_forward returned beside y (the list of {count} "
                                    f"window taps, or a WindowArgmax; pass y and taps together, or neither), "
                                    f"got {type(taps).__name__}")
        else:
            for i, t in enumerate(taps):
                check_grad(t, f"taps[{i}]", x, out, "x")
        check_grad(y, "y", x, out, "x")
    return max_pool2d_backward_kernel(xp, grad_y, x, geometry, y, taps)


# ---------------------------------------------------------------- ReLU then max


def relu_max_pool2d_kernel(xp, x, geometry: PoolGeometry, method: str | None = None):
    """max_pool2d(relu(x)) on a checked input as relu(max_pool2d(x)): both are monotone, so they
    commute, and the ReLU then runs on the pooled (kh*kw times smaller) values. Every window
    holds at least one input cell (padding <= kernel // 2), so the -inf padding changes nothing.
    Returns (y, the pooled values before the ReLU, what max pooling's backward needs).

    The ``"argmax"`` form puts a zero before each window's taps instead: the window's maximum
    is then relu(max) at once, and its first maximum is that zero exactly when the ReLU would
    zero the gradient (max <= 0; PyTorch's ReLU passes a gradient only where x > 0). Three
    operations forward (stack, max, argmax) and three backward (one-hot select, un-window)."""
    if max_pool_method(x, method) == "argmax":
        taps = _padded_taps(xp, x, geometry)
        # A broadcast view of a kept 0-d zero: no array of the output's size is made or kept.
        zeros = xp.broadcast_to(zero_like(xp, x), tuple(taps[0].shape))
        y, saved = _window_argmax(xp, [zeros, *taps], first=1)
        return y, y, saved
    pooled, saved = max_pool2d_kernel(xp, x, geometry, method)
    return relu_kernel(xp, pooled), pooled, saved


def relu_max_pool2d_backward_kernel(xp, grad_y, x, geometry: PoolGeometry, pooled, saved):
    """grad_x of :func:`relu_max_pool2d_kernel`, as PyTorch's ReLU then MaxPool2d: a window whose
    maximum m is positive sends its gradient to the first cell equal to m (the first maximum
    of relu(x) too, and there x > 0); a window with m <= 0 sends it to a cell with x <= 0,
    which the ReLU zeroes. So: the ReLU's mask on the pooled values, then max pooling's
    backward (the ``"argmax"`` form has the mask in its window index already)."""
    if isinstance(saved, WindowArgmax):
        return _argmax_backward(xp, grad_y, x, geometry, saved)
    return max_pool2d_backward_kernel(xp, relu_backward_kernel(xp, grad_y, pooled), x, geometry, pooled, saved)


# ---------------------------------------------------------------- global average


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C): the mean over each channel's H x W (AdaptiveAvgPool2d(1) + Flatten)."""
    xp = _check(x)
    return global_avg_pool2d_kernel(xp, x)


def global_avg_pool2d_kernel(xp, x):
    return xp.mean(x, axis=(2, 3))


def global_avg_pool2d_backward(grad_y, x):
    """grad_x (N, C, H, W) of :func:`global_avg_pool2d` given grad_y (N, C): grad_y / (H*W) everywhere."""
    xp = _check(x, grad_y)
    check_grad(grad_y, "grad_y", x, tuple(x.shape[:2]), "x")
    return global_avg_pool2d_backward_kernel(xp, grad_y, x)


def global_avg_pool2d_backward_kernel(xp, grad_y, x):
    n, c, h, w = x.shape
    # Times a plane of ones, not broadcast_to: a real (N, C, H, W) array, never a read-only view.
    ones = xp.ones((h, w), dtype=grad_y.dtype, device=device_of(grad_y))
    return xp.reshape(grad_y * (1.0 / (h * w)), (n, c, 1, 1)) * ones
