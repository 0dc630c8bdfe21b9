"""``python -m xpcnn parity``: the parity matrix, op x backend x dtype, against two references.

Every row runs one case of the catalogue below (an op's forward and backward together, one
``train_step``, a short training run, ``fit`` + ``evaluate``) on one backend in one dtype and
checks every output's namespace, device, dtype and shape (:func:`xpcnn.testing.check_parity`)
and its values against

* **PyTorch float64 autograd** (the independent reference: ``torch.nn.functional`` ops,
  ``loss.backward()``, ``torch.optim.SGD``), on the same inputs rounded to the row's dtype;
* **xpcnn on NumPy float64** (cross-backend parity: every backend computes what NumPy does).

A row PASSes when both agree within the project's tolerances (tests/tolerances.py, mirrored in
:data:`xpcnn.testing.TOLERANCES`). A backend that cannot run here is SKIPped with its reason,
unless it was asked for with ``--backend``: then it FAILs, since a requested run that proves
nothing must not look green. Exits 1 when anything FAILs. Standalone:
``python -m tests.parity_matrix --backend numpy --backend cupy --dtype float32``.

The catalogue lives here (and is imported by tests/test_parity.py); PyTorch is imported only
to compute the references.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from xpcnn import functional as F
from xpcnn import layers, optim
from xpcnn.backend import device_of, dtype_name, load_backend, namespace_of, resolve_target, to_numpy
from xpcnn.errors import ArgumentError, ArgumentTypeError, BackendUnavailableError
from xpcnn.functional.dropout import hash_bits, uniform_below
from xpcnn.model import Sequential
from xpcnn.testing import ALL_BACKENDS, DTYPES, TOLERANCES, ParityResult, Tolerance, check_parity

__all__ = ["MATRIX_BACKENDS", "REFERENCES", "OpCase", "Row", "parity_cases", "run_case", "reference_dropout_mask"]

# The matrix: every CPU backend, JAX and the GPU ones (skipped with their reason where absent).
MATRIX_BACKENDS = tuple(dict.fromkeys((*ALL_BACKENDS[:4], "jax", *ALL_BACKENDS[4:])))
REFERENCES = ("torch", "numpy")

_SHORT_REASON = 48
_TOLERANCE_LABELS = {"float64": "float64", "float32": "float32", "float32_training": "float32 training"}


# ---------------------------------------------------------------- the catalogue


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One row of the parity table: ``inputs(rng)`` draws host float64 (and integer) arrays,
    ``run(*arrays)`` computes the op's forward and backward with xpcnn and returns named outputs,
    ``torch(*arrays)`` computes the same outputs with PyTorch autograd in float64 from host
    float64 arrays. ``training`` cases compare float32 relative to the largest value (weights
    drift in float32)."""

    name: str
    description: str
    inputs: Callable[[np.random.Generator], tuple]
    run: Callable[..., dict]
    torch: Callable[..., dict]
    training: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ArgumentTypeError(f"name: expected a non-empty string, got {self.name!r}")
        for field in ("inputs", "run", "torch"):
            if not callable(getattr(self, field)):
                raise ArgumentTypeError(f"{field}: expected a function, got {type(getattr(self, field)).__name__}")

    def tolerance(self, dtype: str) -> Tolerance:
        return TOLERANCES["float32_training" if self.training and dtype == "float32" else dtype]


def _torch():
    import torch

    return torch


def _leaves(*arrays):
    """float64 torch tensors that record gradients."""
    torch = _torch()
    return [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]


def _host_outputs(out: dict) -> dict:
    """Torch tensors -> NumPy arrays (a 0-d loss stays a 0-d array, as xpcnn's ops return it)."""
    return {k: v.detach().numpy().copy() for k, v in out.items()}


def _distinct(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.01) -> np.ndarray:
    """Values with no ties (at least ``gap`` apart), in random order: max-pool gradients are then
    unambiguous and finite differences never cross a window's maximum."""
    n = math.prod(shape)
    return (rng.permutation(n) - n / 2).reshape(shape) * gap + rng.uniform(0, gap / 4, shape)


def _conv_like_case(name: str, description: str, geom: dict, inputs, forward, backward) -> OpCase:
    """An OpCase for conv2d or conv_transpose2d (``name``, also torch's function name): y and the
    gradients of x, the weight and the bias, with the options ``geom``."""

    def run(x, w, b, g):
        gx, gw, gb = backward(g, x, w, **geom)
        return {"y": forward(x, w, b, **geom), "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    def torch(x, w, b, g):
        X, W, B = _leaves(x, w, b)
        y = getattr(_torch().nn.functional, name)(X, W, B, **geom)
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad, "grad_weight": W.grad, "grad_bias": B.grad})

    return OpCase(name, description, inputs, run, torch)


def _conv_case() -> OpCase:
    def inputs(rng):
        x = rng.standard_normal((2, 3, 9, 8))
        w = rng.standard_normal((4, 3, 3, 2)) / math.sqrt(3 * 3 * 2)
        b = rng.standard_normal(4)
        return x, w, b, rng.standard_normal((2, 4, 4, 11))

    return _conv_like_case(
        "conv2d",
        "conv2d + backward, 2x3x9x8, 4 filters 3x2, stride (2,1), pad (1,2), dilation (2,1)",
        dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
        inputs,
        F.conv2d,
        F.conv2d_backward,
    )


def _conv_avg_pool_case() -> OpCase:
    """The fused conv + average pool (``xpcnn.functional.conv_pool``: the pooled columns from the
    tap-shifted averaging matrices) with stride, padding, dilation, groups and overlapping windows."""
    from xpcnn.functional import conv_pool
    from xpcnn.functional.conv import conv2d_geometry
    from xpcnn.functional.pool import pool_geometry

    geom = dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2)

    def inputs(rng):
        x = rng.standard_normal((2, 4, 11, 12))
        w = rng.standard_normal((6, 2, 3, 3)) / math.sqrt(2 * 3 * 3)
        return x, w, rng.standard_normal(6), rng.standard_normal((2, 6, 5, 2))

    def run(x, w, b, g):
        xp = namespace_of(x, w, b, g)
        conv = conv2d_geometry(x.shape, w.shape, **geom)
        pool = pool_geometry((x.shape[0], w.shape[0], *conv.out_hw), 3, 2)
        if not conv_pool.fuses(pool):  # the case exists to check the fused op
            raise AssertionError("conv2d_avg_pool2d: this geometry no longer runs fused")
        y, pooled = conv_pool.conv2d_avg_pool2d_kernel(xp, x, w, b, conv, pool)
        gx, gw, gb = conv_pool.conv2d_avg_pool2d_backward_kernel(
            xp, g, x, w, conv, pool, bias=True, pooled=pooled, input_grad=True
        )
        return {"y": y, "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    def torch(x, w, b, g):
        X, W, B = _leaves(x, w, b)
        functional = _torch().nn.functional
        y = functional.avg_pool2d(functional.conv2d(X, W, B, **geom), 3, 2)
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad, "grad_weight": W.grad, "grad_bias": B.grad})

    return OpCase(
        "conv2d_avg_pool2d",
        "conv2d then avg_pool2d as one op, 2x4x11x12, 6 filters 3x3 in 2 groups, stride "
        "(1,2), pad (2,1), dilation (2,1); pool 3 stride 2",
        inputs,
        run,
        torch,
    )


def _pool_case(name: str, kernel: int, stride: int | None, padding: int, shape, out_hw, description: str) -> OpCase:
    """avg_pool2d or max_pool2d and its backward; a name ending in "_argmax" runs max pooling's
    GPU form (one argmax per window) whatever the device."""
    is_max = name.startswith("max")
    method = "argmax" if "_argmax" in name else None

    def inputs(rng):
        return _distinct(rng, shape), rng.standard_normal((*shape[:2], *out_hw))

    def run(x, g):
        if is_max:
            return {
                "y": F.max_pool2d_forward(x, kernel, stride, padding, method=method)[0],
                "grad_x": F.max_pool2d_backward(g, x, kernel, stride, padding, method=method),
            }
        return {
            "y": F.avg_pool2d(x, kernel, stride, padding),
            "grad_x": F.avg_pool2d_backward(g, x, kernel, stride, padding),
        }

    def torch(x, g):
        (X,) = _leaves(x)
        pool = _torch().nn.functional.max_pool2d if is_max else _torch().nn.functional.avg_pool2d
        y = pool(X, kernel, stride, padding)
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad})

    return OpCase(name, description, inputs, run, torch)


def _unary_case(
    name: str,
    description: str,
    shape,
    scale: float,
    zeros_every: int | None,
    *,
    backward_takes_output: bool,
    torch_op: Callable,
) -> OpCase:
    """An elementwise or softmax-like op ``F.<name>`` and ``F.<name>_backward``."""
    axis = {"softmax": 1, "log_softmax": 1}.get(name)

    def inputs(rng):
        x = rng.standard_normal(shape) * scale
        if zeros_every:
            x.flat[::zeros_every] = 0.0  # exact zeros: the gradient there is PyTorch's choice
        if axis is not None:
            x[0] += 800.0  # would overflow exp without the max subtraction, in any dtype
            x[1, 3] = -800.0
        return x, rng.standard_normal(shape)

    def run(x, g):
        kwargs = {} if axis is None else {"axis": axis}
        y = getattr(F, name)(x, **kwargs)
        grad = getattr(F, f"{name}_backward")(g, y if backward_takes_output else x, **kwargs)
        return {"y": y, "grad_x": grad}

    def torch(x, g):
        (X,) = _leaves(x)
        y = torch_op(X)
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad})

    return OpCase(name, description, inputs, run, torch)


def _unary_cases() -> list[OpCase]:
    def nnf():
        return _torch().nn.functional

    return [
        _unary_case(
            "relu",
            "relu + backward on 2x3x5x5 with exact zeros",
            (2, 3, 5, 5),
            1.0,
            7,
            backward_takes_output=False,
            torch_op=lambda x: nnf().relu(x),
        ),
        _unary_case(
            "softmax",
            "softmax + backward on 4x10 logits, one row shifted by +800",
            (4, 10),
            3.0,
            None,
            backward_takes_output=True,
            torch_op=lambda x: nnf().softmax(x, dim=1),
        ),
        _unary_case(
            "log_softmax",
            "log_softmax + backward on 4x10 logits, one row shifted by +800",
            (4, 10),
            3.0,
            None,
            backward_takes_output=True,
            torch_op=lambda x: nnf().log_softmax(x, dim=1),
        ),
        _unary_case(
            "tanh",
            "tanh + backward on 2x3x4x4 with exact zeros",
            (2, 3, 4, 4),
            3.0,
            5,
            backward_takes_output=True,
            torch_op=lambda x: _torch().tanh(x),
        ),
        _unary_case(
            "sigmoid",
            "sigmoid + backward on 2x3x4x4 with exact zeros",
            (2, 3, 4, 4),
            3.0,
            5,
            backward_takes_output=True,
            torch_op=lambda x: _torch().sigmoid(x),
        ),
        _unary_case(
            "leaky_relu",
            "leaky_relu (0.01) + backward on 2x3x4x4 with exact zeros",
            (2, 3, 4, 4),
            3.0,
            5,
            backward_takes_output=False,
            torch_op=lambda x: nnf().leaky_relu(x, 0.01),
        ),
        _unary_case(
            "gelu",
            "gelu (tanh) + backward on 2x3x4x4 with exact zeros",
            (2, 3, 4, 4),
            3.0,
            5,
            backward_takes_output=False,
            torch_op=lambda x: nnf().gelu(x, approximate="tanh"),
        ),
    ]


def _linear_case() -> OpCase:
    def inputs(rng):
        return (
            rng.standard_normal((4, 6)),
            rng.standard_normal((6, 5)) / math.sqrt(6),
            rng.standard_normal(5),
            rng.standard_normal((4, 5)),
        )

    def run(x, w, b, g):
        gx, gw, gb = F.linear_backward(g, x, w)
        return {"y": F.linear(x, w, b), "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    def torch(x, w, b, g):
        X, W, B = _leaves(x, w, b)
        y = X @ W + B  # the weight is (in, out), as the notebook's
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad, "grad_weight": W.grad, "grad_bias": B.grad})

    return OpCase("linear", "linear + backward, 4x6 @ 6x5 + 5", inputs, run, torch)


def _cross_entropy_case() -> OpCase:
    def inputs(rng):
        z = rng.standard_normal((5, 10)) * 3
        z[2] -= 700.0
        return z, rng.integers(0, 10, 5)

    def run(z, labels):
        loss, grad = F.cross_entropy_with_grad(z, labels)
        return {
            "loss": loss,
            "grad_logits": grad,
            "loss (unfused)": F.cross_entropy(z, labels),
            "grad (unfused)": F.cross_entropy_backward(z, labels),
        }

    def torch(z, labels):
        (Z,) = _leaves(z)
        loss = _torch().nn.functional.cross_entropy(Z, _torch().tensor(labels))
        loss.backward()
        return _host_outputs({"loss": loss, "grad_logits": Z.grad, "loss (unfused)": loss, "grad (unfused)": Z.grad})

    return OpCase(
        "cross_entropy",
        "softmax cross-entropy (mean) + gradient, 5x10 logits, one row shifted by -700",
        inputs,
        run,
        torch,
    )


def _conv_transpose_case() -> OpCase:
    def inputs(rng):
        x = rng.standard_normal((2, 4, 5, 4))
        w = rng.standard_normal((4, 3, 3, 2)) / math.sqrt(3 * 3 * 2)
        return x, w, rng.standard_normal(6), rng.standard_normal((2, 6, 10, 9))

    return _conv_like_case(
        "conv_transpose2d",
        "conv_transpose2d + backward, 2x4x5x4, groups 2, 3x2 kernel, stride 2, pad (1,0), output_padding 1",
        dict(stride=2, padding=(1, 0), output_padding=1, groups=2),
        inputs,
        F.conv_transpose2d,
        F.conv_transpose2d_backward,
    )


def _global_avg_pool_case() -> OpCase:
    def inputs(rng):
        return rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3))

    def run(x, g):
        return {"y": F.global_avg_pool2d(x), "grad_x": F.global_avg_pool2d_backward(g, x)}

    def torch(x, g):
        (X,) = _leaves(x)
        y = _torch().nn.functional.adaptive_avg_pool2d(X, 1).flatten(1)
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad})

    return OpCase("global_avg_pool2d", "global_avg_pool2d + backward, 2x3x5x4 -> 2x3", inputs, run, torch)


def _batch_norm_case() -> OpCase:
    def inputs(rng):
        c = 3
        return (
            rng.standard_normal((4, c, 3, 3)) * 2 + 1,
            rng.standard_normal(c),
            rng.standard_normal(c),
            rng.standard_normal(c),
            rng.uniform(0.5, 2.0, c),
            rng.standard_normal((4, c, 3, 3)),
        )

    def run(x, w, b, mean, var, g):
        out = {}
        for mode, training in (("train", True), ("eval", False)):
            y, saved, new_mean, new_var = F.batch_norm(x, w, b, mean, var, training=training)
            gx, gw, gb = F.batch_norm_backward(g, x, w, saved, training=training)
            out.update(
                {
                    f"{mode} y": y,
                    f"{mode} running_mean": new_mean,
                    f"{mode} running_var": new_var,
                    f"{mode} grad_x": gx,
                    f"{mode} grad_weight": gw,
                    f"{mode} grad_bias": gb,
                }
            )
        return out

    def torch(x, w, b, mean, var, g):
        torch = _torch()
        out = {}
        for mode, training in (("train", True), ("eval", False)):
            X, W, B = _leaves(x, w, b)
            running_mean, running_var = torch.tensor(mean), torch.tensor(var)  # updated in place by torch
            y = torch.nn.functional.batch_norm(
                X, running_mean, running_var, W, B, training=training, momentum=0.1, eps=1e-5
            )
            y.backward(torch.tensor(g))
            out.update(
                {
                    f"{mode} y": y,
                    f"{mode} running_mean": running_mean,
                    f"{mode} running_var": running_var,
                    f"{mode} grad_x": X.grad,
                    f"{mode} grad_weight": W.grad,
                    f"{mode} grad_bias": B.grad,
                }
            )
        return _host_outputs(out)

    return OpCase(
        "batch_norm",
        "batch_norm + backward on 4x3x3x3, training (with running-stat update) and inference",
        inputs,
        run,
        torch,
    )


_DROP_P, _DROP_SEED, _DROP_COUNTER = 0.3, 2024, 7


def reference_dropout_mask(shape: tuple[int, ...], p: float, seed: int, counter: int) -> np.ndarray:
    """The dropout mask as its specification states it (xpcnn.functional.dropout), computed
    independently in unsigned 64-bit NumPy arithmetic: keys k0, k1 = the two halves of
    SplitMix64(SplitMix64(seed) ^ counter); h = triple32(triple32(index ^ k0) ^ k1); an element
    is kept (value 1 / (1 - p)) when the top 24 bits of h are >= round(p * 2**24), else 0."""
    m32, m64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ArgumentError(f"shape: expected a tuple of sizes >= 0, got {shape!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ArgumentError(f"p: expected a drop probability in [0, 1), got {p!r}")
    for name, value in (("seed", seed), ("counter", counter)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= m64:
            raise ArgumentError(f"{name}: expected an int in [0, 2**64), got {value!r}")

    def splitmix64(z: int) -> int:
        z = (z + 0x9E3779B97F4A7C15) & m64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        return z ^ (z >> 31)

    def triple32(h: np.ndarray) -> np.ndarray:  # Wellons' hash on uint32 values held in uint64
        for shift, multiplier in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
            h = ((h ^ (h >> np.uint64(shift))) * np.uint64(multiplier)) & np.uint64(m32)
        return h ^ (h >> np.uint64(14))

    z = splitmix64(splitmix64(seed) ^ counter)
    k0, k1 = np.uint64(z & m32), np.uint64((z >> 32) & m32)
    h = triple32(triple32(np.arange(math.prod(shape), dtype=np.uint64) ^ k0) ^ k1)
    keep = (h >> np.uint64(8)) >= round(p * (1 << 24))
    return (keep / (1.0 - p)).reshape(shape)


def _dropout_cases() -> list[OpCase]:
    def inputs(rng):
        return rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 5, 5))

    def run_mask(x, g):
        return {"mask": F.dropout_mask(x, _DROP_P, seed=_DROP_SEED, counter=_DROP_COUNTER)}

    def torch_mask(x, g):
        return {"mask": reference_dropout_mask(x.shape, _DROP_P, _DROP_SEED, _DROP_COUNTER)}

    def run(x, g):
        mask = F.dropout_mask(x, _DROP_P, seed=_DROP_SEED, counter=_DROP_COUNTER)
        return {"y": F.dropout(x, mask), "grad_x": F.dropout_backward(g, mask)}

    def torch(x, g):
        mask = _torch().tensor(reference_dropout_mask(x.shape, _DROP_P, _DROP_SEED, _DROP_COUNTER))
        (X,) = _leaves(x)
        y = X * mask
        y.backward(_torch().tensor(g))
        return _host_outputs({"y": y, "grad_x": X.grad})

    return [
        OpCase(
            "dropout_mask",
            f"dropout_mask p={_DROP_P}, seed {_DROP_SEED}, counter {_DROP_COUNTER}: the same "
            "bits on every backend (reference: the generator's specification in NumPy uint64)",
            inputs,
            run_mask,
            torch_mask,
        ),
        OpCase("dropout", "dropout + backward with that mask on 2x3x5x5", inputs, run, torch),
    ]


_AUG_SEED, _AUG_COUNTER = 11, 3


def _augment_cases() -> list[OpCase]:
    """The augmentation layers in training mode at (seed 11, counter 3) on 3x2x6x7 images, and
    Normalize. The reference takes the per-image draws from the same hash (on NumPy), moves the
    pixels with torch (flip; zero pad then slice at the drawn offsets) and differentiates with
    autograd: every backend must draw the same offsets and move the same pixels."""

    def draws(n, *highs):
        bits = np.reshape(hash_bits(np, 2 * n, _AUG_SEED, _AUG_COUNTER, device="cpu"), (n, 2))
        return [uniform_below(bits[:, k], high).tolist() for k, high in enumerate(highs)]

    def case(name, description, make, out_hw, reference):
        def inputs(rng):
            return rng.standard_normal((3, 2, 6, 7)), rng.standard_normal((3, 2, *out_hw))

        def run(x, g):
            layer = make()
            if hasattr(layer, "counter"):
                layer.counter = _AUG_COUNTER
            return {"y": layer.forward(x, training=True), "grad_x": layer.backward(g)}

        def torch(x, g):
            (X,) = _leaves(x)
            y = reference(X, _torch())
            y.backward(_torch().tensor(g))
            return _host_outputs({"y": y, "grad_x": X.grad})

        return OpCase(name, description, inputs, run, torch)

    def flip(X, torch):
        v, h = draws(len(X), 2, 2)
        dims = [[d for d, f in ((1, v[n]), (2, h[n])) if f] for n in range(len(X))]
        return torch.stack([X[n].flip(dims[n]) if dims[n] else X[n] for n in range(len(X))])

    def shifted(X, torch, pad, rows, cols, hw):  # an hw window at (rows[n], cols[n]) of X zero-padded by pad
        P = torch.nn.functional.pad(X, (pad[1], pad[1], pad[0], pad[0]))
        return torch.stack([P[n, :, rows[n] : rows[n] + hw[0], cols[n] : cols[n] + hw[1]] for n in range(len(X))])

    def translate(X, torch):  # at most floor(0.34 * 6) = 2 rows and floor(0.3 * 7) = 2 columns
        rows, cols = draws(len(X), 5, 5)
        return shifted(X, torch, (2, 2), [4 - r for r in rows], [4 - c for c in cols], (6, 7))

    mean, std = [0.5, -1.0], [2.0, 0.25]
    return [
        case(
            "random_flip",
            "RandomFlip('both') + backward: the same flips on every backend (torch.flip)",
            lambda: layers.RandomFlip("both", seed=_AUG_SEED),
            (6, 7),
            flip,
        ),
        case(
            "random_crop",
            "RandomCrop((4, 5), padding=1) + backward: torch's zero pad, then the drawn crop",
            lambda: layers.RandomCrop((4, 5), padding=1, seed=_AUG_SEED),
            (4, 5),
            lambda X, torch: shifted(X, torch, (1, 1), *draws(len(X), 5, 5), (4, 5)),
        ),
        case(
            "random_translation",
            "RandomTranslation(0.34, 0.3) + backward: whole-pixel shifts, zero fill",
            lambda: layers.RandomTranslation(0.34, 0.3, seed=_AUG_SEED),
            (6, 7),
            translate,
        ),
        case(
            "normalize",
            "Normalize(mean, std) per channel + backward",
            lambda: layers.Normalize(mean, std),
            (6, 7),
            lambda X, torch: (X - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None],
        ),
    ]


# ---------------------------------------------------------------- whole-model cases

_MODEL_INPUT = (1, 12, 12)


def _small_model():
    return Sequential(
        [
            layers.Conv2D(4, 3, padding=1),
            layers.ReLU(),
            layers.MaxPool2D(2),
            layers.Conv2D(6, 3),
            layers.ReLU(),
            layers.AvgPool2D(2),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )


def _model_on(x, weights):
    """The small test model built on x's backend, device and dtype, with ``weights``."""
    model = _small_model().build(_MODEL_INPUT, seed=0, dtype=dtype_name(x.dtype), backend=resolve_target(device_of(x)))
    model.set_weights(weights)
    return model


def _initial_model():
    return _small_model().build(_MODEL_INPUT, seed=0, dtype="float64", backend="numpy")


def _initial_weights() -> list[np.ndarray]:
    return [to_numpy(w) for w in _initial_model().get_weights()]


def _torch_model(weights):
    """The small model in PyTorch float64 with xpcnn's weights, and the xpcnn parameter keys in
    the same order (a Dense weight is (in, out), a Linear weight (out, in))."""
    torch = _torch()
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 10),
    ).double()
    keys = [key for key, _, _ in _initial_model().named_parameters()]
    params = dict(net.named_parameters())
    with torch.no_grad():
        for key, w in zip(keys, weights):
            w = np.asarray(w, dtype=np.float64)
            params[key].copy_(torch.tensor(w.T if key.startswith("7.weight") else w))
    return net, keys, params


def _as_xpcnn(key: str, tensor) -> np.ndarray:
    a = tensor.detach().numpy().copy()
    return a.T.copy() if key.startswith("7.weight") else a


def _train_step_case() -> OpCase:
    def inputs(rng):
        return (rng.uniform(0, 1, (8, *_MODEL_INPUT)), rng.integers(0, 10, 8), *_initial_weights())

    def run(x, labels, *weights):
        model = _model_on(x, weights)
        loss = model.train_step(x, labels, optim.SGD(lr=0.1, momentum=0.9))
        out = {"loss": loss}
        for key, layer, name in model.named_parameters():
            out[f"{key} grad"] = layer.grads[name]
            out[f"{key} updated"] = layer.params[name]
        return out

    def torch(x, labels, *weights):
        torch = _torch()
        net, keys, params = _torch_model(weights)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(labels))
        loss.backward()
        out = {"loss": loss.item()}
        out.update({f"{key} grad": _as_xpcnn(key, params[key].grad) for key in keys})
        opt.step()
        out.update({f"{key} updated": _as_xpcnn(key, params[key]) for key in keys})
        return out

    return OpCase(
        "train_step",
        "Sequential.train_step on 8 images 1x12x12: conv, relu, max pool, conv, relu, avg pool, dense; SGD momentum",
        inputs,
        run,
        torch,
    )


def _train_run_case(steps: int = 5) -> OpCase:
    def inputs(rng):
        return (rng.uniform(0, 1, (steps, 8, *_MODEL_INPUT)), rng.integers(0, 10, (steps, 8)), *_initial_weights())

    def run(xs, labels, *weights):
        model = _model_on(xs, weights)
        opt = optim.SGD(lr=0.05, momentum=0.9)
        out = {f"loss {i}": model.train_step(xs[i, ...], labels[i, ...], opt) for i in range(steps)}
        out.update({key: layer.params[name] for key, layer, name in model.named_parameters()})
        return out

    def torch(xs, labels, *weights):
        torch = _torch()
        net, keys, params = _torch_model(weights)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        out = {}
        for i in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(torch.tensor(xs[i])), torch.tensor(labels[i]))
            loss.backward()
            opt.step()
            out[f"loss {i}"] = loss.item()
        out.update({key: _as_xpcnn(key, params[key]) for key in keys})
        return out

    return OpCase(
        "train_run",
        f"{steps} SGD-momentum train_steps on the train_step model: losses and final weights",
        inputs,
        run,
        torch,
        training=True,
    )


_FIT = dict(n=32, epochs=2, batch_size=8, lr=0.05, momentum=0.9, seed=5, eval_batch=12)


def _fit_evaluate_case() -> OpCase:
    n, epochs, batch = _FIT["n"], _FIT["epochs"], _FIT["batch_size"]

    def inputs(rng):
        return (rng.uniform(0, 1, (n, *_MODEL_INPUT)), rng.integers(0, 10, n), *_initial_weights())

    def run(x, labels, *weights):
        model = _model_on(x, weights)
        history = model.fit(
            x,
            labels,
            epochs=epochs,
            batch_size=batch,
            seed=_FIT["seed"],
            verbose=0,
            optimizer=optim.SGD(_FIT["lr"], momentum=_FIT["momentum"]),
        )
        out = {f"fit {k} epoch {e + 1}": history[k][e] for k in ("loss", "accuracy") for e in range(epochs)}
        out.update({key: layer.params[name] for key, layer, name in model.named_parameters()})
        out.update({f"evaluate {k}": v for k, v in model.evaluate(x, labels, batch_size=_FIT["eval_batch"]).items()})
        return out

    def torch(x, labels, *weights):
        """fit's documented contract: each epoch visits rng.permutation(N) in batches, rng =
        numpy.random.default_rng(seed); per-epoch loss = mean of the sample losses before each
        update, accuracy likewise; evaluate = mean loss and accuracy over all samples."""
        torch = _torch()
        net, keys, params = _torch_model(weights)
        opt = torch.optim.SGD(net.parameters(), lr=_FIT["lr"], momentum=_FIT["momentum"])
        X, Y = torch.tensor(x), torch.tensor(labels)
        rng = np.random.default_rng(_FIT["seed"])
        out = {}
        losses, accuracies = [], []
        for _ in range(epochs):
            order = rng.permutation(n)
            total, correct = 0.0, 0
            for start in range(0, n, batch):
                idx = torch.tensor(order[start : start + batch])
                opt.zero_grad()
                logits = net(X[idx])
                loss = torch.nn.functional.cross_entropy(logits, Y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == Y[idx]).sum())
            losses.append(total / n)
            accuracies.append(correct / n)
        out.update({f"fit loss epoch {e + 1}": v for e, v in enumerate(losses)})
        out.update({f"fit accuracy epoch {e + 1}": v for e, v in enumerate(accuracies)})
        out.update({key: _as_xpcnn(key, params[key]) for key in keys})
        with torch.no_grad():
            logits = net(X)
            out["evaluate loss"] = float(torch.nn.functional.cross_entropy(logits, Y))
            out["evaluate accuracy"] = float((logits.argmax(1) == Y).double().mean())
        return out

    return OpCase(
        "fit_evaluate",
        f"Sequential.fit ({epochs} epochs of {n} images, batch {batch}, shuffled, SGD momentum) "
        f"then evaluate: per-epoch loss and accuracy, final weights, evaluate's loss and accuracy",
        inputs,
        run,
        torch,
        training=True,
    )


def parity_cases() -> list[OpCase]:
    """Every op (forward and backward), one training step, a short training run, fit + evaluate."""
    return [
        _conv_case(),
        _conv_avg_pool_case(),
        _pool_case(
            "avg_pool2d",
            3,
            2,
            1,
            (2, 3, 9, 8),
            (5, 4),
            "avg_pool2d + backward, kernel 3, stride 2, pad 1 (zeros counted)",
        ),
        _pool_case(
            "avg_pool2d_tiled",
            2,
            None,
            0,
            (2, 3, 9, 8),
            (4, 4),
            "avg_pool2d + backward, kernel 2 = stride (non-overlapping windows), last row dropped",
        ),
        _pool_case(
            "max_pool2d", 3, 2, 1, (2, 3, 9, 8), (5, 4), "max_pool2d + backward, kernel 3, stride 2, pad 1 (-inf)"
        ),
        _pool_case(
            "max_pool2d_argmax",
            3,
            2,
            1,
            (2, 3, 9, 8),
            (5, 4),
            "max_pool2d + backward, GPU form (argmax per window), kernel 3, stride 2, pad 1",
        ),
        _pool_case(
            "max_pool2d_argmax_tiled",
            2,
            None,
            0,
            (2, 3, 9, 8),
            (4, 4),
            "max_pool2d + backward, GPU form, kernel 2 = stride (windows tile), last row dropped",
        ),
        *_unary_cases(),
        _linear_case(),
        _cross_entropy_case(),
        _conv_transpose_case(),
        _global_avg_pool_case(),
        _batch_norm_case(),
        *_dropout_cases(),
        *_augment_cases(),
        _train_step_case(),
        _train_run_case(),
        _fit_evaluate_case(),
    ]


# ---------------------------------------------------------------- one row


@dataclasses.dataclass
class Row:
    """One case x backend x dtype: the comparison with each reference (None: not run) and the
    overall status ("PASS", "FAIL" or "SKIP")."""

    case: str
    backend: str
    dtype: str
    status: str
    vs_torch: ParityResult | None
    vs_numpy: ParityResult | None
    reason: str = ""


def torch_reference_available() -> str | None:
    """None when PyTorch can compute the references here, else why not."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install 'xpcnn[torch]'), so rows are compared with NumPy only"
    return None


def _jax_x64(backends: Sequence[str], dtype: str):
    """JAX's 64-bit mode for the float64 rows of a jax backend, scoped to this block (JAX keeps
    float64 off by default; this module does not flip that process-wide switch)."""
    if (
        dtype == "float64"
        and any(str(b).partition(":")[0] == "jax" for b in backends)
        and importlib.util.find_spec("jax") is not None
    ):
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def run_case(
    case: OpCase,
    backends: Sequence[str],
    dtype: str,
    *,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    requested: bool = False,
    references: Sequence[str] = REFERENCES,
) -> list[Row]:
    """Rows of one case on ``backends`` in ``dtype``, inputs from ``default_rng(seed)``.

    ``requested``: the backends were asked for explicitly, so one that cannot run is a FAIL
    (with its reason), not a SKIP. ``references``: which of "torch" (PyTorch float64 autograd)
    and "numpy" (xpcnn on NumPy float64) to compare with."""
    if not isinstance(case, OpCase):
        raise ArgumentTypeError(
            f"case: expected a tests.parity_matrix.OpCase (see parity_cases()), got {type(case).__name__}"
        )
    if dtype not in DTYPES:
        raise ArgumentError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(backends, str) or not all(isinstance(b, str) for b in backends):
        raise ArgumentTypeError(
            f"backends: expected a list of backend names such as ['numpy', 'torch'], got {backends!r}"
        )
    unknown = set(references) - set(REFERENCES)
    if isinstance(references, str) or unknown:
        raise ArgumentError(f"references: expected some of {', '.join(REFERENCES)}, got {references!r}")
    tol = tolerance or case.tolerance(dtype)
    args = case.inputs(np.random.default_rng(seed))
    kwargs = dict(backends=list(backends), dtype=dtype, rtol=tol.rtol, atol=tol.atol, relative_to=tol.relative_to)
    found = {}
    with _jax_x64(backends, dtype):
        if "torch" in references:
            found["torch"] = check_parity(case.run, *args, reference=case.torch, **kwargs)
        if "numpy" in references:
            found["numpy"] = check_parity(case.run, *args, **kwargs)
    rows = []
    for i, backend in enumerate(backends):
        vs_torch = found["torch"][i] if "torch" in found else None
        vs_numpy = found["numpy"][i] if "numpy" in found else None
        results = [r for r in (vs_torch, vs_numpy) if r is not None]
        skipped = next((r for r in results if r.status == "SKIP"), None)
        if skipped is not None:
            status = "FAIL" if requested else "SKIP"
            reason = ("requested but cannot run here: " if requested else "") + skipped.reason
        else:
            failed = [
                f"vs {name}: {r.reason}"
                for name, r in zip(("torch", "numpy"), (vs_torch, vs_numpy))
                if r is not None and r.status == "FAIL"
            ]
            status, reason = ("FAIL", "; ".join(failed)) if failed else ("PASS", "")
        rows.append(Row(case.name, str(backend), dtype, status, vs_torch, vs_numpy, reason))
    return rows


# ---------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``parity`` options to ``parser`` (the CLI's subparser, or a standalone one)."""
    parser.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help=f"backend to check, repeatable (default: all of {', '.join(MATRIX_BACKENDS)}, those that "
        "cannot run here skipped); one named here that cannot run FAILs. A device may follow a "
        "colon: cupy:1, torch:cuda, array_api_strict:device1",
    )
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="dtype to check, repeatable (default: both)")
    parser.add_argument(
        "--op",
        action="append",
        metavar="NAME",
        help=f"only these cases, repeatable (default: all of {', '.join(c.name for c in parity_cases())})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    return parser


def _selected_backends(names: Sequence[str] | None) -> list[str]:
    """Validate names up front: an unknown name (or device) is a usage error, not a row."""
    chosen = list(dict.fromkeys(names or MATRIX_BACKENDS))
    for name in chosen:
        try:
            load_backend(name)
        except BackendUnavailableError:
            pass  # reported per row, with the reason
    return chosen


def _bound(tol: Tolerance) -> str:
    scale = "max|ref|" if tol.relative_to == "max" else "|ref|"
    return (f"{tol.atol:g} + " if tol.atol else "") + f"{tol.rtol:g} * {scale}"


def _rel(result: ParityResult | None) -> str:
    if result is None or result.status == "SKIP" or result.max_rel != result.max_rel:
        return "-"
    return f"{result.max_rel:.2e}"


def format_table(rows: list[Row]) -> str:
    """op, backend, dtype, max relative error vs torch and vs numpy, result (with the reason)."""
    header = ("op", "backend", "dtype", "rel err vs torch", "rel err vs numpy", "result")
    body = []
    for r in rows:
        result = r.status
        if r.reason:
            reason = r.reason if r.status == "FAIL" else r.reason.split(";")[0]
            result += f" ({reason[:_SHORT_REASON] + '...' if len(reason) > _SHORT_REASON else reason})"
        body.append((r.case, r.backend, r.dtype, _rel(r.vs_torch), _rel(r.vs_numpy), result))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, tuple("-" * w for w in widths) + ("------",), *body]:
        cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the parity table for ``args`` (from :func:`add_arguments`); returns the exit code."""
    try:
        backends = _selected_backends(args.backend)
    except ValueError as e:
        print(f"error: xpcnn parity: {e}", file=sys.stderr)
        return 2
    dtypes = list(dict.fromkeys(args.dtype or DTYPES))
    cases = parity_cases()
    if args.op:
        unknown = sorted(set(args.op) - {c.name for c in cases})
        if unknown:
            print(
                f"error: xpcnn parity: unknown op(s) {', '.join(unknown)}; valid: {', '.join(c.name for c in cases)}",
                file=sys.stderr,
            )
            return 2
        cases = [c for c in cases if c.name in args.op]
    no_torch = torch_reference_available()
    references = ("numpy",) if no_torch else REFERENCES

    start = time.perf_counter()
    rows: list[Row] = []
    for case in cases:
        per_dtype = [
            run_case(case, backends, dtype, seed=args.seed, requested=bool(args.backend), references=references)
            for dtype in dtypes
        ]
        rows += [results[i] for i in range(len(backends)) for results in per_dtype]
    # A backend that cannot run here is one row, not one per op and dtype.
    unusable = {r.backend: r for r in rows if r.status == "SKIP" or r.reason.startswith("requested but")}
    table = [r for r in rows if r.backend not in unusable]
    table += [Row("(all)", b, "(all)", r.status, None, None, r.reason) for b, r in unusable.items()]

    names = {"torch": "PyTorch float64 autograd", "numpy": "xpcnn on NumPy float64"}
    print(
        f"xpcnn parity: {len(cases)} cases x {len(backends)} backends x {len(dtypes)} dtypes against "
        f"{' and '.join(names[r] for r in references)} "
        f"(python {platform.python_version()}, {platform.machine()}, seed {args.seed})"
    )
    if no_torch:
        print(f"note: {no_torch}")
    print(format_table(table))
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(
        f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
        f"in {time.perf_counter() - start:.1f} s"
    )
    for backend, r in unusable.items():
        print(f"  {r.status} {backend}: {r.reason}")
    for r in rows:
        if r.status == "FAIL" and r.backend not in unusable:
            print(f"  FAIL {r.case} {r.backend} {r.dtype}: {r.reason}")
    print(
        "rel err = max|err| / max|ref|; a row passes when every output has "
        + "; ".join(f"{_TOLERANCE_LABELS[name]}: |err| <= {_bound(tol)}" for name, tol in TOLERANCES.items())
    )
    return 1 if counts["FAIL"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.parity_matrix", description=__doc__.split("\n\n")[0])
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
