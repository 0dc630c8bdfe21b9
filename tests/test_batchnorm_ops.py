"""Operations per BatchNorm forward and backward, counted as the op-count benchmark counts them
(benchmarks/harness.py, count_ops: torch.profiler on torch CPU tensors; an operation is a
top-level ATen call that does more than make a view, on a GPU at least one kernel launch).

Training mode, with the affine parameters and the running statistics' update: at most 10
operations forward and 8 backward (the two gradient sums reduced together), no host read.
"""

import numpy as np
import pytest

from xpcnn.functional.norm import batch_norm_backward_kernel, batch_norm_kernel

FORWARD_OPS, BACKWARD_OPS = 10, 8


@pytest.fixture(scope="module")
def count_ops(torch):
    from benchmarks.harness import count_ops

    return count_ops


@pytest.mark.parametrize("shape", [(8, 16, 6, 6), (8, 16)], ids=["BatchNorm2D", "BatchNorm1D"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_operation_counts(torch, count_ops, shape, dtype):
    import array_api_compat

    rng = np.random.default_rng(0)
    c = shape[1]
    x, g = (torch.as_tensor(rng.standard_normal(shape).astype(dtype)) for _ in range(2))
    w, b, mean = (torch.as_tensor(rng.standard_normal(c).astype(dtype)) for _ in range(3))
    var = torch.as_tensor(rng.uniform(0.5, 2.0, c).astype(dtype))
    xp = array_api_compat.array_namespace(x)
    out = {}

    def forward():
        out["forward"] = batch_norm_kernel(xp, x, w, b, mean, var, training=True, momentum=0.1, eps=1e-5)

    def backward():
        out["backward"] = batch_norm_backward_kernel(xp, g, x, w, out["forward"][1], training=True, bias=True)

    counts = {"forward": count_ops(forward), "backward": count_ops(backward)}
    for name, limit in (("forward", FORWARD_OPS), ("backward", BACKWARD_OPS)):
        count = counts[name]
        sites = ", ".join(f"{op} x{n // count.steps}" for (op, *_), n in sorted(count.by_site.items()))
        assert count.ops_per_step <= limit, f"{name}: {count.ops_per_step:g} operations > {limit} ({sites})"
        assert count.host_reads_per_step == 0, f"{name}: {count.host_reads_per_step:g} host reads"
    y, _, new_mean, new_var = out["forward"]
    grad_x, grad_w, grad_b = out["backward"]
    assert tuple(y.shape) == tuple(grad_x.shape) == shape
    assert all(tuple(a.shape) == (c,) for a in (new_mean, new_var, grad_w, grad_b))
