"""Augmentation layers: RandomFlip, RandomCrop, RandomTranslation and Normalize against torch's
flips and zero-pad-and-slice, their adjoints by finite differences, the same draws on every
backend, inference behaviour, model files and exact resume of the draws. (The per-backend rows
against PyTorch autograd are in tests/parity_matrix.py's catalogue: random_flip, random_crop,
random_translation, normalize.)"""

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, testing
from xpcnn.errors import ArgumentError, ShapeError

X = np.random.default_rng(0).standard_normal((32, 2, 6, 7))


def train_forward(layer, x, counter=0):
    layer.counter = counter
    return layer.forward(x, training=True)


def test_flips_are_torch_flips_drawn_per_image():
    torch = pytest.importorskip("torch")
    for mode, dims in (("horizontal", [[], [3]]), ("vertical", [[], [2]]), ("both", [[], [2], [3], [2, 3]])):
        y = train_forward(layers.RandomFlip(mode, seed=1), X)
        found = [next(i for i, d in enumerate(dims) if np.array_equal(y[n], torch.flip(torch.tensor(X[n:n + 1]), d)[0]
                                                                       .numpy())) for n in range(len(X))]
        assert sorted(set(found)) == list(range(len(dims))), mode  # every outcome occurs in 32 images
        assert layers.RandomFlip(mode).forward(X) is X  # identity at inference


def test_crop_is_torch_pad_then_slice_at_a_uniform_offset():
    torch = pytest.importorskip("torch")
    layer = layers.RandomCrop((4, 5), padding=(1, 2), seed=3)
    y = train_forward(layer, X)
    padded = torch.nn.functional.pad(torch.tensor(X), (2, 2, 1, 1)).numpy()
    offsets = [next((a, b) for a in range(5) for b in range(8) if np.array_equal(y[n], padded[n, :, a:a + 4, b:b + 5]))
               for n in range(len(X))]
    assert len(set(offsets)) > 16 and y.shape == (32, 2, 4, 5) == (32, *layer.output_shape((2, 6, 7)))
    # inference: Keras's center crop, offset floor((H - h) / 2)
    np.testing.assert_array_equal(layer.forward(X), X[:, :, 1:5, 1:6])
    assert layers.RandomCrop((6, 7), padding=2).forward(X) is X


def test_translation_shifts_whole_pixels_with_zero_fill():
    y = train_forward(layers.RandomTranslation(0.34, 0.3, seed=4), X)  # at most 2 rows and 2 columns
    padded = np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2)))
    shifts = [next((dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)
                   if np.array_equal(y[n], padded[n, :, 2 - dr:8 - dr, 2 - dc:9 - dc])) for n in range(len(X))]
    assert {s[0] for s in shifts} == {s[1] for s in shifts} == {-2, -1, 0, 1, 2}
    assert layers.RandomTranslation(0.5, 0.5).forward(X) is X
    # the largest shift is floor(factor * size) even where the product rounds below it (0.29 * 100)
    wide = np.ones((64, 1, 100, 1))
    shifted = train_forward(layers.RandomTranslation(0.29, 0.0, seed=1), wide)
    assert shifted[:, 0, :, 0].sum(axis=1).min() == 100 - 29


def test_normalize_is_per_channel_in_both_modes():
    layer = layers.Normalize([0.5, -1.0], [2.0, 0.25])
    expected = (X - np.array([0.5, -1.0])[:, None, None]) / np.array([2.0, 0.25])[:, None, None]
    np.testing.assert_allclose(layer.forward(X), expected, rtol=1e-15)
    np.testing.assert_allclose(layer.forward(X, training=True), expected, rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.ones_like(X)), np.broadcast_to(np.array([0.5, 4.0])[:, None, None],
                                                                                  X.shape))
    # per-channel statistics as NumPy computes them: a 1-D array, NumPy scalars
    stats = layers.Normalize(X.mean(axis=(0, 2, 3)), np.float32(2.0))
    assert stats.mean == [float(m) for m in X.mean(axis=(0, 2, 3))] and stats.std == [2.0]


@pytest.mark.parametrize("make", [lambda: layers.RandomFlip("both", seed=2),
                                  lambda: layers.RandomCrop(4, padding=2, seed=2),
                                  lambda: layers.RandomTranslation(0.4, 0.2, seed=2),
                                  lambda: layers.Normalize(0.2, 3.0)])
def test_backward_is_the_adjoint_by_finite_differences(make):
    layer, x = make(), X[:4]

    def backward(g, x):
        train_forward(layer, x)
        return layer.backward(g)

    testing.gradcheck(lambda x: train_forward(layer, x), x, backward=backward, rtol=1e-6)
    testing.gradcheck(lambda x: layer.forward(x), x, backward=lambda g, x: (layer.forward(x), layer.backward(g))[1])


def augmenting_model():
    return xpcnn.Sequential([layers.RandomFlip("both"), layers.RandomCrop(5, padding=1),
                             layers.RandomTranslation(0.2, 0.2), layers.Normalize([0.1, 0.2], [0.5, 2.0]),
                             layers.Flatten(), layers.Dense(3)])


def test_the_same_seed_gives_the_same_batches_on_every_backend():
    outputs = {}
    for name in ("numpy", "array_api_strict", "torch", "jax"):
        try:
            model = augmenting_model().build((2, 6, 7), seed=5, backend=name)
        except xpcnn.errors.BackendUnavailableError:
            continue  # tests/test_parity.py names what is missing
        x = xpcnn.to_device(X.astype(np.float32), model.backend)
        outputs[name] = [xpcnn.to_numpy(model.forward(x, True)) for _ in range(2)]
        # the augmented images themselves are bit-identical
        outputs[name].append(xpcnn.to_numpy(train_forward(model.layers[1], x)))
    for name, (first, second, cropped) in outputs.items():
        assert not np.array_equal(first, second)  # the counter advanced
        np.testing.assert_allclose(first, outputs["numpy"][0], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(second, outputs["numpy"][1], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(cropped, outputs["numpy"][2], err_msg=name)


def test_saved_in_the_model_file_and_resumed_exactly(tmp_path):
    model = augmenting_model().build((2, 6, 7), seed=5)
    model.forward(X.astype(np.float32), True)
    model.save(tmp_path / "m.safetensors")
    loaded = xpcnn.load(tmp_path / "m.safetensors")
    assert [repr(a) for a in loaded.layers] == [repr(a) for a in model.layers]
    x = X.astype(np.float32)
    np.testing.assert_array_equal(xpcnn.to_numpy(loaded(x)), xpcnn.to_numpy(model(x)))
    states = model.layer_states()
    assert states["0"] == {"counter": 1, "seed": model.layers[0].key} and model.layers[0].key != model.layers[1].key
    expected = model.forward(X.astype(np.float32), True)
    loaded.set_layer_states(states)
    np.testing.assert_array_equal(loaded.forward(X.astype(np.float32), True), expected)


def test_bad_arguments_are_named():
    for make, name in ((lambda: layers.RandomFlip("diagonal"), "mode"), (lambda: layers.RandomFlip(seed=-1), "seed"),
                       (lambda: layers.RandomFlip(seed=2**64), "seed"),
                       (lambda: layers.Normalize(np.zeros(()), 1), "mean"),
                       (lambda: layers.RandomTranslation(1.0, 0.1), "height_factor"),
                       (lambda: layers.Normalize([1.0], [0.0]), "std"), (lambda: layers.RandomCrop(0), "size")):
        with pytest.raises((ArgumentError, ShapeError), match=name):
            make()
    with pytest.raises(ShapeError, match="size"):
        layers.RandomCrop(9, padding=1).output_shape((1, 6, 6))
    with pytest.raises(ShapeError, match="mean, std"):
        layers.Normalize([0.1, 0.2, 0.3], 1.0).output_shape((2, 6, 6))
