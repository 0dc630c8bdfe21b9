"""A scikit-learn classifier around an xpcnn network: Pipelines, grid searches, cross-validation.

``CNNClassifier`` follows scikit-learn's estimator conventions (constructor arguments stored as
given and checked in ``fit``, fitted attributes ending in ``_``, ``clone``, pickling: the fitted
network pickles as :class:`xpcnn.Sequential` does, its arrays as safetensors bytes). Samples are
images: ``X`` of shape (N, C, H, W), (N, H, W) or a flat table (N, D) reshaped to ``image_shape``.
With ``sklearn.set_config(array_api_dispatch=True)`` (and ``SCIPY_ARRAY_API=1`` set before
scikit-learn is imported), non-NumPy inputs train on their own library and device, and the
outputs come back in that namespace and device. See docs/sklearn.md.
"""

from __future__ import annotations

import copy
import math
import numbers

import array_api_compat
import numpy as np

try:
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:  # absent, or older than 1.6 (no validate_data)
    raise ImportError(f"xpcnn.sklearn needs scikit-learn >= 1.6 ({e}); install it with: "
                      "pip install 'xpcnn[sklearn]'") from e

from . import layers, optim, zoo
from .backend import namespace_of, to_device, to_numpy
from .callbacks import EarlyStopping, LearningRateScheduler, cosine_schedule
from .errors import ArgumentError, ArgumentTypeError
from .model import Sequential

__all__ = ["CNNClassifier", "auto_network"]

OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": lambda lr: optim.SGD(lr, momentum=0.9)}
# epochs="auto": at least this many optimizer steps. Adam moves a weight by about the learning rate
# per step, so at 1e-3 a network needs on the order of a thousand steps to leave its initialisation,
# however small the data; a small table gets few steps per epoch, so it needs many epochs (as
# MLPClassifier's max_iter=200 epochs), while a large data set keeps the floor of 10 epochs.
MIN_STEPS = 1000


def auto_network(image_shape: tuple[int, int, int], n_classes: int) -> Sequential:
    """The unbuilt network ``model="auto"`` picks for samples of ``image_shape`` (C, H, W) and
    ``n_classes`` outputs (N, n_classes). Images of 8x8 and up: two padded 3x3 convolutions (32),
    2x2 max pool, a padded 3x3 convolution (64), 2x2 max pool, each convolution followed by
    BatchNorm and ReLU, then Dropout(0.3) and Dense; smaller samples, down to (1, 1, 1):
    Flatten -> Dense(64) -> ReLU -> Dense."""
    _, h, w = image_shape
    if min(h, w) < 8:
        return Sequential([layers.Flatten(), layers.Dense(64), layers.ReLU(), layers.Dense(n_classes)])

    def conv(channels):
        return [layers.Conv2D(channels, 3, padding=1), layers.BatchNorm2D(), layers.ReLU()]

    return Sequential([*conv(32), *conv(32), layers.MaxPool2D(2), *conv(64), layers.MaxPool2D(2),
                       layers.Flatten(), layers.Dropout(0.3), layers.Dense(n_classes)])


def _dispatched_namespace(X):
    """X's namespace when array-API dispatch is on and X is an array of a library other than
    NumPy; None otherwise (X then goes through NumPy, as scikit-learn does)."""
    if not sklearn.get_config()["array_api_dispatch"] or not array_api_compat.is_array_api_obj(X) \
            or array_api_compat.is_numpy_array(X):
        return None
    return namespace_of(X)


def _flatten(X):
    """(X as (N, D), the sample shape (C, H, W) when X came as images (N, H, W) or (N, C, H, W))."""
    ndim = getattr(X, "ndim", 2)
    if not isinstance(ndim, int) or ndim <= 2:
        return X, None
    if ndim > 4:
        raise ValueError(f"X: expected (N, D), (N, H, W) or (N, C, H, W), got shape {tuple(X.shape)}")
    shape = tuple(int(s) for s in X.shape[1:])
    xp = namespace_of(X) if array_api_compat.is_array_api_obj(X) else np
    return xp.reshape(X, (int(X.shape[0]), math.prod(shape))), (1, *shape) if ndim == 3 else shape


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """An xpcnn network trained by mini-batch gradient descent on softmax cross-entropy.

    model: "auto" (:func:`auto_network`), an ``xpcnn.zoo`` name ("default", "notebook",
        "resnet8"), a callable ``f(n_classes) -> Sequential`` (unbuilt), e.g. ``xpcnn.zoo.resnet8``,
        or an unbuilt Sequential with n_classes outputs (each fit builds a copy; the argument stays unbuilt).
    image_shape: (C, H, W) of one sample of a flat X (N, D) with C*H*W = D; None: taken from image
        input (N, H, W) / (N, C, H, W), else (1, s, s) when D = s*s, else (1, 1, D).
    epochs, batch_size: passes over the data in ``fit`` (``partial_fit`` runs one), samples per step;
        epochs "auto": enough for ``MIN_STEPS`` optimizer steps, at least 10 (10 on large data sets).
    optimizer: "adam", "adamw", "sgd" (momentum 0.9) with ``learning_rate``, or an
        ``xpcnn.optim`` optimizer (copied at every fit; its own learning rate is used).
    lr_schedule: "cosine" (the rate falls from the initial one towards 0 over ``epochs``, as
        PyTorch's CosineAnnealingLR) or "constant"; ``partial_fit`` keeps the initial rate.
    validation_fraction, early_stopping, n_iter_no_change: with ``early_stopping``, hold out that
        stratified fraction and stop after ``n_iter_no_change`` epochs without a lower validation
        loss, keeping the best epoch's weights.
    random_state: None, an int or a RandomState; seeds the weights and the shuffles.
    backend: an xpcnn backend name ("numpy", "torch", "cupy:1", ...); None: the library and device
        of X under array-API dispatch, else xpcnn's selected backend.
    dtype: "float32" or "float64", the network's float type (X is cast to it).
    verbose: ``Sequential.fit``'s: 0 silent, 1 a progress bar on a terminal (else a line per epoch),
        2 a line per epoch.

    Fitted: ``classes_`` (n_classes,), ``n_features_in_`` (D), ``image_shape_`` (C, H, W),
    ``model_`` (the built :class:`xpcnn.Sequential`), ``n_iter_`` (epochs run), ``loss_curve_``
    (training loss per epoch, a list).
    """

    def __init__(self, model="auto", *, image_shape=None, epochs="auto", batch_size=32, optimizer="adam",
                 learning_rate=1e-3, lr_schedule="cosine", validation_fraction=0.1, early_stopping=False,
                 n_iter_no_change=5, random_state=None, backend=None, dtype="float32", verbose=0):
        self.model = model
        self.image_shape = image_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags

    # ---------------------------------------------------------------- training

    def fit(self, X, y):
        """Train a new network on X (N, D), (N, H, W) or (N, C, H, W) and labels y (N,) of any
        type; returns self."""
        self._check_options()
        X, y, shape, xp = self._validate(X, y, reset=True)
        self._start(X, shape, xp, unique_labels(y))
        return self._train(X, y, xp, self.epochs, whole_fit=True)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing the network (and its optimizer) of earlier calls.
        ``classes`` (n_classes,): every label, required on the first call. Returns self."""
        first = not hasattr(self, "model_")
        self._check_options()
        X, y, shape, xp = self._validate(X, y, reset=first)
        given = None if classes is None else unique_labels(classes)
        if first and given is None:
            raise ValueError("classes: pass every label there can be (classes=...) on the first call to partial_fit")
        known = given if first else self.classes_
        if given is not None and not np.array_equal(given, known):
            raise ValueError(f"classes: {given.tolist()} differs from classes_ {known.tolist()} given at the first "
                             "call to partial_fit")
        unseen = np.setdiff1d(y, known)
        if unseen.size:
            raise ValueError(f"y: labels {unseen.tolist()} are not in classes_ {known.tolist()} "
                             "(set by classes= at the first call to partial_fit); fit anew to add classes")
        if first:
            self._start(X, shape, xp, known)
        return self._train(X, y, xp, 1, whole_fit=False)

    def _check_options(self) -> None:
        """The options that the network's own checks would word by other names (lr, patience)."""
        rate, patience, fraction = self.learning_rate, self.n_iter_no_change, self.validation_fraction
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < math.inf:
            raise ValueError(f"learning_rate: expected a finite number >= 0, got {rate!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"n_iter_no_change: expected an int >= 0, got {patience!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got {fraction!r}")
        if not isinstance(self.early_stopping, bool):
            raise ValueError(f"early_stopping: expected True or False, got {self.early_stopping!r}")

    def _validate(self, X, y, reset: bool):
        """(X as (N, D) in the network's dtype, y (N,) on the host, X's image shape or None, X's
        namespace under dispatch or None)."""
        xp = _dispatched_namespace(X)
        X, shape = _flatten(X)
        dtype = self.dtype if reset else self.model_.dtype
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        X, y = validate_data(self, X, y, reset=reset, dtype=getattr(xp or np, dtype))
        check_classification_targets(y)
        return X, to_numpy(y), shape, xp

    def _start(self, X, shape, xp, classes) -> None:
        """Build a new network for X (N, D) and the labels ``classes``; set the fitted attributes."""
        if len(classes) < 2:
            raise ValueError(f"y: a classifier needs at least 2 classes, got 1 class ({classes[0]!r})")
        image_shape = self._resolve_shape(int(X.shape[1]), shape)
        build_seed, seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=2)
        backend = self.backend if self.backend is not None or xp is None else array_api_compat.device(X)
        model = self._network(image_shape, len(classes)).build(image_shape, seed=int(build_seed), dtype=self.dtype,
                                                               backend=backend)
        outputs = tuple(model.predict(np.zeros((1, *image_shape), self.dtype)).shape[1:])
        if outputs != (len(classes),):
            raise ValueError(f"model: the network outputs {outputs} per sample; expected ({len(classes)},), "
                             "one logit per class")
        self.classes_, self.image_shape_, self.model_, self.n_iter_, self.loss_curve_ = \
            classes, image_shape, model, 0, []
        self._seed, self._namespace = int(seed), "numpy" if xp is None else xp.__name__

    def _resolve_shape(self, d: int, shape):
        if self.image_shape is not None:
            shape = tuple(self.image_shape) if hasattr(self.image_shape, "__iter__") else ()  # a tuple, list, array
            if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape) \
                    or math.prod(shape) != d:
                raise ValueError(f"image_shape: expected (C, H, W) of positive ints with C*H*W = {d} "
                                 f"(the number of features), got {self.image_shape!r}")
            return tuple(int(s) for s in shape)
        if shape is not None:
            return shape
        side = math.isqrt(d)
        return (1, side, side) if side * side == d else (1, 1, d)

    def _network(self, image_shape, n_classes: int) -> Sequential:
        if isinstance(self.model, str):
            net = auto_network(image_shape, n_classes) if self.model == "auto" else \
                zoo.NETWORKS[self.model](n_classes) if self.model in zoo.NETWORKS else zoo.get(self.model)
        elif isinstance(self.model, Sequential):  # a copy: fit must leave its parameters as given (clone, searches)
            if self.model.built:
                raise ArgumentError("model: expected an unbuilt Sequential (each fit builds its own copy) or a "
                                    "callable n_classes -> Sequential, got a built Sequential")
            net = copy.deepcopy(self.model)
        elif callable(self.model):
            net = self.model(n_classes)
            if isinstance(net, Sequential) and net.built:  # its trained weights would carry over between fits
                raise ArgumentError("model: the callable returned a built Sequential; it must return a new, unbuilt "
                                    "network at each call (each fit builds and trains it)")
        else:
            raise ArgumentTypeError(f"model: expected 'auto', a name in xpcnn.zoo, an unbuilt Sequential or a "
                                    f"callable n_classes -> Sequential, got {type(self.model).__name__}")
        if not isinstance(net, Sequential):
            raise ArgumentTypeError(f"model: expected the callable to return an xpcnn Sequential, "
                                    f"got {type(net).__name__}")
        return net

    def _make_optimizer(self):
        if isinstance(self.optimizer, optim.Optimizer):
            return copy.deepcopy(self.optimizer)
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an xpcnn.optim optimizer, "
                             f"got {self.optimizer!r}")
        return OPTIMIZERS[self.optimizer](self.learning_rate)

    def _train(self, X, y, xp, epochs: int, whole_fit: bool):
        """Run ``epochs`` epochs of the network on X (N, D) and labels y (N,), with ``fit``'s
        early stopping and learning-rate schedule when ``whole_fit``; returns self."""
        X = (xp or np).reshape(X, (X.shape[0], *self.image_shape_))
        y = np.searchsorted(self.classes_, y)
        optimizer = self.model_.optimizer if self.n_iter_ and self.model_.optimizer else self._make_optimizer()
        validation, callbacks, lr = None, [], optimizer.lr
        if whole_fit and self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule: expected 'cosine' or 'constant', got {self.lr_schedule!r}")
        if whole_fit and self.early_stopping:
            train, val = train_test_split(np.arange(len(y)), test_size=self.validation_fraction, stratify=y,
                                          random_state=self._seed)
            X, validation, y = _take(X, train, xp), (_take(X, val, xp), y[val]), y[train]
            callbacks.append(EarlyStopping(patience=self.n_iter_no_change, restore_best_weights=True))
        if isinstance(epochs, str) and epochs == "auto":  # after the hold-out: steps of the samples trained on
            batch = self.batch_size if isinstance(self.batch_size, numbers.Integral) and self.batch_size > 0 else len(y)
            epochs = max(10, math.ceil(MIN_STEPS / math.ceil(len(y) / batch)))
        elif isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ArgumentError(f"epochs: expected a positive int or 'auto', got {epochs!r}")
        if whole_fit and self.lr_schedule == "cosine":
            callbacks.append(LearningRateScheduler(cosine_schedule(lr, epochs)))
        history = self.model_.fit(X, y, epochs=epochs, batch_size=self.batch_size, optimizer=optimizer,
                                  validation_data=validation, seed=(self._seed + self.n_iter_) % 2**31,
                                  verbose=self.verbose, callbacks=callbacks)
        optimizer.lr = lr  # a later partial_fit goes on at the initial rate, not the schedule's last
        self.loss_curve_ = self.loss_curve_ + [float(v) for v in history["loss"]]
        self.n_iter_ += len(history["loss"])
        return self

    # ---------------------------------------------------------------- inference

    def _outputs(self, X, method: str):
        """(softmax probabilities (N, n_classes) on the network's backend, X's namespace under
        dispatch or None, X's device)."""
        check_is_fitted(self)
        xp = _dispatched_namespace(X)
        name = "numpy" if xp is None else xp.__name__
        if sklearn.get_config()["array_api_dispatch"] and name != self._namespace:
            raise ValueError(f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace as "
                             f"those passed to fit(): fitted on {self._namespace}, got {name}; move X with "
                             "xpcnn.to_device")
        X, _ = _flatten(X)
        X = validate_data(self, X, reset=False, dtype=getattr(xp or np, self.model_.dtype))
        images = (xp or np).reshape(X, (X.shape[0], *self.image_shape_))
        return self.model_.predict(images), xp, None if xp is None else array_api_compat.device(X)

    def predict_proba(self, X):
        """Class probabilities (N, n_classes) for X (N, D) / images, columns in ``classes_`` order:
        NumPy, or X's namespace and device under array-API dispatch."""
        proba, xp, device = self._outputs(X, "predict_proba")
        return to_numpy(proba) if xp is None else to_device(proba, device)

    def predict(self, X):
        """Labels (N,) from ``classes_`` for X (N, D) / images; numeric labels come back in X's
        namespace and device under array-API dispatch."""
        proba, xp, device = self._outputs(X, "predict")
        labels = self.classes_[np.argmax(to_numpy(proba), axis=1)]
        return labels if xp is None or labels.dtype.kind not in "biuf" else to_device(labels, device)


def _take(X, idx: np.ndarray, xp):
    """X[idx] along the first axis, idx host int64, for NumPy or X's namespace."""
    return X[idx] if xp is None else xp.take(X, to_device(idx, array_api_compat.device(X)), axis=0)
