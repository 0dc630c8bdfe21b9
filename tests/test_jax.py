"""The jax backend: fit / evaluate / predict / checkpoints on it, float64 only with JAX's 64-bit
mode, and the compiled training step (xpcnn.jit) against the eager one."""

import numpy as np
import pytest

import xpcnn
from xpcnn import jit, layers, optim
from xpcnn.errors import ArgumentError, BackendMismatchError, DTypeError, NonFiniteError

from .tolerances import FLOAT32_TRAINING_RTOL, FLOAT64_RTOL

jax = pytest.importorskip("jax")


def _x64_mode(enabled: bool):
    """JAX's 64-bit mode set for one test, then back to what it was (it is process-wide)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
    yield from _x64_mode(True)


@pytest.fixture
def no_x64():
    yield from _x64_mode(False)


def small_net():
    return xpcnn.Sequential([layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                             layers.Flatten(), layers.Dense(4)])


def deep_net():
    """BatchNorm buffers and a Residual block: everything the compiled step threads as state."""
    return xpcnn.Sequential([layers.Conv2D(4, 3, padding=1, bias=False), layers.BatchNorm2D(), layers.ReLU(),
                             layers.Residual([layers.Conv2D(4, 3, padding=1, bias=False), layers.BatchNorm2D(),
                                              layers.ReLU()]),
                             layers.GlobalAvgPool2D(), layers.Dense(4)])


def quadrants(n=96, seed=0, dtype=np.float32):
    """Images (n, 1, 8, 8) labelled by their brightest quadrant: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8)).astype(dtype)
    means = x.reshape(n, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(n, 4)
    return x, np.argmax(means, axis=1)


def assert_same_weights(a, b, rtol):
    for wa, wb in zip(a.get_weights() + a.get_buffers(), b.get_weights() + b.get_buffers()):
        wa, wb = xpcnn.to_numpy(wa), xpcnn.to_numpy(wb)
        np.testing.assert_allclose(wa, wb, rtol=0, atol=rtol * np.abs(wb).max())


def weights_of(model):
    return [np.array(xpcnn.to_numpy(w)) for w in model.get_weights() + model.get_buffers()]


# ---------------------------------------------------------------- backend basics


def test_float64_needs_x64_and_says_how(no_x64):
    with pytest.raises(DTypeError, match=r'jax_enable_x64", True\).*JAX_ENABLE_X64=1'):
        small_net().build((1, 8, 8), dtype="float64", backend="jax")
    with pytest.raises(DTypeError, match="64-bit mode"):
        xpcnn.to_device(np.ones(3), "jax")
    model = small_net().build((1, 8, 8), dtype="float64", backend="numpy")
    with pytest.raises(DTypeError, match="64-bit mode"):
        model.to("jax")
    assert not jax.config.jax_enable_x64  # never flipped behind the caller's back
    assert xpcnn.to_device(np.ones(3, np.float32), "jax").dtype == jax.numpy.float32
    # 64-bit integers: JAX would keep 32 bits; the values that fit go as int32, others are refused
    labels = xpcnn.to_device(np.array([2**31 - 1, -3]), "jax")
    assert labels.dtype == jax.numpy.int32 and labels.tolist() == [2**31 - 1, -3]
    for wide in (np.array([2**40, 3]), np.array([2**32], np.uint64), np.ones(2, np.complex128)):
        with pytest.raises(DTypeError, match=f"{wide.dtype} values beyond 32 bits.*64-bit mode"):
            xpcnn.to_device(wide, "jax")


def test_mixing_jax_and_numpy_arrays_is_a_backend_mismatch():
    model = small_net().build((1, 8, 8), backend="jax")
    x, _ = quadrants(4)
    with pytest.raises(BackendMismatchError, match="to_device"):
        model(x)
    with pytest.raises(BackendMismatchError, match="jax array on cpu:0 and numpy array on cpu"):
        xpcnn.namespace_of(xpcnn.to_device(x, "jax"), x)


# ---------------------------------------------------------------- fit, evaluate, predict


def test_fit_evaluate_predict_float32_match_numpy():
    x, y = quadrants()
    runs = {}
    for name in ("numpy", "jax"):
        model = small_net().build((1, 8, 8), seed=1, backend=name)
        history = model.fit(x, y, epochs=3, batch_size=16, optimizer=optim.Adam(1e-2), verbose=0, seed=2)
        runs[name] = (model, history.history, model.evaluate(x, y), model.predict(x[:5]))
    (ours, hist, result, probs), (ref, ref_hist, ref_result, ref_probs) = runs["jax"], runs["numpy"]
    assert xpcnn.backend.library_of(probs) == "jax" and probs.dtype == jax.numpy.float32 and probs.shape == (5, 4)
    assert all(xpcnn.backend.library_of(w) == "jax" for w in ours.get_weights())
    assert_same_weights(ours, ref, FLOAT32_TRAINING_RTOL)
    np.testing.assert_allclose(hist["loss"], ref_hist["loss"], rtol=FLOAT32_TRAINING_RTOL)
    np.testing.assert_allclose(xpcnn.to_numpy(probs), ref_probs, rtol=0, atol=FLOAT32_TRAINING_RTOL)
    assert result["accuracy"] == ref_result["accuracy"] and hist["loss"][-1] < hist["loss"][0]
    assert abs(result["loss"] - ref_result["loss"]) <= FLOAT32_TRAINING_RTOL * ref_result["loss"]


def test_fit_float64_with_x64_matches_numpy(x64):
    x, y = quadrants(dtype=np.float64)
    jax_model = deep_net().build((1, 8, 8), seed=1, dtype="float64", backend="jax")
    ref = deep_net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    for model in (jax_model, ref):
        model.fit(x, y, epochs=2, batch_size=32, optimizer=optim.SGD(0.1, momentum=0.9), verbose=0,
                  validation_data=(x[:32], y[:32]))
    assert jax_model.get_weights()[0].dtype == jax.numpy.float64
    assert_same_weights(jax_model, ref, FLOAT64_RTOL)
    ours, theirs = jax_model.evaluate(x[:32], y[:32]), ref.evaluate(x[:32], y[:32])
    assert abs(ours["loss"] - theirs["loss"]) <= FLOAT64_RTOL * theirs["loss"]
    assert ours["accuracy"] == theirs["accuracy"]


def test_checkpoint_resume_on_jax_continues_exactly(tmp_path, x64):
    x, y = quadrants(dtype=np.float64)
    whole = small_net().build((1, 8, 8), seed=3, dtype="float64", backend="jax")
    whole.fit(x, y, epochs=3, batch_size=32, optimizer=optim.Adam(1e-2), verbose=0, seed=5)
    first = small_net().build((1, 8, 8), seed=3, dtype="float64", backend="jax")
    first.fit(x, y, epochs=2, batch_size=32, optimizer=optim.Adam(1e-2), verbose=0, seed=5, checkpoint_dir=tmp_path)
    resumed = small_net().build((1, 8, 8), seed=0, dtype="float64", backend="jax")
    history = resumed.fit(x, y, epochs=3, batch_size=32, verbose=0, resume_from=tmp_path, checkpoint_dir=tmp_path)
    assert len(history.history["loss"]) == 3
    assert isinstance(resumed.optimizer, optim.Adam) and resumed.optimizer.steps == whole.optimizer.steps == 9
    assert all(xpcnn.backend.library_of(a) == "jax" for s in resumed.optimizer.state.values() for a in s.values())
    assert_same_weights(resumed, whole, FLOAT64_RTOL)


def test_saved_model_loads_on_jax(tmp_path):
    x, y = quadrants()
    model = small_net().build((1, 8, 8), seed=1, backend="numpy")
    model.save(tmp_path / "m.safetensors")
    loaded = xpcnn.load(tmp_path / "m.safetensors", backend="jax")
    assert xpcnn.backend.library_of(loaded.get_weights()[0]) == "jax"
    np.testing.assert_allclose(xpcnn.to_numpy(loaded.predict(x)), model.predict(x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the compiled step


@pytest.mark.parametrize("make_opt, net", [
    (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), deep_net),
    (lambda: optim.Adam(1e-2, weight_decay=1e-3), small_net),
    (lambda: optim.AdamW(1e-2), small_net)], ids=["sgd_nesterov_deep", "adam", "adamw"])
def test_compiled_step_matches_eager_step_for_10_steps(make_opt, net, x64):
    """The compiled step on jax against the eager step (the same layer code run op by op, on
    NumPy: the eager jax rows are the parity suite's), float64, 10 steps."""
    x, y = quadrants(32, dtype=np.float64)
    xb, yb = xpcnn.to_device(x, "jax"), xpcnn.to_device(y, "jax")
    compiled_model = net().build((1, 8, 8), seed=4, dtype="float64", backend="jax")
    eager_model = net().build((1, 8, 8), seed=4, dtype="float64", backend="numpy")
    compiled_opt, eager_opt = make_opt(), make_opt()
    step = jit.make_step(compiled_model, compiled_opt)
    for i in range(10):
        loss, correct = step.train(xb[i:i + 16], yb[i:i + 16])
        eager_loss = eager_model.train_step(x[i:i + 16], y[i:i + 16], eager_opt)
        assert abs(loss - eager_loss) <= FLOAT64_RTOL * eager_loss and 0 <= correct <= 16
    assert_same_weights(compiled_model, eager_model, FLOAT64_RTOL)
    assert compiled_opt.steps == eager_opt.steps == 10 and list(compiled_opt.state) == list(eager_opt.state)
    for key, state in eager_opt.state.items():
        for name, want in state.items():
            np.testing.assert_allclose(xpcnn.to_numpy(compiled_opt.state[key][name]), want, rtol=0,
                                       atol=FLOAT64_RTOL * np.abs(want).max())
    # No tracer is left behind in the layers.
    arrays = compiled_model.get_weights() + compiled_model.get_buffers()
    assert all(isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer) for a in arrays)
    assert all(not isinstance(g, jax.core.Tracer) for layer in compiled_model.layers for g in layer.grads.values())
    assert all(not isinstance(c, jax.core.Tracer) for layer in compiled_model.layers for c in layer.saved_values)


def test_learning_rate_changes_do_not_recompile(monkeypatch):
    # jax traces CompiledStep.pure once per compilation (a cache miss); a cached call skips it.
    traces = []
    pure = jit.CompiledStep.pure

    def counting_pure(*args, **kwargs):
        traces.append(kwargs["hyper"])
        return pure(*args, **kwargs)

    monkeypatch.setattr(jit.CompiledStep, "pure", staticmethod(counting_pure))
    x, y = quadrants(16)
    model = small_net().build((1, 8, 8), backend="jax")
    opt = optim.SGD(0.1)
    step = jit.make_step(model, opt)
    xb, yb = xpcnn.to_device(x, "jax"), xpcnn.to_device(y, "jax")
    step.train(xb, yb)
    opt.lr = 0.05
    before = weights_of(model)
    step.train(xb, yb)
    after = weights_of(model)
    assert len(traces) == 1
    assert not np.array_equal(before[0], after[0])
    opt.momentum = 0.9  # a structural hyper-parameter: traced again
    step.train(xb, yb)
    assert len(traces) == 2


def test_nan_guard_under_compile_names_the_step_and_keeps_the_weights():
    x, y = quadrants(16)
    x[3, 0, 2, 2] = np.nan
    model = small_net().build((1, 8, 8), backend="jax")
    opt = optim.Adam(1e-2)
    step = jit.make_step(model, opt)
    xb, yb = xpcnn.to_device(x, "jax"), xpcnn.to_device(y, "jax")
    clean = xpcnn.to_device(np.nan_to_num(x), "jax")
    step.train(clean, yb)
    before, state_before = weights_of(model), {k: {n: np.array(a) for n, a in s.items()} for k, s in opt.state.items()}
    expected = r"epoch 2, step 7: the loss is nan; the loss is the first non-finite value\. The weights were not"
    with pytest.raises(NonFiniteError, match=expected) as info:
        step.train(xb, yb, epoch=1, step=6)
    assert (info.value.epoch, info.value.step) == (2, 7)
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)
    assert opt.steps == 1
    for key, state in state_before.items():
        for name, a in state.items():
            np.testing.assert_array_equal(np.asarray(opt.state[key][name]), a)


def test_nan_guard_names_a_non_finite_gradient():
    """A finite loss whose first weight gradient overflows float32: x (1e21) times the hidden
    gradient (~1e18) is past float32's 3.4e38, while every forward value is 0."""
    _, y = quadrants(16)
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(4), layers.Dense(4)]).build((1, 8, 8), backend="jax")
    w2 = np.zeros((4, 4))
    w2[:, 0] = 1e20
    model.set_weights([np.zeros((64, 4)), np.zeros(4), w2, np.zeros(4)])
    opt = optim.SGD(0.1, momentum=0.9)
    step = jit.make_step(model, opt)
    before = weights_of(model)
    expected = r"step 1: the loss is 1\.386\d*; the gradient of 1\.weight is the first non-finite"
    with pytest.raises(NonFiniteError, match=expected):
        step.train(xpcnn.to_device(np.full((16, 1, 8, 8), 1e21, np.float32), "jax"), xpcnn.to_device(y, "jax"))
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)
    assert opt.steps == 0
    assert all(not np.any(np.asarray(a)) for state in opt.state.values() for a in state.values())  # as before: zeros


def test_fit_compiles_by_default_on_jax_and_refuses_elsewhere(monkeypatch):
    calls = []
    real = jit.CompiledStep.__call__
    monkeypatch.setattr(jit.CompiledStep, "__call__", lambda self, xb, yb: calls.append(1) or real(self, xb, yb))
    x, y = quadrants(32)
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(4)]).build((1, 8, 8), backend="jax")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert len(calls) == 2
    model.fit(x[:4], y[:4], epochs=1, batch_size=4, verbose=0, compile=False)  # op by op: few ops
    assert len(calls) == 2
    with pytest.raises(ArgumentError, match="compile: a compiled step needs the jax backend; the model is on numpy"):
        small_net().build((1, 8, 8), backend="numpy").fit(x, y, verbose=0, compile=True)


def test_compiled_dropout_draws_the_eager_masks(x64):
    """Dropout's keys go into the compiled step as arrays: the same masks as the eager NumPy run,
    the counters advanced once per step, one compilation for every step."""
    def net():
        return xpcnn.Sequential([layers.Conv2D(4, 3), layers.ReLU(), layers.Dropout(0.3), layers.Flatten(),
                                 layers.Dense(16), layers.Dropout(0.5), layers.Dense(4)])

    x, y = quadrants(40)
    x = x.astype(np.float64)
    reference = net().build((1, 8, 8), seed=2, dtype="float64", backend="numpy")
    reference.fit(x, y, epochs=2, batch_size=8, verbose=0, optimizer=optim.SGD(0.1, momentum=0.9))
    compiled = net().build((1, 8, 8), seed=2, dtype="float64", backend="jax")
    compiled.fit(x, y, epochs=2, batch_size=8, verbose=0, optimizer=optim.SGD(0.1, momentum=0.9), compile=True)
    for a, b in zip(compiled.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(xpcnn.to_numpy(a), b, rtol=0, atol=FLOAT64_RTOL * np.abs(b).max())
    assert [layer.counter for layer in compiled.layers if isinstance(layer, layers.Dropout)] == [10, 10]
    without = net().build((1, 8, 8), seed=2, dtype="float64", backend="jax")
    without.layers[2].p = without.layers[5].p = 0.0  # no dropout: the weights must then differ
    without.fit(x, y, epochs=2, batch_size=8, verbose=0, optimizer=optim.SGD(0.1, momentum=0.9), compile=True)
    assert not np.allclose(xpcnn.to_numpy(without.get_weights()[0]), reference.get_weights()[0])


def test_fit_nan_guard_under_compile_matches_eager(x64):
    """A diverging run stops at the same step with the same weights, compiled on jax or eager
    (on NumPy, the same layer code op by op)."""
    x, y = quadrants(64, dtype=np.float64)
    errors, models = {}, {}
    for backend in ("jax", "numpy"):
        model = small_net().build((1, 8, 8), seed=2, dtype="float64", backend=backend)
        with pytest.raises(NonFiniteError) as info, np.errstate(over="ignore", invalid="ignore"):
            model.fit(x, y, epochs=2, batch_size=16, optimizer=optim.SGD(1e300), verbose=0)
        errors[backend], models[backend] = info.value, model
    assert (errors["jax"].epoch, errors["jax"].step) == (errors["numpy"].epoch, errors["numpy"].step) == (1, 2)
    assert "The weights were not updated by this step" in str(errors["jax"])
    assert models["jax"].optimizer.steps == models["numpy"].optimizer.steps == 1
    assert_same_weights(models["jax"], models["numpy"], FLOAT64_RTOL)


def test_fit_compiled_with_label_smoothing_and_sync_every_matches_numpy(x64):
    x, y = quadrants(64, dtype=np.float64)
    models = {}
    for backend in ("jax", "numpy"):
        model = small_net().build((1, 8, 8), seed=6, dtype="float64", backend=backend)
        history = model.fit(x, y, epochs=2, batch_size=16, optimizer=optim.AdamW(1e-2), verbose=0,
                            label_smoothing=0.1, sync_every=3)
        models[backend] = (model, history.history)
    (ours, hist), (ref, ref_hist) = models["jax"], models["numpy"]
    assert_same_weights(ours, ref, FLOAT64_RTOL)
    np.testing.assert_allclose(hist["loss"], ref_hist["loss"], rtol=FLOAT64_RTOL)
    assert hist["accuracy"] == ref_hist["accuracy"]
