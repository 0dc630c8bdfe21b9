"""The exact GELU, x Phi(x) (``GELU(approximate="none")``): the Array API has no erf, so Phi comes
from Cephes' rational erf / erfc (xpcnn.functional.activation.normal_cdf_kernel). Checked against
arbitrary precision (mpmath), against PyTorch's forward and autograd, in float32, and as a layer."""

import math

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F
from xpcnn import layers
from xpcnn.errors import ArgumentError

torch = pytest.importorskip("torch")

EXACT_RTOL = 1e-12  # float64 against PyTorch where PyTorch itself is accurate (x > -3)


def test_forward_is_correctly_rounded_to_a_few_ulps_in_both_tails():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.concatenate([np.linspace(-37, 37, 3001), np.random.default_rng(0).normal(0, 3, 2000)])
    exact = np.array([float(mpmath.mpf(v) * mpmath.ncdf(mpmath.mpf(v))) for v in x])
    got = F.gelu(x, approximate="none")
    kept = np.abs(exact) > 1e-300  # below that the result is subnormal
    assert (np.abs(got - exact)[kept] / np.abs(exact[kept])).max() <= 16 * np.finfo(np.float64).eps
    x32 = x[np.abs(x) < 12].astype(np.float32)
    exact32 = np.array([float(mpmath.mpf(float(v)) * mpmath.ncdf(mpmath.mpf(float(v)))) for v in x32])
    kept = np.abs(exact32) > 1e-30
    got32 = F.gelu(x32, approximate="none")
    assert got32.dtype == np.float32
    assert (np.abs(got32 - exact32)[kept] / np.abs(exact32[kept])).max() <= 8 * np.finfo(np.float32).eps


def test_forward_and_backward_match_torch_in_float64():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-3, 12, 4001), rng.normal(0, 2, 4000)])
    x = x[x > -3]  # below, torch's 1 + erf(x / sqrt 2) loses digits to cancellation (see the mpmath test)
    g = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt, approximate="none")
    yt.backward(torch.from_numpy(g))
    y = F.gelu(x, approximate="none")
    assert (np.abs(y - yt.detach().numpy()) / np.maximum(np.abs(yt.detach().numpy()), 1e-300)).max() <= EXACT_RTOL
    grad = F.gelu_backward(g, x, approximate="none")
    assert np.abs(grad - xt.grad.numpy()).max() <= EXACT_RTOL * np.abs(xt.grad.numpy()).max()


def test_special_values():
    got = F.gelu(np.array([0.0, -0.0, 1e-300, math.inf, math.nan, 40.0, -40.0]), approximate="none")
    assert got[0] == 0 and got[2] == 1e-300 / 2 and got[3] == math.inf and math.isnan(got[4])
    assert got[5] == 40.0 and got[6] == 0


def test_layer_option_is_saved_and_its_backward_matches_torch(tmp_path):
    assert layers.GELU().get_config() == {"approximate": "tanh"}
    with pytest.raises(ArgumentError, match="approximate"):
        layers.GELU(approximate="erf")
    with pytest.raises(ArgumentError, match="approximate"):
        F.gelu(np.zeros(2), approximate="exact")
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(5), layers.GELU(approximate="none"), layers.Dense(3)])
    model.build((1, 2, 3), dtype="float64")
    model.save(tmp_path / "m.safetensors")
    back = xpcnn.load(tmp_path / "m.safetensors")
    assert back.layers[2].approximate == "none"
    x = np.random.default_rng(2).standard_normal((4, 1, 2, 3))
    np.testing.assert_array_equal(xpcnn.to_numpy(back(x)), xpcnn.to_numpy(model(x)))
    layer = layers.GELU(approximate="none")
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(xt, approximate="none").sum().backward()
    layer.forward(x)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), xt.grad.numpy(), rtol=EXACT_RTOL, atol=1e-15)
