"""Augmentation layers: RandomFlip, RandomCrop, RandomTranslation (active in training only) and
Normalize (per channel, in both modes).

The random layers move pixels: ``y[n, c, i, j] = x[n, c, a_n + s_n i, b_n + t_n j]``, zero where
that index falls outside ``x``, with per-image offsets ``a, b`` and signs ``s, t = +-1``. The map
is linear and its adjoint (the backward) is the same kind of map with offsets ``-s a, -t b``; it
runs as one ``take`` over the flattened batch, with no item assignment.

Per-image draws come from the counter-based hash keyed by seed and counter, as Dropout's masks do
(:class:`xpcnn.layers.core.RandomLayer`): the same seed gives the same augmented batches on every
backend, and a checkpoint keeps the counter (exact resume).
"""

from __future__ import annotations

import math
import numbers

from .._validate import pair, sample_shape
from ..backend import device_of, namespace_of
from ..errors import ArgumentError, ShapeError
from ..functional.dropout import hash_bits, uniform_below
from .base import Layer
from .core import RandomLayer


def take_pixels(xp, x, rows, cols):
    """y (N, C, h, w) with ``y[n, c, i, j] = x[n, c, rows[n, i], cols[n, j]]``, 0 where an index is
    outside x. x (N, C, H, W); rows (N, h) and cols (N, w) int32 on x's device."""
    n, c, height, width = x.shape
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    flat = (xp.arange(n, dtype=xp.int32, device=device_of(x))[:, None, None] * (height * width)
            + xp.clip(rows, 0, height - 1)[:, :, None] * width + xp.clip(cols, 0, width - 1)[:, None, :])
    planes = xp.reshape(xp.permute_dims(x, (1, 0, 2, 3)), (c, n * height * width))
    y = xp.reshape(xp.take(planes, xp.reshape(flat, (-1,)), axis=1), (c, n, rows.shape[1], cols.shape[1]))
    return xp.permute_dims(xp.where(inside, y, xp.zeros((), dtype=x.dtype, device=device_of(x))), (1, 0, 2, 3))


def _line(xp, offset, sign, size: int):
    """(N, size) int32 source indices ``offset + sign * i`` from per-image offset, sign (N,)."""
    return offset[:, None] + sign[:, None] * xp.arange(size, dtype=xp.int32, device=device_of(offset))[None, :]


class PixelMapLayer(RandomLayer):
    """Base of the random pixel-moving layers. A subclass gives ``draw(xp, bits, shape)``: per-image
    (row offset, row sign, column offset, column sign), int32 (N,) each, from hash bits (N, 2); and
    ``fixed(xp, n, shape, device)``: the inference-mode map, or None for the identity."""

    def fixed(self, xp, n, shape, device):
        return None

    def forward(self, x, training=False):
        xp, shape, n = namespace_of(x), tuple(x.shape[1:]), int(x.shape[0])
        if training:
            bits = hash_bits(xp, 2 * n, self.key, self.counter, device=device_of(x))
            self.counter += 1
            maps = self.draw(xp, xp.reshape(bits, (n, 2)), shape)
        else:
            maps = self.fixed(xp, n, shape, device_of(x))
        self.save_for_backward(maps, shape)
        if maps is None:
            return x
        a, s, b, t = maps
        _, h, w = self.output_shape(shape)
        return take_pixels(xp, x, _line(xp, a, s, h), _line(xp, b, t, w))

    def backward(self, grad_y):
        maps, (_, height, width) = self.saved
        if not self.needs_input_grad or maps is None:
            return grad_y if self.needs_input_grad else None
        xp = namespace_of(grad_y)
        a, s, b, t = maps
        return take_pixels(xp, grad_y, _line(xp, -s * a, s, height), _line(xp, -t * b, t, width))


def _constant(xp, n, value, device):
    return xp.full((n,), value, dtype=xp.int32, device=device)


class RandomFlip(PixelMapLayer):
    """Flips each image with probability 1/2 in training: ``"horizontal"`` (left-right, the W axis),
    ``"vertical"`` (the H axis) or ``"both"`` (each axis drawn independently); identity at
    inference. (N, C, H, W) -> (N, C, H, W)."""

    MODES = ("horizontal", "vertical", "both")

    def __init__(self, mode: str = "horizontal", *, seed: int | None = None) -> None:
        super().__init__(seed)
        if mode not in self.MODES:
            raise ArgumentError(f"mode: expected one of {', '.join(map(repr, self.MODES))}, got {mode!r}")
        self.mode = mode

    def output_shape(self, input_shape):
        return sample_shape(input_shape, "RandomFlip input_shape", "(C, H, W)", ndim=3)

    def get_config(self):
        return {"mode": self.mode, "seed": self.seed}

    def draw(self, xp, bits, shape):
        flips = []
        for axis, (mode, size) in enumerate((("vertical", shape[1]), ("horizontal", shape[2]))):
            f = uniform_below(bits[:, axis], 2) if self.mode in (mode, "both") else 0 * bits[:, axis]
            flips += [f * (size - 1), 1 - 2 * f]
        return tuple(flips)


class RandomCrop(PixelMapLayer):
    """torchvision's RandomCrop with zero ``padding`` in training: pad each side by ``padding``
    (int or (ph, pw): height first, as every xpcnn pair, where torchvision's pair is width
    first), then crop ``size`` (int or (h, w)) at an offset drawn per image uniformly in
    [0, H + 2 ph - h] x [0, W + 2 pw - w]. At inference a center crop of the padded input, offset
    floor((H + 2 ph - h) / 2) as Keras's CenterCrop (the plain center crop when h <= H).
    (N, C, H, W) -> (N, C, h, w)."""

    def __init__(self, size, padding=0, *, seed: int | None = None) -> None:
        super().__init__(seed)
        self.size, self.padding = pair(size, "size"), pair(padding, "padding", minimum=0)

    def output_shape(self, input_shape):
        c, height, width = sample_shape(input_shape, "RandomCrop input_shape", "(C, H, W)", ndim=3)
        (h, w), (ph, pw) = self.size, self.padding
        if h > height + 2 * ph or w > width + 2 * pw:
            raise ShapeError(f"size: the crop {self.size} is larger than the padded input ({height + 2 * ph}, "
                             f"{width + 2 * pw})")
        return (c, h, w)

    def get_config(self):
        return {"size": list(self.size), "padding": list(self.padding), "seed": self.seed}

    def _room(self, shape):
        return [(size + 2 * p - crop, p) for size, crop, p in zip(shape[1:], self.size, self.padding)]

    def draw(self, xp, bits, shape):
        (rows, ph), (cols, pw) = self._room(shape)
        one = _constant(xp, bits.shape[0], 1, device_of(bits))
        return uniform_below(bits[:, 0], rows + 1) - ph, one, uniform_below(bits[:, 1], cols + 1) - pw, one

    def fixed(self, xp, n, shape, device):
        if tuple(self.size) == tuple(shape[1:]):
            return None
        (rows, ph), (cols, pw) = self._room(shape)
        one = _constant(xp, n, 1, device)
        return _constant(xp, n, rows // 2 - ph, device), one, _constant(xp, n, cols // 2 - pw, device), one


class RandomTranslation(PixelMapLayer):
    """Shifts each image in training by whole pixels drawn per image uniformly in [-m_h, m_h] x
    [-m_w, m_w], m_h = floor(height_factor * H), m_w = floor(width_factor * W) (factors in [0, 1)),
    filling with zeros; a positive shift moves the content down / right. Identity at inference.
    (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, height_factor: float, width_factor: float, *, seed: int | None = None) -> None:
        super().__init__(seed)
        for name, value in (("height_factor", height_factor), ("width_factor", width_factor)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
                raise ArgumentError(f"{name}: expected a fraction of the size in [0, 1), got {value!r}")
        self.height_factor, self.width_factor = float(height_factor), float(width_factor)

    def output_shape(self, input_shape):
        return sample_shape(input_shape, "RandomTranslation input_shape", "(C, H, W)", ndim=3)

    def get_config(self):
        return {"height_factor": self.height_factor, "width_factor": self.width_factor, "seed": self.seed}

    def draw(self, xp, bits, shape):
        maps, one = [], _constant(xp, bits.shape[0], 1, device_of(bits))
        for axis, factor in enumerate((self.height_factor, self.width_factor)):
            most = math.floor(round(factor * shape[axis + 1], 9))  # 0.29 * 100 is 28.999...
            maps += [most - uniform_below(bits[:, axis], 2 * most + 1), one]
        return tuple(maps)


class Normalize(Layer):
    """``(x - mean) / std`` per channel, in training and at inference; ``mean`` and ``std`` are one
    number or one per channel. (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.mean, self.std = self._values(mean, "mean"), self._values(std, "std")
        if any(s <= 0 for s in self.std):
            raise ArgumentError(f"std: expected positive numbers, got {self.std}")

    @staticmethod
    def _values(value, name: str) -> list[float]:
        try:  # one number, or a sequence (a list, a 1-D NumPy array of per-channel statistics)
            values = [value] if isinstance(value, numbers.Real) else list(value)
        except TypeError:
            values = []
        if not values or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in values):
            raise ArgumentError(f"{name}: expected a finite number or a list of them (one per channel), got {value!r}")
        return [float(v) for v in values]

    def output_shape(self, input_shape):
        shape = sample_shape(input_shape, "Normalize input_shape", "(C, H, W)", ndim=3)
        if {len(self.mean), len(self.std)} - {1, shape[0]}:
            raise ShapeError(f"mean, std: expected 1 or {shape[0]} values (the channels), got {len(self.mean)} and "
                             f"{len(self.std)}")
        return shape

    def get_config(self):
        return {"mean": self.mean, "std": self.std}

    def _column(self, xp, values, like):
        return xp.reshape(xp.asarray(values, dtype=like.dtype, device=device_of(like)), (-1, 1, 1))

    def forward(self, x, training=False):
        xp = namespace_of(x)
        self.save_for_backward(True)
        return (x - self._column(xp, self.mean, x)) / self._column(xp, self.std, x)

    def backward(self, grad_y):
        return grad_y / self._column(namespace_of(grad_y), self.std, grad_y) if self.needs_input_grad else None
