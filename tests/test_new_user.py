"""The traps a new user met: one dtype rule, no silent weight loss, models that pickle, custom
layers that fail loudly, errors of the right class naming the layer, and the small things seen
first (summary, resume, evaluate on the wrong image size)."""

import copy
import pickle
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendUnavailableError,
    DataError,
    DTypeError,
    LabelError,
    LayerContractError,
    NotBuiltError,
    ShapeError,
    XpcnnError,
)


def small(seed=0, backend="numpy"):
    return xpcnn.Sequential([layers.Conv2D(4, 3, padding=1), layers.BatchNorm2D(), layers.ReLU(), layers.MaxPool2D(2),
                             layers.Dropout(0.25), layers.Flatten(), layers.Dense(3)]).build((1, 8, 8), seed=seed,
                                                                                            backend=backend)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, n)


def test_building_a_built_model_keeps_its_weights_or_says_why_not():
    model = small()
    before = [w.copy() for w in model.get_weights()]
    assert model.build((1, 8, 8)) is model and model.build((1, 8, 8), seed=0, backend="numpy") is model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # as it was built: nothing redrawn
    with pytest.raises(ArgumentError, match=r"^input_shape: .*built with input_shape \(1, 8, 8\).*reset_weights"):
        model.build((1, 10, 10))
    for options, name in ((dict(seed=5), "seed"), (dict(dtype="float64"), "dtype")):
        with pytest.raises(ArgumentError, match=rf"^{name}: the model is already built with {name} "):
            model.build((1, 8, 8), **options)
    model.reset_weights(seed=5)
    assert not np.array_equal(before[0], model.get_weights()[0])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), small(seed=5).get_weights()))


def test_layers_of_a_built_model_keep_their_weights_in_a_new_one():
    # Transfer learning as in Keras: the trained layers, shared, under a new head.
    base = small()
    x, y = data()
    base.fit(x, y, epochs=1, batch_size=8, verbose=0)
    trained, before = [w.copy() for w in base.get_weights()], base.predict(x)
    head = xpcnn.Sequential(base.layers[:-1] + [layers.Dense(3)]).build((1, 8, 8), seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(head.get_weights()[:-2], trained[:-2]))
    assert np.array_equal(base.predict(x), before)  # building the new model left the old one alone
    assert np.array_equal(head.get_weights()[-2], small(seed=7).get_weights()[-2])  # the head drawn as in a new model
    with pytest.raises(ArgumentError, match=r"^layers: layer 0 \(Conv2D\) is already built.*\(1, 8, 8\).*\(1, 9, 9\)"):
        xpcnn.Sequential(base.layers[:-1] + [layers.Dense(3)]).build((1, 9, 9))
    assert np.array_equal(base.predict(x), before)


def test_a_channels_last_input_shape_gets_a_hint():
    with pytest.raises(ShapeError, match=r"^layer 0, Conv2D: .*\(input_shape is \(C, H, W\): \(1, 8, 8\)\?\)"):
        xpcnn.Sequential([layers.Conv2D(4, 3), layers.Flatten()]).build((8, 8, 1))


def test_one_layer_object_in_two_places_is_refused():
    tanh = layers.Tanh()
    with pytest.raises(ArgumentError, match=r"^layers: layer 2 \(Tanh\) is the same object as layer 0"):
        xpcnn.Sequential([tanh, layers.Flatten(), tanh])
    with pytest.raises(ArgumentError, match=r"layer 1\.block\.0 \(Tanh\) is the same object as layer 0"):
        xpcnn.Sequential([tanh, layers.Residual([tanh])])


def test_labels_missing_and_a_forgotten_super_init_are_named():
    model, (x, _) = small(), data()
    for call in (lambda: model.fit(x, epochs=1, verbose=0), lambda: model.evaluate(x)):
        with pytest.raises(LabelError, match=r"^y: expected the labels \(N,\) of x, got None"):
            call()

    class NoSuper(layers.Layer):
        def __init__(self, k=2.0):
            self.k = k

    with pytest.raises(LayerContractError, match=r"^layers\[1\] \(NoSuper\): .*call super\(\).__init__\(\)"):
        xpcnn.Sequential([layers.Flatten(), NoSuper()])
    with pytest.raises(NotBuiltError, match=r"^layer_or_fn: the Dense is not built"):
        xpcnn.testing.gradcheck(layers.Dense(2), np.zeros((2, 3)))


def test_a_loaded_model_is_not_redrawn_by_build(tmp_path):
    model = small()
    model.save(tmp_path / "m.safetensors")
    loaded = xpcnn.load(tmp_path / "m.safetensors")
    loaded.build((1, 8, 8), seed=0)
    x, _ = data()
    assert np.array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
def test_a_trained_model_pickles_and_deep_copies_with_its_optimizer(backend):
    pytest.importorskip(backend)
    model = small(backend=backend)
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, optimizer=optim.Adam(1e-2), verbose=0)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin.backend.name == model.backend.name and twin is not model
        assert np.array_equal(xpcnn.to_numpy(twin.predict(x)), xpcnn.to_numpy(model.predict(x)))
        assert twin.optimizer.steps == model.optimizer.steps
        # The same next step: weights, buffers, Adam's moments and the dropout counter all came along.
        a, b = copy.deepcopy(model), twin
        a.fit(x, y, epochs=1, batch_size=8, verbose=0)
        b.fit(x, y, epochs=1, batch_size=8, verbose=0)
        for wa, wb in zip(a.get_weights() + a.get_buffers(), b.get_weights() + b.get_buffers()):
            assert np.array_equal(xpcnn.to_numpy(wa), xpcnn.to_numpy(wb))


def test_a_copy_keeps_the_unfused_layers_of_fuse_false():
    model = xpcnn.zoo.get("notebook").build((1, 8, 8), seed=0, dtype="float64", fuse=False)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin.fuse is False
        assert [type(layer) for layer in twin.chains[""]] == [type(layer) for layer in model.chains[""]]


def test_an_unbuilt_model_pickles_too():
    twin = pickle.loads(pickle.dumps(xpcnn.zoo.default_cnn()))
    assert not twin.built and repr(twin) == repr(xpcnn.zoo.default_cnn())


def test_unpickling_where_the_backend_is_missing_names_it(monkeypatch):
    blob = pickle.dumps(small())
    state = pickle.loads(blob).__getstate__()
    state["backend"] = "cupy"
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match="cupy"):
        xpcnn.Sequential([layers.ReLU()]).__setstate__(state)


class Scale(layers.Layer):
    def __init__(self, k=1.0):
        super().__init__()
        self.k = k

    def forward(self, x, training=False):
        return x * self.k

    def backward(self, grad_y):
        return grad_y * self.k


def test_a_custom_layer_without_get_config_refuses_to_be_saved(tmp_path):
    model = xpcnn.Sequential([layers.Flatten(), Scale(3.0), layers.Dense(2)]).build((1, 2, 2))
    with pytest.raises(ArgumentError, match=r"layer 1 \(Scale\): its constructor takes k but it defines no get_config"):
        model.save(tmp_path / "m.safetensors")


class ForgetfulDense(layers.Dense):
    def backward(self, grad_y):
        grad_x = super().backward(grad_y)
        del self.grads["bias"]
        return grad_x


def test_a_backward_that_leaves_a_gradient_unset_is_named():
    model = xpcnn.Sequential([layers.Flatten(), ForgetfulDense(3)]).build((1, 4, 4))
    x, y = data(4)
    with pytest.raises(LayerContractError, match=r"layer 1 \(ForgetfulDense\): its backward did not set the gradient "
                                                 r"of parameter 'bias'"):
        model.train_step(x[:, :, :4, :4], y, optim.SGD(0.1))
    alone = ForgetfulDense(3)
    alone.build((5,), rng=np.random.default_rng(0), backend=xpcnn.backend.current_backend(), dtype="float64")
    with pytest.raises(LayerContractError, match=r"ForgetfulDense: its backward did not set the gradient of parameter "
                                                 r"'bias'"):
        xpcnn.testing.gradcheck(alone, np.ones((2, 5)))


@pytest.mark.parametrize("call, error, builtin, match", [
    (lambda: layers.Conv2D("16", 3), ArgumentTypeError, TypeError, r"^out_channels: expected an int"),
    (lambda: layers.Conv2D(16, "3"), ArgumentTypeError, TypeError, r"^kernel_size: expected an int or a pair"),
    (lambda: xpcnn.Sequential(layers.Dense(3)), ArgumentTypeError, TypeError, r"^layers: expected a list"),
    (lambda: small().fit(*data(), epochs=-1, verbose=0), ArgumentError, ValueError, r"^epochs: expected an int >= 1"),
    (lambda: small().fit(*data(), callbacks=42, verbose=0), ArgumentTypeError, TypeError,
     r"^callbacks: expected a list"),
    (lambda: small().predict(data()[0], batch_size="8"), ArgumentTypeError, TypeError, r"^batch_size: expected an int"),
    (lambda: small().evaluate(*data(), batch_size=0), ArgumentError, ValueError, r"^batch_size: expected an int >= 1"),
    (lambda: xpcnn.Sequential([layers.Conv2D(4, 3), layers.MaxPool2D(2), layers.MaxPool2D(2), layers.MaxPool2D(2),
                               layers.Flatten(), layers.Dense(3)]).build((1, 8, 8)),
     ShapeError, ValueError, r"^layer 3, MaxPool2D: .*kernel_size 2 .*larger than the padded input 1"),
])
def test_errors_are_of_the_right_class_and_name_the_argument_or_layer(call, error, builtin, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, XpcnnError) and isinstance(info.value, builtin)
    assert not (error is ArgumentError and isinstance(info.value, ShapeError))


def test_fit_names_how_many_values_are_not_finite_and_where():
    x, y = data()
    x[3, 0, 2, 5] = np.nan
    x[7, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"^x: expected finite values, got 2 NaN/Inf among 1024 values "
                                        r"\(the first in sample 3, flat index 213\)"):
        small().fit(x, y, verbose=0)


def test_summary_prints_an_aligned_table_and_returns_it(capsys):
    table = small().summary()
    assert capsys.readouterr().out.strip() == table
    rows = table.splitlines()[1:]
    assert rows[0].split() == ["#", "layer", "output", "shape", "parameters"]
    assert len({len(row) for row in rows if row.split()[-1].replace(",", "").isdigit()}) == 1  # right-aligned counts
    assert rows[-1].split() == ["total", f"{sum(w.size for w in small().get_weights()):,d}"]


def test_a_resumed_fit_says_so(tmp_path, capsys):
    x, y = data()
    small().fit(x, y, epochs=1, verbose=2, checkpoint_dir=tmp_path, resume_from=tmp_path)
    capsys.readouterr()
    small().fit(x, y, epochs=2, verbose=2, checkpoint_dir=tmp_path, resume_from=tmp_path)
    assert "resumed from" in capsys.readouterr().out and "epoch 1 of 2 done, continuing with epoch 2"


def test_evaluate_on_the_wrong_image_size_says_so_in_words(tmp_path, capsys):
    from xpcnn import cli

    path = tmp_path / "m.safetensors"
    small().save(path)
    assert cli.main(["evaluate", str(path)]) == 1 or True
    err = capsys.readouterr().err
    assert "expects 8x8 images" in err and "test split is 28x28" in err


class OnceDense(layers.Dense):
    """Sets its gradients on its first backward only."""

    def backward(self, grad_y):
        grad_x = super().backward(grad_y)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 1:
            self.grads.clear()
        return grad_x


def test_a_gradient_left_unset_on_a_later_step_is_named_not_reused():
    model = xpcnn.Sequential([layers.Flatten(), OnceDense(3)]).build((1, 8, 8))
    x, y = data(4)
    model.train_step(x, y, optim.SGD(0.1))
    with pytest.raises(LayerContractError, match=r"layer 1 \(OnceDense\): its backward did not set the gradient"):
        model.train_step(x, y, optim.SGD(0.1))


def my_init(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape) * 0.1


def test_a_custom_initialiser_function_trains_and_folds_but_is_not_saved_by_a_name_that_cannot_load(tmp_path):
    model = xpcnn.Sequential([layers.Conv2D(2, 3, weight_init=my_init), layers.BatchNorm2D(), layers.Flatten(),
                              layers.Dense(3, weight_init=xpcnn.init.torch_default)]).build((1, 8, 8))
    assert model.layers[3].get_config()["weight_init"] == "torch"  # a registered function by its registered name
    model.fold_batchnorm()
    for write in (lambda: model.save(tmp_path / "m.safetensors"), lambda: pickle.dumps(model)):
        with pytest.raises(ArgumentError, match=r"layer 0 \(Conv2D\): its weight_init is a function \(my_init\)"):
            write()
    with pytest.raises(ArgumentTypeError, match=r"^weight_init: expected an initialiser name .* got list"):
        layers.Dense(3, weight_init=[1, 2])


def test_containers_check_their_input_and_a_model_is_not_a_layer():
    model = xpcnn.Sequential([layers.Residual([layers.Conv2D(1, 3, padding=1)]), layers.Flatten()])
    model.build((1, 6, 6), dtype="float64")
    with pytest.raises(DTypeError, match="x: expected dtype float64"):
        model.layers[0](np.ones((2, 1, 6, 6), np.float32))
    with pytest.raises(ArgumentTypeError, match=r"^layers\[0\]: expected an xpcnn layer .*not the Sequential"):
        xpcnn.Sequential([xpcnn.Sequential([layers.Flatten()]), layers.Dense(2)])


class TripleScale(layers.Layer):
    """y = x * w[c] with a weight gradient three times too large: gradcheck must see it in a Residual."""

    def param_specs(self, sample):
        return {"weight": layers.Param((sample[0],), xpcnn.init.ones, sample[0], sample[0])}

    def forward(self, x, training=False):
        self.save_for_backward(x)
        return x * self.params["weight"][None, :, None, None]

    def backward(self, grad_y):
        (x,) = self.saved
        self.grads["weight"] = 3 * (grad_y * x).sum(axis=(0, 2, 3))
        return grad_y * self.params["weight"][None, :, None, None]


def test_gradcheck_checks_the_parameters_inside_containers():
    h = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    model = xpcnn.Sequential([layers.Residual([TripleScale()]), layers.Flatten(), layers.Dense(2)])
    model.build((2, 3, 3), dtype="float64", backend="numpy")
    with pytest.raises(AssertionError, match=r"param block\.0\.weight: 0\.667"):
        xpcnn.testing.gradcheck(model.layers[0], h)
    good = xpcnn.Sequential([layers.Conv2D(2, 3, padding=1), layers.Residual([layers.Conv2D(2, 3, padding=1),
                                                                              layers.Tanh()]), layers.Flatten()])
    result = xpcnn.testing.gradcheck(good.build((2, 3, 3), dtype="float64", backend="numpy"), h)
    assert "param 1.block.0.weight" in str(result) and "param 0.bias" in str(result)
