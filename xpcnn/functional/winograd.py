"""Winograd convolution F(m x m, 3 x 3) (Lavin & Gray, 2016) for 3x3 kernels with stride 1,
dilation 1 and one group, any zero padding: forward, input gradient and weight gradient.

The output is cut into m x m tiles; tile t reads an a x a input tile d_t (a = m + 2). With the
constant matrices B, G, A below, one output tile of the cross-correlation is

    Y_t = A^T [ sum over input channels (G g G^T) * (B^T d_t B) ] A      (* elementwise)

so the 9 multiplications per output pixel and channel pair of im2col become a^2 / m^2: 4 for
F(2x2, 3x3). Each 2-D transform is ONE matmul with a Kronecker matrix (kron(B^T, B^T) is
16 x 16) over the a^2 tile positions stacked on the first axis, and the channel sums of all
a^2 positions are ONE batched matmul of a (a^2, O, C) stack with a (a^2, C, tiles) stack:
a few large operations, which BLAS and GPUs run fast.

Gradients. The input gradient is the same Winograd correlation applied to the output gradient
(read from 2 - padding rows/columns before its start, zeros outside) with the kernel rotated
180 degrees and (O, C) transposed. The weight gradient is the adjoint of the forward,
G^T [ sum over tiles (A dY_t A^T) * V_t ] G, reusing the transformed input tiles V that the
forward returns as its cache.

F(4x4, 3x3) (36 positions, 2.25 multiplications per pixel) is exact in float64 but its larger
transform coefficients put float32 results outside the project's per-op float32 tolerance
(``benchmarks/bench_winograd.py`` measures it), so the dispatch uses F(2x2, 3x3); ``m=4``
stays available to callers who accept that error.

Which convolutions take this path (:func:`winograd_applicable` for the forward,
:func:`winograd_input_grad_applicable` for the input gradient) is a rule measured on the
project's machine by ``benchmarks/bench_winograd.py`` (``benchmarks/results/winograd_*.txt``);
conv2d's weight gradient stays im2col (see the rule's comment).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import constant
from ._windows import pad2d

# (B^T, G, A^T) per output tile size m (Lavin & Gray, eqs. 7 and 8). F(2x2, 3x3)'s entries
# (0, +-1, +-1/2) are exact in every float format.
TRANSFORMS = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}


class WinogradCache(NamedTuple):
    """What the forward keeps for the weight gradient: the transformed input tiles
    ``v`` (a^2, C, N*TH*TW) of F(``m`` x ``m``, 3 x 3)."""

    v: Any
    m: int


# The rule, measured with benchmarks/bench_winograd.py on the project's 2-core machine (NumPy,
# OpenBLAS; benchmarks/results/winograd_*.txt). Winograd trades 2.25x fewer multiplications for
# transforms that are memory-bound copies, whose cost grows with the channels on each side while
# the saving grows with their product. Against im2col's matmul and 9-slice fold it wins the
# input gradient (1.1-2.9x) when the layer has at least as many input channels C as output
# channels O (C >= 16). The forward, charged with rebuilding the im2col columns that the
# weight gradient uses, only broke even (1.02-1.05x) with 128 channels on both sides and a
# 14 x 14 output or larger, batch 8 or more; elsewhere it lost (0.4-0.9x). The weight gradient
# stays im2col: Winograd's is faster for many shapes but its float32 error is 2.3x the per-op
# tolerance at 64 channels, where im2col's is within it (same script, part 1).
INPUT_GRAD_MIN_CHANNELS = 16  # C, with O <= C
FORWARD_MIN_CHANNELS = 128  # C and O
FORWARD_MIN_PIXELS = (14 * 14, 8 * 14 * 14)  # OH*OW and N*OH*OW


def _eligible(w_shape, geometry) -> bool:
    """3x3 kernel, stride 1, dilation 1, one group: what F(m x m, 3 x 3) computes."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(geometry.stride) == (1, 1)
            and tuple(geometry.dilation) == (1, 1) and geometry.groups == 1)


def winograd_applicable(x_shape, w_shape, geometry) -> bool:
    """True when the forward of conv2d of x (N, C, H, W) with weight (O, C, kh, kw) under
    ``geometry`` (stride, padding, dilation, groups, out_hw) takes the Winograd path."""
    c, o = x_shape[1], w_shape[0]
    pixels = geometry.out_hw[0] * geometry.out_hw[1]
    return (_eligible(w_shape, geometry) and min(c, o) >= FORWARD_MIN_CHANNELS
            and pixels >= FORWARD_MIN_PIXELS[0] and x_shape[0] * pixels >= FORWARD_MIN_PIXELS[1])


def winograd_input_grad_applicable(x_shape, w_shape, geometry) -> bool:
    """True when conv2d's input gradient (same arguments as :func:`winograd_applicable`) takes
    the Winograd path."""
    c, o = x_shape[1], w_shape[0]
    return _eligible(w_shape, geometry) and c >= INPUT_GRAD_MIN_CHANNELS and o <= c


# ---------------------------------------------------------------- transforms


def _kron(a, b) -> list:
    """Kronecker product of two nested tuples: the 2-D transform M -> a M b^T on row-major
    flattened tiles."""
    return [[x * y for x in row_a for y in row_b] for row_a in a for row_b in b]


def _constants(xp, like, m: int) -> tuple:
    """(BB, GG, GG_rotated, AA) of F(m x m, 3 x 3) as arrays of ``like``'s dtype and device:
    kron(B^T, B^T) (a^2, a^2), kron(G, G) (a^2, 9), kron(G, G) for the 180-degree rotated
    kernel (its 9 columns reversed), and kron(A^T, A^T) (m^2, a^2). Kept per backend, dtype
    and device (:func:`xpcnn.backend.constant`): a network asks for the same few every step."""
    def make(xp, dtype, device):
        bt, g, at = TRANSFORMS[m]
        gg = _kron(g, g)
        return tuple(xp.asarray(c, dtype=dtype, device=device)
                     for c in (_kron(bt, bt), gg, [row[::-1] for row in gg], _kron(at, at)))
    return constant(xp, like, ("winograd", m), make)


def _tile_count(out_hw, m) -> tuple[int, int]:
    return -(-out_hw[0] // m), -(-out_hw[1] // m)


def _window(xp, x, top_left, size):
    """x[..., r0 : r0 + h, c0 : c0 + w] for (r0, c0) = ``top_left`` and (h, w) = ``size``, with
    positions outside x read as zeros (r0, c0 may be negative, the window may overrun)."""
    (r0, c0), (h, w) = top_left, size
    rows, cols = x.shape[-2:]
    crop = x[..., max(r0, 0) : min(r0 + h, rows), max(c0, 0) : min(c0 + w, cols)]
    pads = ((max(-r0, 0), max(r0 + h - rows, 0)), (max(-c0, 0), max(c0 + w - cols, 0)))
    return pad2d(xp, crop, pads)


def _stacked_tiles(xp, x, tile, step, count):
    """The tile x tile strided slices of x (..., H, W) with step ``step`` and ``count`` = (TH, TW)
    positions, stacked on a new first axis -> (tile^2, ..., TH, TW). Stops are exact."""
    th, tw = count
    return xp.stack([x[..., i : i + step * (th - 1) + 1 : step, j : j + step * (tw - 1) + 1 : step]
                     for i in range(tile) for j in range(tile)], axis=0)


def _input_tiles(xp, x, top_left, out_hw, m, bb):
    """Transformed input tiles V (a^2, C, N*TH*TW) of x (N, C, H, W) for an output of ``out_hw``
    whose pixel (0, 0) reads x from ``top_left`` (negative: zero padding)."""
    n, c = x.shape[:2]
    th, tw = _tile_count(out_hw, m)
    # (C, N, ...) order makes each position's (C, N*TH*TW) block the matmul operand as it is.
    x_cn = _window(xp, xp.permute_dims(x, (1, 0, 2, 3)), top_left, (th * m + 2, tw * m + 2))
    d = _stacked_tiles(xp, x_cn, m + 2, m, (th, tw))
    return xp.reshape(xp.matmul(bb, xp.reshape(d, (bb.shape[1], c * n * th * tw))), (bb.shape[0], c, n * th * tw))


def _output(xp, mm, aa, m, n, out_hw):
    """Output transform: M (a^2, O, N*TH*TW) -> y (N, O, OH, OW)."""
    o = mm.shape[1]
    th, tw = _tile_count(out_hw, m)
    y = xp.reshape(xp.matmul(aa, xp.reshape(mm, (aa.shape[1], o * n * th * tw))), (m, m, o, n, th, tw))
    # Interleave the m x m tile pixels by stacking contiguous blocks: two copies with unit-stride
    # runs, ~3x faster in NumPy than one reshape of the (N, O, TH, m, TW, m) permutation.
    rows = [xp.reshape(xp.stack([y[i, j, ...] for j in range(m)], axis=-1), (o, n, th, tw * m)) for i in range(m)]
    y = xp.reshape(xp.stack(rows, axis=3), (o, n, th * m, tw * m))
    # (O, N, ...) memory seen as (N, O, ...): a view, as conv2d's im2col output.
    return xp.permute_dims(y[:, :, : out_hw[0], : out_hw[1]], (1, 0, 2, 3))


def _weight_taps(xp, weight):
    """(O, C, 3, 3) -> (9, O*C): row 3i+j holds tap (i, j) of every (o, c) pair."""
    o, c = weight.shape[:2]
    return xp.reshape(xp.permute_dims(weight, (2, 3, 0, 1)), (9, o * c))


def _top_left(geometry) -> tuple[int, int]:
    """Where output pixel (0, 0)'s window starts in the unpadded input."""
    (top, _), (left, _) = geometry.padding
    return -top, -left


# ---------------------------------------------------------------- forward and gradients


def winograd_conv2d(xp, x, weight, bias, geometry, m: int = 2) -> tuple[Any, WinogradCache]:
    """x (N, C, H, W) cross-correlated with weight (O, C, 3, 3) plus bias (O,) or None, stride 1,
    zero padding ``geometry.padding`` = ((top, bottom), (left, right)) -> (y (N, O, OH, OW), cache)."""
    bb, gg, _, aa = _constants(xp, x, m)
    o, c = weight.shape[:2]
    u = xp.reshape(xp.matmul(gg, _weight_taps(xp, weight)), (gg.shape[0], o, c))
    v = _input_tiles(xp, x, _top_left(geometry), geometry.out_hw, m, bb)
    y = _output(xp, xp.matmul(u, v), aa, m, x.shape[0], geometry.out_hw)
    if bias is not None:
        y = y + xp.reshape(bias, (o, 1, 1))
    return y, WinogradCache(v, m)


def winograd_conv2d_input_grad(xp, grad_y, weight, geometry, in_hw, m: int = 2):
    """grad_x (N, C, H, W) of :func:`winograd_conv2d` from grad_y (N, O, OH, OW), with (H, W) =
    ``in_hw``: grad_y correlated with the rotated, transposed weight (C, O, 3, 3), reading
    grad_y from 2 - padding before its start."""
    bb, _, gg_rotated, aa = _constants(xp, grad_y, m)
    o, c = weight.shape[:2]
    u = xp.reshape(xp.matmul(gg_rotated, _weight_taps(xp, weight)), (gg_rotated.shape[0], o, c))
    top, left = _top_left(geometry)
    v = _input_tiles(xp, grad_y, (-top - 2, -left - 2), in_hw, m, bb)
    return _output(xp, xp.matmul(xp.matrix_transpose(u), v), aa, m, grad_y.shape[0], in_hw)


def winograd_conv2d_weight_grad(xp, grad_y, x, geometry, cache: WinogradCache | None = None, m: int = 2):
    """grad_weight (O, C, 3, 3) of :func:`winograd_conv2d` from grad_y (N, O, OH, OW), reusing the
    forward's transformed input tiles when ``cache`` is given (its tile size wins over ``m``)."""
    if cache is not None:
        m = cache.m
    bb, gg, _, aa = _constants(xp, x, m)
    v = cache.v if cache is not None else _input_tiles(xp, x, _top_left(geometry), geometry.out_hw, m, bb)
    n, o = grad_y.shape[:2]
    th, tw = _tile_count(geometry.out_hw, m)
    # The adjoint of the output transform: dY's m x m tiles (zeros past the edge) times kron(A, A).
    g = _window(xp, xp.permute_dims(grad_y, (1, 0, 2, 3)), (0, 0), (th * m, tw * m))
    g = xp.reshape(_stacked_tiles(xp, g, m, m, (th, tw)), (m * m, o * n * th * tw))
    z = xp.reshape(xp.matmul(xp.matrix_transpose(aa), g), (aa.shape[1], o, n * th * tw))
    du = xp.matmul(z, xp.matrix_transpose(v))
    grad = xp.matmul(xp.matrix_transpose(gg), xp.reshape(du, (du.shape[0], o * x.shape[1])))
    return xp.permute_dims(xp.reshape(grad, (3, 3, o, x.shape[1])), (2, 3, 0, 1))
