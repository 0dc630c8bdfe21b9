"""Inference as deployed: no training caches left behind, BatchNorm folded into the convolution."""

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, zoo


def randomized(model, rng):
    """``model`` with random BatchNorm affine parameters, statistics and biases (the built ones are trivial)."""
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) if key.endswith("weight") and w.ndim == 1 else
                       rng.normal(0, 0.2, w.shape) if key.endswith("bias") else xpcnn.to_numpy(w)
                       for (key, _, _), w in zip(model.named_parameters(), model.get_weights())])
    model.set_buffers([rng.uniform(0.5, 1.5, b.shape) if key.endswith("var") else rng.normal(0, 0.3, b.shape)
                       for (key, _, _), b in zip(model.named_buffers(), model.get_buffers())])
    return model


def holding(model):
    """Paths of every layer the model runs (nested, fused forms in ``chains`` too) that keeps saved values."""
    seen, out = [], []
    stack = [("", model)]
    while stack:
        path, layer = stack.pop()
        seen.append(layer)
        if layer.saved_values:
            out.append(path or type(layer).__name__)
        if isinstance(layer, layers.Container):
            stack += [(f"{path}.{name}[{i}]", sub) for name, subs in (*layer.branches.items(), *layer.chains.items())
                      for i, sub in enumerate(subs)]
    return out


def test_predict_evaluate_and_call_leave_no_training_caches():
    model = zoo.get("resnet8").build((1, 28, 28), seed=0)
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    model.forward(x, training=True)
    assert holding(model)  # a training forward keeps what the backward needs
    model.predict(x)
    assert holding(model) == []
    model.forward(x, training=True)
    model.evaluate(x, np.zeros(256, dtype=np.int64))
    assert holding(model) == []
    model.forward(x, training=True)
    model(x[:3])
    assert holding(model) == []
    fused = zoo.get("notebook").build((1, 28, 28))  # Conv2D + AvgPool2D run as one fused layer
    fused.forward(x[:2], training=True)
    assert holding(fused) and fused(x[:2]) is not None and holding(fused) == []


def random_net():
    """Conv2D with and without bias before BatchNorm2D, grouped and strided, inside and outside residual branches."""
    return xpcnn.Sequential([
        layers.Conv2D(4, 3, padding=1, bias=False), layers.BatchNorm2D(eps=1e-3), layers.ReLU(),
        layers.Residual([layers.Conv2D(4, 3, padding="same", groups=2), layers.BatchNorm2D(), layers.Tanh()],
                        [layers.Conv2D(4, 1), layers.BatchNorm2D()]),
        layers.BatchNorm2D(), layers.Conv2D(6, 3, stride=2, dilation=1), layers.BatchNorm2D(), layers.AvgPool2D(2),
        layers.Flatten(), layers.Dense(5), layers.BatchNorm1D(), layers.Dense(3)])


@pytest.mark.parametrize("name", ["resnet8", "default", "random"])
def test_fold_batchnorm_gives_the_same_outputs(name):
    rng = np.random.default_rng(1)
    net = random_net() if name == "random" else zoo.get(name)
    # Unfused: model(x) normalises after the conv (built fused, inference would fold too).
    model = randomized(net.build((1, 12, 12) if name == "random" else (1, 28, 28), seed=3, dtype="float64",
                                 fuse=False), rng)
    folded = model.fold_batchnorm()
    x = rng.standard_normal((7, *model.input_shape))
    want, got = xpcnn.to_numpy(model(x)), xpcnn.to_numpy(folded(x))
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    kinds = [type(layer).__name__ for _, layer in folded.walk()]
    conv_bn = sum(type(a) is layers.Conv2D and type(b) is layers.BatchNorm2D
                  for c in [model, *(la for _, la in model.walk() if isinstance(la, layers.Container))]
                  for subs in c.branches.values() for a, b in zip(subs, subs[1:]))
    assert kinds.count("BatchNorm2D") == [type(la).__name__ for _, la in model.walk()].count("BatchNorm2D") - conv_bn
    assert name == "default" or conv_bn > 0
    assert folded is not model and folded.get_weights() is not model.get_weights()
    assert xpcnn.to_numpy(model(x)).tobytes() == want.tobytes()  # the original is untouched


def test_fold_batchnorm_float32_within_rounding():
    rng = np.random.default_rng(2)
    model = randomized(zoo.get("resnet8").build((1, 28, 28), seed=4, fuse=False), rng)
    x = rng.random((9, 1, 28, 28), dtype=np.float32)
    want, got = xpcnn.to_numpy(model(x)), xpcnn.to_numpy(model.fold_batchnorm()(x))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def twins(name, dtype="float64"):
    """The same randomized network built fused (the default) and unfused."""
    shape = (1, 12, 12) if name == "random" else (1, 28, 28)
    net = random_net if name == "random" else lambda: zoo.get(name)
    built = [randomized(net().build(shape, seed=3, dtype=dtype, fuse=fuse), np.random.default_rng(1))
             for fuse in (True, False)]
    assert type(built[0].chains[""][0]).__name__ == "ConvBatchNorm"
    return built


@pytest.mark.parametrize("name", ["resnet8", "random"])
def test_conv_batchnorm_runs_folded_at_inference_and_as_the_pair_in_training(name):
    fused, plain = twins(name)
    x = np.random.default_rng(5).standard_normal((6, *fused.input_shape))
    want = xpcnn.to_numpy(plain(x))
    assert np.abs(xpcnn.to_numpy(fused(x)) - want).max() <= 1e-12 * np.abs(want).max()
    # A backward may follow an inference forward outside inference(): the pair's own gradients.
    for model in (fused, plain):
        model.needs_input_grad = True
    grads = []
    for model in (fused, plain):
        y = model.forward(x, training=False)
        grad_x = xpcnn.to_numpy(model.backward(np.ones_like(y)))
        grads.append([grad_x] + [xpcnn.to_numpy(layer.grads[n]) for _, layer, n in model.named_parameters()])
    for got, want in zip(*grads, strict=True):
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    # Training: the pair as it is (batch statistics, running statistics moved the same).
    for model in (fused, plain):
        model.forward(x, training=True)
    assert all(np.array_equal(a, b) for a, b in zip(fused.get_buffers(), plain.get_buffers()))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_inference_keeps_nothing_and_slices_give_the_same_outputs(backend):
    model = zoo.get("resnet8").build((1, 28, 28), seed=0, dtype="float64", backend=backend)
    x = xpcnn.to_device(np.random.default_rng(0).random((37, 1, 28, 28)), backend)
    with layers.inference():
        whole = xpcnn.to_numpy(model.forward(x))
    assert holding(model) == []
    model.forward(x)
    assert holding(model)  # outside inference() a forward keeps what a backward needs
    assert 1 < model.inference_slice < 37  # the slices below are the model's own rule's
    model.inference_slice = 5
    probabilities = xpcnn.to_numpy(model.predict(x))
    assert holding(model) == []
    e = np.exp(whole - whole.max(axis=1, keepdims=True))
    assert np.abs(probabilities - e / e.sum(axis=1, keepdims=True)).max() <= 1e-12


def test_conv_batchnorm_trains_with_the_pair_as_it_is_now():
    fused, plain = twins("resnet8")
    for model in (fused, plain):
        model.layers[1].momentum = 0.5  # set after build: the fused pair follows it
    x = np.random.default_rng(6).standard_normal((4, 1, 28, 28))
    for model in (fused, plain):
        model.forward(x, training=True)
    assert all(np.array_equal(a, b) for a, b in zip(fused.get_buffers(), plain.get_buffers()))
    conv, bn = fused.layers[:2]
    assert conv.saved_values == () and bn.saved_values == ()  # nothing written into the originals


def test_moving_a_model_drops_what_every_layer_kept():
    model = zoo.get("resnet8").build((1, 28, 28), seed=0, dtype="float64")
    model.forward(np.random.default_rng(0).random((2, 1, 28, 28)), training=True)
    nested = [layer for _, residual in model.walk() if isinstance(residual, layers.Residual)
              for chain in residual.chains.values() for layer in chain if type(layer).__name__ == "ConvBatchNorm"]
    assert nested and all(layer.saved_values for layer in nested)  # fused forms in the residual branches
    model.to("array_api_strict")
    assert holding(model) == []


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_predict_runs_batch_size_images_per_forward_whatever_the_array(backend):
    model = zoo.get("default").build((1, 28, 28), seed=0, dtype="float64", backend=backend)
    x = xpcnn.to_device(np.random.default_rng(0).random((20, 1, 28, 28)), backend)
    whole = xpcnn.to_numpy(model.predict(x))
    seen, forward = [], model.forward
    model.forward = lambda xb, training=False: seen.append(xb.shape[0]) or forward(xb, training)
    parts = xpcnn.to_numpy(model.predict(x, batch_size=7))
    assert seen == [7, 7, 6] and np.abs(parts - whole).max() <= 1e-12
