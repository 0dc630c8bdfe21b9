"""2-D convolution (cross-correlation, as PyTorch's conv2d) and its transpose, forward and
backward side by side.

Forward is im2col: per group, the kh*kw strided slices (taps) of the zero-padded input are
stacked tap-major into columns ``(G, kh*kw*C/G, N*OH*OW)`` and one (batched over groups)
matmul with the weight as a ``(G, O/G, kh*kw*C/G)`` matrix gives the output. Tap-major
stacking copies whole (C, N, OH, OW) blocks and makes the backward's column-to-image sum read
contiguous blocks. The columns are returned so the backward can reuse them.

The transposed convolution is the adjoint of the convolution: its forward is conv2d's
input gradient and its backward reuses conv2d's forward (input grad) and weight-gradient
products, so both ops share the same five helpers below.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._validate import (
    Padding,
    check_float,
    check_grad,
    check_ndim,
    check_nonempty,
    check_same_dtype,
    conv_padding,
    flag,
    groups_of,
    namespace,
    output_size,
    pair,
)
from ..backend import fewest_operations_for
from ..errors import ArgumentError, ShapeError
from ._windows import add_taps, pad2d, taps_of


class ConvGeometry(NamedTuple):
    """What the conv kernels need, fixed once per input shape. ``out_hw`` is last so
    ``*_, (oh, ow) = conv2d_geometry(...)`` reads the output size."""

    stride: tuple[int, int]
    padding: Padding  # ((top, bottom), (left, right))
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]


def conv2d_geometry(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1) -> ConvGeometry:
    """Normalised options and the output size (OH, OW) of conv2d for x (N, C, H, W) and
    weight (O, C/groups, kh, kw); validates."""
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    groups = groups_of(groups, in_channels=x_shape[1], out_channels=w_shape[0])
    if x_shape[1] != w_shape[1] * groups:
        raise ShapeError(
            f"x: input has {x_shape[1]} channels but weight of shape {tuple(w_shape)} with groups={groups} expects "
            f"{w_shape[1] * groups} (weight is (out_channels, in_channels // groups, kh, kw))"
        )
    padding = conv_padding(padding, tuple(w_shape[2:]), stride, dilation)
    out_hw = tuple(output_size(x_shape[2 + a], w_shape[2 + a], stride[a], padding[a], dilation[a], "conv2d kernel_size")
                   for a in range(2))
    return ConvGeometry(stride, padding, dilation, groups, out_hw)


def _check(x, weight, bias, layout="(out_channels, in_channels // groups, kh, kw)"):
    xp = namespace(x=x, weight=weight, bias=bias, optional=("bias",))
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_ndim(weight, 4, "weight", layout)
    check_nonempty(weight, "weight", layout, axes=(0, 1, 2, 3))
    check_float(xp, "x", x)
    check_same_dtype("x", x, "weight", weight)
    return xp


def _check_bias(bias, x, channels):
    if bias is not None:
        check_ndim(bias, 1, "bias", "(out_channels,)")
        check_same_dtype("x", x, "bias", bias)
        if bias.shape[0] != channels:
            raise ShapeError(f"bias: expected shape ({channels},) (one per output channel), got {tuple(bias.shape)}")


# ---------------------------------------------------------------- the shared helpers


def weight_matrix(xp, weight, groups):
    """(O, C/G, kh, kw) -> (G, O/G, kh*kw*C/G): the weight in the columns' tap-major order."""
    o, cg, kh, kw = weight.shape
    w = xp.permute_dims(xp.reshape(weight, (groups, o // groups, cg, kh, kw)), (0, 1, 3, 4, 2))
    return xp.reshape(w, (groups, o // groups, kh * kw * cg))


def weight_from_matrix(xp, m, w_shape):
    """Inverse of :func:`weight_matrix`: (G, O/G, kh*kw*C/G) -> (O, C/G, kh, kw), a view."""
    o, cg, kh, kw = w_shape
    return xp.permute_dims(xp.reshape(m, (o, kh, kw, cg)), (0, 3, 1, 2))


def channel_matrix(xp, y, groups):
    """(N, O, OH, OW) -> (G, O/G, N*OH*OW). Putting the batch inside the channel lets the whole
    batch share ONE large matmul per group: BLAS threads a (K, N*L) product well, while N small
    per-sample products run on one core."""
    n, o, oh, ow = y.shape
    return xp.reshape(xp.permute_dims(y, (1, 0, 2, 3)), (groups, o // groups, n * oh * ow))


def from_channel_matrix(xp, m, channels, out_hw):
    """Inverse of :func:`channel_matrix`: (G, O/G, N*OH*OW) -> (N, O, OH, OW), O = ``channels``. The
    (O, N, OH, OW) memory is seen as (N, O, OH, OW): a view, no copy; later ops read it strided.
    N is never read (-1): it may be symbolic (a graph traced with ndonnx)."""
    return xp.permute_dims(xp.reshape(m, (channels, -1, *out_hw)), (1, 0, 2, 3))


def columns(xp, x, kernel, geometry: ConvGeometry, *, flipped: bool = False):
    """im2col: x (N, C, H, W) -> columns (G, kh*kw*C/G, N*OH*OW), tap-major rows within each group;
    ``flipped``: the taps in reverse kernel order (the columns of a 180-degree rotated kernel)."""
    c = x.shape[1]
    g = geometry.groups
    # (C, N, H, W) split into groups, with a tap axis of size 1; padding it makes the one copy,
    # each tap is then a strided slice, and concatenating the taps along that axis is the
    # columns (np.stack would add the axis to each tap, one more call per tap).
    x_gcn = xp.reshape(xp.permute_dims(x, (1, 0, 2, 3)), (g, 1, c // g, -1, *x.shape[2:]))
    taps = taps_of(pad2d(xp, x_gcn, geometry.padding), kernel, geometry.stride, geometry.dilation, geometry.out_hw)
    if flipped:
        taps = taps[::-1]
    oh, ow = geometry.out_hw
    return xp.reshape(xp.concat(taps, axis=1), (g, len(taps) * (c // g), -1))


def fold(xp, grad_cols, kernel, geometry: ConvGeometry, x_shape):
    """Adjoint of :func:`columns`: (G, kh*kw*C/G, N*OH*OW) -> (N, C, H, W) by summing each tap's
    block back into the input positions it was read from (slices, no scatter)."""
    n, c, h, w = x_shape
    g = geometry.groups
    k = kernel[0] * kernel[1]
    blocks = xp.reshape(grad_cols, (g, k, c // g, n, *geometry.out_hw))
    taps = [blocks[:, t, ...] for t in range(k)]
    grad = add_taps(xp, taps, (h, w), geometry.padding, kernel, geometry.stride, geometry.dilation, geometry.out_hw)
    return xp.permute_dims(xp.reshape(grad, (c, n, h, w)), (1, 0, 2, 3))


# ---------------------------------------------------------------- conv2d


def conv2d_kernel(xp, x, weight, bias, geometry: ConvGeometry, *, keep_columns: bool = True) -> tuple[Any, Any]:
    """The forward math on checked inputs: (y (N, O, OH, OW), the columns for the backward, or None
    without ``keep_columns``)."""
    g = geometry.groups
    cols = columns(xp, x, weight.shape[2:], geometry)
    y = xp.matmul(weight_matrix(xp, weight, g), cols)
    if bias is not None:
        y = y + xp.reshape(bias, (g, weight.shape[0] // g, 1))
    return from_channel_matrix(xp, y, weight.shape[0], geometry.out_hw), cols if keep_columns else None


def conv2d_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1) -> tuple[Any, Any]:
    """y, cols. x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) -> y (N, O, OH, OW) and the
    im2col columns (groups, kh*kw*C/groups, N*OH*OW) that :func:`conv2d_backward` can reuse.

    ``padding``: an int, an (h, w) pair, ((top, bottom), (left, right)), ``"valid"`` or
    ``"same"`` (stride 1; the odd pixel of an even total goes bottom/right, as PyTorch)."""
    xp = _check(x, weight, bias)
    geometry = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias(bias, x, weight.shape[0])
    return conv2d_kernel(xp, x, weight, bias, geometry)


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """x (N, C, H, W) cross-correlated with weight (O, C/groups, kh, kw), plus bias (O,) -> (N, O, OH, OW).
    Options as ``torch.nn.functional.conv2d``; see :func:`conv2d_forward` for ``padding``."""
    return conv2d_forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)[0]


def conv2d_backward_kernel(xp, grad_y, x, weight, geometry: ConvGeometry, *, bias, cols, input_grad):
    """The backward math on checked inputs: (grad_x or None, grad_weight, grad_bias or None)."""
    g = geometry.groups
    kernel = tuple(weight.shape[2:])
    if cols is None:
        cols = columns(xp, x, kernel, geometry)
    g_mat = channel_matrix(xp, grad_y, g)
    grad_weight = weight_from_matrix(xp, xp.matmul(g_mat, xp.matrix_transpose(cols)), weight.shape)
    grad_bias = xp.sum(grad_y, axis=(0, 2, 3)) if bias else None
    grad_x = conv2d_input_grad_kernel(xp, grad_y, x.shape, weight, geometry, g_mat) if input_grad else None
    return grad_x, grad_weight, grad_bias


def conv2d_input_grad_kernel(xp, grad_y, x_shape, weight, geometry: ConvGeometry, g_mat=None):
    """grad_x (N, C, H, W) of conv2d for an input of ``x_shape`` given grad_y (N, O, OH, OW): on a GPU
    (:func:`xpcnn.backend.fewest_operations_for`) and where it applies, the convolution of the
    padded grad_y with the flipped weight (:func:`input_grad_by_columns`: fewer operations);
    else the weight's transpose times grad_y folded back onto the input, kh*kw slice additions
    (``g_mat``: grad_y as :func:`channel_matrix`, if made). See docs/performance.md."""
    if fewest_operations_for(grad_y) and _columns_apply(weight.shape, geometry):
        return input_grad_by_columns(xp, grad_y, weight, geometry, tuple(x_shape[2:]))
    g = geometry.groups
    if g_mat is None:
        g_mat = channel_matrix(xp, grad_y, g)
    grad_cols = xp.matmul(xp.matrix_transpose(weight_matrix(xp, weight, g)), g_mat)
    return fold(xp, grad_cols, tuple(weight.shape[2:]), geometry, x_shape)


def _columns_apply(w_shape, geometry: ConvGeometry) -> bool:
    """Stride 1 and padding within the kernel's extent: the input gradient is then a stride-1
    convolution of grad_y padded by (extent - 1 - padding) on each side."""
    extent = [d * (k - 1) for d, k in zip(geometry.dilation, w_shape[2:])]
    return geometry.stride == (1, 1) and all(p <= extent[a] for a in range(2) for p in geometry.padding[a])


def input_grad_by_columns(xp, grad_y, weight, geometry: ConvGeometry, size: tuple[int, int]):
    """grad_x (N, C, H, W) as the correlation of grad_y, padded by d*(k-1) - p on each side, with
    the weight flipped and its channel axes swapped. Taking the taps in reverse order flips
    the kernel, so the weight matrix is a plain transpose of the forward's: (G, C/G, kh*kw*O/G)."""
    o, cg, kh, kw = weight.shape
    g = geometry.groups
    padding = tuple((d * (k - 1) - before, d * (k - 1) - after)
                    for d, k, (before, after) in zip(geometry.dilation, (kh, kw), geometry.padding))
    adjoint = ConvGeometry((1, 1), padding, geometry.dilation, g, size)
    cols = columns(xp, grad_y, (kh, kw), adjoint, flipped=True)
    w_t = xp.permute_dims(xp.reshape(weight, (g, o // g, cg, kh, kw)), (0, 2, 3, 4, 1))  # (G, C/G, kh, kw, O/G)
    grad = xp.matmul(xp.reshape(w_t, (g, cg, kh * kw * (o // g))), cols)
    return from_channel_matrix(xp, grad, g * cg, size)


def conv2d_backward(grad_y, x, weight, *, stride=1, padding=0, dilation=1, groups=1, bias=True, cols=None,
                    input_grad=True):
    """Gradients (grad_x, grad_weight, grad_bias) of :func:`conv2d` given grad_y (N, O, OH, OW).

    grad_bias is None when ``bias`` is False; grad_x is None when ``input_grad`` is False
    (the first layer of a network never needs it). ``cols`` from :func:`conv2d_forward` saves
    recomputing the im2col columns.
    """
    xp = _check(x, weight, None)
    namespace(x=x, grad_y=grad_y)
    bias, input_grad = flag(bias, "bias"), flag(input_grad, "input_grad")
    geometry = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    check_grad(grad_y, "grad_y", x, (x.shape[0], weight.shape[0], *geometry.out_hw), "x")
    if cols is not None:
        n, c = x.shape[:2]
        kh, kw = weight.shape[2:]
        expected = (groups, kh * kw * (c // groups), n * geometry.out_hw[0] * geometry.out_hw[1])
        check_grad(cols, "cols", x, expected, "x")
        namespace(x=x, cols=cols)
    return conv2d_backward_kernel(xp, grad_y, x, weight, geometry, bias=bias, cols=cols, input_grad=input_grad)


# ---------------------------------------------------------------- conv_transpose2d


class ConvTransposeGeometry(NamedTuple):
    """``conv``: the convolution this op is the adjoint of (its input is our output, its
    output our input, so ``conv.out_hw`` is the input's (H, W)); ``out_hw``: our output size."""

    conv: ConvGeometry
    output_padding: tuple[int, int]
    out_hw: tuple[int, int]


_TRANSPOSE_LAYOUT = "(in_channels, out_channels // groups, kh, kw)"


def conv_transpose2d_geometry(x_shape, w_shape, stride=1, padding=0, output_padding=0, dilation=1,
                              groups=1) -> ConvTransposeGeometry:
    """Normalised options and the output size of conv_transpose2d for x (N, C_in, H, W) and weight
    (C_in, C_out/groups, kh, kw): OH = (H - 1)*s - (top + bottom) + d*(kh - 1) + output_padding + 1."""
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    output_padding = pair(output_padding, "output_padding", minimum=0)
    groups = groups_of(groups, in_channels=w_shape[0])
    if min(x_shape[2:]) < 1:  # PyTorch refuses it too: only an empty batch or channel axis may be 0
        raise ShapeError(f"x: expected H and W >= 1, got shape {tuple(x_shape)}")
    if x_shape[1] != w_shape[0]:
        raise ShapeError(
            f"x: input has {x_shape[1]} channels but weight of shape {tuple(w_shape)} expects {w_shape[0]} "
            f"(weight is {_TRANSPOSE_LAYOUT})"
        )
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation)):
        raise ArgumentError(f"output_padding: expected each side smaller than its stride or its dilation (as PyTorch), "
                            f"got {output_padding} with stride {stride} and dilation {dilation}")
    padding = conv_padding(padding, tuple(w_shape[2:]), stride, dilation, strings=False)
    out_hw = tuple(
        (x_shape[2 + a] - 1) * stride[a] - sum(padding[a]) + dilation[a] * (w_shape[2 + a] - 1) + output_padding[a] + 1
        for a in range(2)
    )
    if min(out_hw) < 1:
        raise ShapeError(f"padding: {padding} leaves conv_transpose2d an output of size {out_hw} for input size "
                         f"{tuple(x_shape[2:])}; expected every size >= 1")
    conv = ConvGeometry(stride, padding, dilation, groups, tuple(x_shape[2:]))
    return ConvTransposeGeometry(conv, output_padding, out_hw)


def conv_transpose2d_kernel(xp, x, weight, bias, geometry: ConvTransposeGeometry):
    """The forward math on checked inputs: y (N, C_out, OH, OW) (nothing else is needed backward)."""
    conv = geometry.conv
    g = conv.groups
    n = x.shape[0]
    c_out = weight.shape[1] * g
    grad_cols = xp.matmul(xp.matrix_transpose(weight_matrix(xp, weight, g)), channel_matrix(xp, x, g))
    y = fold(xp, grad_cols, tuple(weight.shape[2:]), conv, (n, c_out, *geometry.out_hw))
    return y if bias is None else y + xp.reshape(bias, (c_out, 1, 1))


def conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution (the adjoint of :func:`conv2d`, as ``torch.nn.functional.conv_transpose2d``):
    x (N, C_in, H, W), weight (C_in, C_out/groups, kh, kw), bias (C_out,) -> (N, C_out, OH, OW) with
    OH = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1.

    ``padding``: an int, an (h, w) pair or ((top, bottom), (left, right)); ``output_padding``
    adds rows/columns at the bottom/right and must be smaller than the stride or the dilation."""
    xp = _check(x, weight, bias, _TRANSPOSE_LAYOUT)
    geometry = conv_transpose2d_geometry(x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    _check_bias(bias, x, weight.shape[1] * geometry.conv.groups)
    return conv_transpose2d_kernel(xp, x, weight, bias, geometry)


def conv_transpose2d_backward_kernel(xp, grad_y, x, weight, geometry: ConvTransposeGeometry, *, bias, input_grad):
    """The backward math on checked inputs: (grad_x or None, grad_weight, grad_bias or None).
    grad_x is conv2d of grad_y with the same weight; both products share grad_y's columns."""
    conv = geometry.conv
    g = conv.groups
    cols = columns(xp, grad_y, tuple(weight.shape[2:]), conv)
    grad_weight = weight_from_matrix(xp, xp.matmul(channel_matrix(xp, x, g), xp.matrix_transpose(cols)), weight.shape)
    grad_bias = xp.sum(grad_y, axis=(0, 2, 3)) if bias else None
    grad_x = None
    if input_grad:
        grad_x = from_channel_matrix(xp, xp.matmul(weight_matrix(xp, weight, g), cols), weight.shape[0], conv.out_hw)
    return grad_x, grad_weight, grad_bias


def conv_transpose2d_backward(grad_y, x, weight, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                              bias=True, input_grad=True):
    """Gradients (grad_x, grad_weight, grad_bias) of :func:`conv_transpose2d` given grad_y
    (N, C_out, OH, OW); grad_bias is None when ``bias`` is False, grad_x None when ``input_grad`` is False."""
    xp = _check(x, weight, None, _TRANSPOSE_LAYOUT)
    namespace(x=x, grad_y=grad_y)
    geometry = conv_transpose2d_geometry(x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    check_grad(grad_y, "grad_y", x, (x.shape[0], weight.shape[1] * geometry.conv.groups, *geometry.out_hw), "x")
    bias, input_grad = flag(bias, "bias"), flag(input_grad, "input_grad")
    return conv_transpose2d_backward_kernel(xp, grad_y, x, weight, geometry, bias=bias, input_grad=input_grad)
