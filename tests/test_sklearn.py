"""xpcnn.sklearn.CNNClassifier: scikit-learn's estimator checks on the default estimator, the
ecosystem (Pipeline, GridSearchCV with n_jobs=2, cross_val_score), labels, image inputs, errors,
pickling and array-API dispatch (in a subprocess: scikit-learn reads SCIPY_ARRAY_API at import)."""

import importlib
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import threadpoolctl

try:
    import joblib
    from sklearn.base import clone
    from sklearn.datasets import load_digits, make_blobs
    from sklearn.exceptions import NotFittedError
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.estimator_checks import parametrize_with_checks
except ImportError:
    pytest.skip("scikit-learn is not installed: pip install 'xpcnn[sklearn]'", allow_module_level=True)

import xpcnn
from xpcnn import layers
from xpcnn.sklearn import CNNClassifier, auto_network

from .docs_blocks import python_blocks

# Array-API dispatch needs SCIPY_ARRAY_API before scikit-learn is imported; one BLAS / OpenMP thread
# each, as in this process (single_threads).
SUBPROCESS_ENV = {**os.environ, "SCIPY_ARRAY_API": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# Small data sets (30 to 300 samples): small batches and a larger step train in few epochs, to keep
# these tests quick; the defaults (epochs="auto") train such data as well, more slowly (the checks below).
QUICK = {"epochs": 20, "batch_size": 8, "learning_rate": 1e-2, "random_state": 0}


@pytest.fixture(scope="module", autouse=True)
def single_threads():
    """One BLAS thread: the matrices here are small, and spare BLAS threads spin-wait on a busy
    machine (tests/conftest.py's single_threaded_torch says the same of torch)."""
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, centers=3, n_features=4, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def digits():
    """150 of scikit-learn's 8x8 digits, scaled to [0, 1]: (150, 64) float64, labels (150,)."""
    X, y = load_digits(return_X_y=True)
    return X[:150] / 16.0, y[:150]


@parametrize_with_checks([CNNClassifier(random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    """Every check on the default estimator, check_classifiers_train's accuracy > 0.83 included."""
    check(estimator)


def test_auto_epochs_give_small_data_enough_steps(blobs):
    X, y = blobs  # 120 samples: 4 steps of 32 per epoch
    clf = CNNClassifier(random_state=0).fit(X, y)
    assert clf.n_iter_ == 250 and clf.score(X, y) > 0.9
    assert CNNClassifier(batch_size=1, random_state=0).fit(X, y).n_iter_ == 10  # 120 steps per epoch: the floor
    for bad in ("many", 1.5, True):
        with pytest.raises(xpcnn.errors.ArgumentError, match="epochs: expected a positive int or 'auto'"):
            CNNClassifier(epochs=bad).fit(X, y)


def test_import_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delitem(sys.modules, "xpcnn.sklearn")
    with pytest.raises(ImportError, match=r"pip install 'xpcnn\[sklearn\]'"):
        importlib.import_module("xpcnn.sklearn")


def test_constructor_stores_arguments_verbatim_and_validates_in_fit(blobs):
    clf = CNNClassifier(model="nonsense", epochs=-1, optimizer="rmsprop")
    assert clf.get_params()["model"] == "nonsense" and clf.get_params()["epochs"] == -1
    assert clone(clf).get_params() == clf.get_params()
    with pytest.raises(ValueError, match="model"):
        clf.fit(*blobs)
    with pytest.raises(ValueError, match="optimizer"):
        CNNClassifier(optimizer="rmsprop").fit(*blobs)
    with pytest.raises(ValueError, match="epochs"):
        CNNClassifier(epochs=0).fit(*blobs)
    with pytest.raises(ValueError, match="lr_schedule"):
        CNNClassifier(lr_schedule="step").fit(*blobs)
    for options in ({"learning_rate": -1}, {"learning_rate": float("nan")}, {"n_iter_no_change": -1},
                    {"validation_fraction": 5}, {"early_stopping": "yes"}, {"image_shape": 5}):
        with pytest.raises(ValueError, match=f"^{next(iter(options))}: expected"):
            CNNClassifier(epochs=1, **options).fit(*blobs)
    # a rate of 0 is valid with the cosine schedule too: the weights stay where they were drawn
    still = CNNClassifier(epochs=2, learning_rate=0.0, random_state=0).fit(*blobs)
    build_seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=2)[0])
    drawn = auto_network(still.image_shape_, 3).build(still.image_shape_, seed=build_seed)
    for got, expected in zip(still.model_.get_weights(), drawn.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-3, 7, 40])])
def test_labels_come_back_as_given(blobs, labels, capfd):
    X, y = blobs
    clf = CNNClassifier(**QUICK).fit(X, labels[y])
    assert capfd.readouterr() == ("", "")  # verbose=0 is silent
    assert np.array_equal(clf.classes_, labels) and clf.classes_.dtype.kind == labels.dtype.kind
    pred = clf.predict(X)
    assert set(pred.tolist()) <= set(labels.tolist()) and clf.score(X, labels[y]) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(pred, labels[np.argmax(proba, axis=1)])


def test_image_inputs_and_the_auto_network(digits):
    X, y = digits
    images = X.reshape(-1, 8, 8)
    flat = CNNClassifier(epochs=1, random_state=0).fit(X, y)
    assert flat.image_shape_ == (1, 8, 8) and flat.n_features_in_ == 64
    assert any(isinstance(layer, layers.Conv2D) for layer in flat.model_.layers)
    for given in (images, images[:, None], X):
        clf = CNNClassifier(epochs=1, random_state=0).fit(given, y)
        assert clf.image_shape_ == (1, 8, 8)
        np.testing.assert_array_equal(clf.predict_proba(given), flat.predict_proba(X))
    two_channels = CNNClassifier(epochs=1, image_shape=(2, 4, 8), random_state=0).fit(X, y)
    assert not any(isinstance(layer, layers.Conv2D) for layer in two_channels.model_.layers)
    with pytest.raises(ValueError, match="image_shape"):
        CNNClassifier(image_shape=(1, 7, 7)).fit(X, y)


@pytest.mark.parametrize("n_features, shape", [(2, (1, 1, 2)), (1, (1, 1, 1)), (4, (1, 2, 2)), (5, (1, 1, 5))])
def test_small_tables_get_a_network(n_features, shape):
    X, y = make_blobs(n_samples=60, centers=2, n_features=n_features, random_state=1)
    clf = CNNClassifier(**QUICK).fit(X, y)
    assert clf.image_shape_ == shape and clf.score(X, y) > 0.9


def test_zoo_name_and_callable_models(digits):
    X, y = digits
    notebook = CNNClassifier(model="notebook", epochs=1, random_state=0).fit(X, y)
    assert isinstance(notebook.model_.layers[1], layers.AvgPool2D)
    linear = CNNClassifier(model=lambda k: xpcnn.Sequential([layers.Flatten(), layers.Dense(k)]), epochs=1).fit(X, y)
    assert len(linear.model_.layers) == 2
    with pytest.raises(ValueError, match="one logit per class"):
        CNNClassifier(model=lambda k: xpcnn.Sequential([layers.Flatten(), layers.Dense(3)])).fit(X, y)
    with pytest.raises(TypeError, match="model"):
        CNNClassifier(model=3).fit(X, y)
    shared = xpcnn.Sequential([layers.Flatten(), layers.Dense(10)])  # one object: a second fit would go on training it
    CNNClassifier(model=lambda k: shared, epochs=1, random_state=0).fit(X, y)
    with pytest.raises(xpcnn.errors.ArgumentError, match="model: the callable returned a built Sequential"):
        CNNClassifier(model=lambda k: shared, epochs=1, random_state=0).fit(X, y)


def test_unbuilt_sequential_model_is_copied_at_each_fit(digits):
    X, y = digits
    net = xpcnn.zoo.get("notebook")
    clf = CNNClassifier(model=net, epochs=1, random_state=0).fit(X, y)
    assert not net.built and clf.model_ is not net and clf.get_params()["model"] is net
    by_name = CNNClassifier(model="notebook", epochs=1, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), by_name.predict_proba(X))
    np.testing.assert_array_equal(clone(clf).fit(X, y).predict_proba(X), by_name.predict_proba(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), by_name.predict_proba(X))
    with pytest.raises(xpcnn.errors.ArgumentError, match="model: expected an unbuilt Sequential.*got a built"):
        CNNClassifier(model=clf.model_).fit(X, y)


def test_scikit_learn_error_conventions(blobs):
    X, y = blobs
    with pytest.raises(NotFittedError):
        CNNClassifier().predict(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CNNClassifier().fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        CNNClassifier().fit(bad, y)
    with pytest.raises(ValueError, match="1 class"):
        CNNClassifier().fit(X, np.zeros(len(X), int))
    clf = CNNClassifier(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="3 features.*expecting 4 features"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(bad)


def test_partial_fit(blobs):
    X, y = blobs
    clf = CNNClassifier(batch_size=8, learning_rate=1e-2, random_state=0)
    with pytest.raises(ValueError, match="first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # class 2 comes later
    optimizer = clf.model_.optimizer
    for _ in range(10):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 11 and len(clf.loss_curve_) == 11 and clf.model_.optimizer is optimizer
    assert clf.loss_curve_[-1] < clf.loss_curve_[1] and clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match=r"labels \[5\] are not in classes_"):
        clf.partial_fit(X, np.where(y == 2, 5, y))
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="3 features.*expecting 4 features"):
        clf.partial_fit(X[:, :3], y)


def test_cosine_schedule_and_constant_rate(blobs):
    X, y = blobs
    cosine = CNNClassifier(**QUICK).fit(X, y)
    constant = CNNClassifier(**QUICK, lr_schedule="constant").fit(X, y)
    assert cosine.model_.optimizer.lr == constant.model_.optimizer.lr == QUICK["learning_rate"]
    assert not np.array_equal(cosine.predict_proba(X), constant.predict_proba(X))


def test_random_state_and_early_stopping(blobs):
    X, y = blobs
    first, second = (CNNClassifier(**QUICK).fit(X, y).predict_proba(X) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    other = CNNClassifier(**{**QUICK, "random_state": 1}).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other)
    stopped = CNNClassifier(**{**QUICK, "epochs": 200}, early_stopping=True, n_iter_no_change=2).fit(X, y)
    assert 3 <= stopped.n_iter_ < 200 and stopped.score(X, y) > 0.9


def test_pickle_and_joblib_round_trip_exactly(tmp_path, blobs):
    X, y = blobs
    labels = np.array(["a", "b", "c"])[y]
    clf = CNNClassifier(**QUICK, dtype="float64").fit(X, labels)
    before = clf.predict_proba(X)
    assert before.dtype == np.float64
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), before)
    assert again.model_.optimizer.steps == clf.model_.optimizer.steps  # partial_fit goes on where it was
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib")
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    loaded.partial_fit(X, labels)  # the optimizer's state travelled too: both continue alike
    clf.partial_fit(X, labels)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_explicit_backend_returns_numpy(blobs):
    pytest.importorskip("array_api_strict")
    X, y = blobs
    clf = CNNClassifier(epochs=2, backend="array_api_strict", random_state=0).fit(X, y)
    assert clf.model_.backend.name == "array_api_strict"
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (len(X), 3)
    numpy_clf = CNNClassifier(epochs=2, backend="numpy", random_state=0).fit(X, y)
    np.testing.assert_allclose(proba, numpy_clf.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_docs_sklearn_examples_run():
    """docs/sklearn.md's Python blocks in order, in one fresh process (dispatch needs SCIPY_ARRAY_API
    before scikit-learn is imported): Pipeline, GridSearchCV(n_jobs=2), cross_val_score, torch input."""
    pytest.importorskip("torch")
    blocks = python_blocks("sklearn.md")
    assert len(blocks) == 2
    checks = [textwrap.dedent(c) for c in ("""
        assert pipe.score(X, y) > 0.8 and search.best_score_ > 0.5, (pipe.score(X, y), search.best_score_)
        assert set(search.best_params_) == {"cnnclassifier__learning_rate", "cnnclassifier__epochs"}
        assert scores.shape == (5,) and scores.mean() > 0.7, scores
        """, """
        assert type(proba) is torch.Tensor and proba.device == X.device and clf.model_.backend.name == "torch"
        """)]
    script = "\n".join(block + check for block, check in zip(blocks, checks))
    result = subprocess.run([sys.executable, "-c", script], env=SUBPROCESS_ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


DISPATCH = textwrap.dedent("""
    import array_api_strict, numpy as np, sklearn, torch
    from sklearn.datasets import make_blobs
    from sklearn.utils.estimator_checks import estimator_checks_generator
    from xpcnn.sklearn import CNNClassifier

    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    strict = array_api_strict.Device("device1")
    for xp, device in ((torch, torch.device("cpu")), (array_api_strict, strict)):
        Xd, yd = xp.asarray(X, device=device), xp.asarray(y, device=device)
        with sklearn.config_context(array_api_dispatch=True):
            clf = CNNClassifier(epochs=5, batch_size=8, learning_rate=1e-2, random_state=0).fit(Xd, yd)
            proba, pred = clf.predict_proba(Xd), clf.predict(Xd)
            for out in (proba, pred):
                assert type(out) is type(Xd) and out.device == Xd.device, (type(out), out.device)
            assert clf.model_.backend.name == xp.__name__, clf.model_.backend
            assert proba.dtype == xp.float32 and tuple(proba.shape) == (60, 3)
            assert isinstance(clf.score(Xd, yd), float)
            try:
                clf.predict(X)
            except ValueError as e:
                assert "must use the same namespace" in str(e)
            else:
                raise AssertionError("numpy input to a model fitted on " + xp.__name__)
    ran = 0
    estimator = CNNClassifier(random_state=0)  # the default estimator, as in test_sklearn_estimator_checks
    for est, check in estimator_checks_generator(estimator, legacy=True, mark="skip"):
        name = getattr(check, "func", check).__name__
        if name.startswith("check_array_api"):
            try:
                check(est)
                ran += 1
            except Exception as e:
                if type(e).__name__ != "SkipTest":
                    raise
    assert ran >= 4, ran
    print("ran", ran)
""")


def test_array_api_dispatch_in_a_subprocess():
    pytest.importorskip("torch")
    pytest.importorskip("array_api_strict")
    result = subprocess.run([sys.executable, "-c", DISPATCH], env=SUBPROCESS_ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran" in result.stdout
