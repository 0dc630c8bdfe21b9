"""The teaching notebook's CNN, kept as the notebook wrote it: the float64 oracle of the tests.

A faithful NumPy re-implementation of ``numpy_cnn_notebook`` (16 3x3 kernels, 2x2 average
pooling, a softmax layer, per-image SGD with ``alpha = 0.05``). The three layer classes and
``CNN_forward`` / ``CNN_backprop`` / ``CNN_training`` are the notebook's code line for line,
per-pixel patch loops, unstable ``exp / sum(exp)`` softmax and the per-output ``back_prop`` loop
included: that slowness and that shape are the point, it is what xpcnn is checked against.

Only two things differ from the notebook:

* random initial weights come from a ``numpy.random.Generator`` handed in (or are given
  explicitly) instead of the global ``np.random`` state; the draw order is the notebook's
  (kernels, then the softmax weight);
* the epoch shuffle in :meth:`NotebookCNN.train` uses ``rng.permutation(len(X))`` of that
  generator instead of ``np.random.permutation``.

Beside those, only the spelling follows the project's lint rules, with no number and no printed
character changed: one long line is wrapped, the two values the notebook computes and never
uses are named ``_patch`` and ``_gradient_back``, ``type(layer) == AvgPoolingLayer`` is an
``isinstance`` test (no class here is subclassed), and the log lines are f-strings instead of
``str.format``.

Everything is float64, like the notebook. Images are ``uint8`` (28, 28) arrays in ``[0, 255]``;
``CNN_forward`` divides by 255. The notebook keeps activations as (H, W, C); the layout
converters to and from xpcnn's NCHW weights are public: :mod:`xpcnn.notebook`.

Update order. Within one step the softmax layer updates its weight *after* computing the
gradient it sends back (``dE_dX`` uses the old weight), and the conv layer updates last, so one
notebook step equals one plain SGD step (lr 0.05, batch 1) on ``-log softmax(z)[label]``.

Used by tests/test_notebook_*.py and benchmarks/notebook_code_accuracy.py.
"""

import numpy as np

from xpcnn.notebook import from_xpcnn_weights, to_xpcnn_weights

__all__ = [
    "ConvolutionLayer",
    "AvgPoolingLayer",
    "SoftmaxLayer",
    "CNN_forward",
    "CNN_backprop",
    "CNN_training",
    "NotebookCNN",
    "epoch_orders",
]


class ConvolutionLayer:
    def __init__(self, kernel_num, kernel_size, rng=None, kernels=None):
        # kernel size n -> (n x n)
        self.kernel_num = kernel_num
        self.kernel_size = kernel_size
        if kernels is not None:
            self.kernels = np.array(kernels, dtype=np.float64)
        else:
            # Random generation and normalization of kernel weights
            self.kernels = rng.standard_normal((kernel_num, kernel_size, kernel_size)) / (kernel_size**2)

    def patches_generator(self, image):
        # patches for the kernel saved as tuple with the coordinates
        # image height and width
        image_h, image_w = image.shape
        self.image = image
        # number of patches (fxf filter) = h-f+1 for height and w-f+1 for width
        for h in range(image_h-self.kernel_size+1):
            for w in range(image_w-self.kernel_size+1):
                patch = image[h:(h+self.kernel_size), w:(w+self.kernel_size)]
                yield patch, h, w

    def forward_prop(self, image):
        image_h, image_w = image.shape
        # convolution output initialization
        convolution_output = np.zeros((image_h-self.kernel_size+1, image_w-self.kernel_size+1, self.kernel_num))
        # unpack the generator
        for patch, h, w in self.patches_generator(image):
            # convolution for the patches
            convolution_output[h,w] = np.sum(patch*self.kernels, axis=(1,2))
        return convolution_output

    def back_prop(self, dE_dY, alpha):
        # initialize gradient of the loss function with respect to the kernel weights
        dE_dk = np.zeros(self.kernels.shape)
        for patch, h, w in self.patches_generator(self.image):
            for f in range(self.kernel_num):
                dE_dk[f] += patch * dE_dY[h, w, f]
        # update the parameters
        self.kernels -= alpha*dE_dk
        return dE_dk


class AvgPoolingLayer:
    def __init__(self, kernel_size):
        self.kernel_size = kernel_size

    def patches_generator(self, image):
        # Generate patches for pooling
        output_h = image.shape[0] // self.kernel_size
        output_w = image.shape[1] // self.kernel_size
        self.image = image

        for h in range(output_h):
            for w in range(output_w):
                patch = image[(h*self.kernel_size):(h*self.kernel_size+self.kernel_size),
                              (w*self.kernel_size):(w*self.kernel_size+self.kernel_size)]
                yield patch, h, w

    def forward_prop(self, image):
        image_h, image_w, num_kernels = image.shape
        avg_pooling_output = np.zeros((image_h//self.kernel_size, image_w//self.kernel_size, num_kernels))
        for patch, h, w in self.patches_generator(image):
            avg_pooling_output[h,w] = np.mean(patch, axis=(0,1))
        return avg_pooling_output

    def back_prop(self, dE_dY):
        dE_dk = np.zeros(self.image.shape)
        output_h, output_w, num_kernels = dE_dY.shape
        for h in range(output_h):
            for w in range(output_w):
                patch_h = h * self.kernel_size
                patch_w = w * self.kernel_size
                _patch = self.image[patch_h : patch_h + self.kernel_size, patch_w : patch_w + self.kernel_size, :]
                dE_dY_patch = dE_dY[h, w, :] / (self.kernel_size ** 2)
                dE_dk[patch_h : patch_h + self.kernel_size, patch_w : patch_w + self.kernel_size, :] = dE_dY_patch

        return dE_dk


class SoftmaxLayer:
    def __init__(self, input_units, output_units, rng=None, weight=None, bias=None):
        # random initialization of w and b
        if weight is not None:
            self.weight = np.array(weight, dtype=np.float64)
        else:
            self.weight = rng.standard_normal((input_units, output_units))/input_units
        if bias is not None:
            self.bias = np.array(bias, dtype=np.float64)
        else:
            self.bias = np.zeros(output_units)

    def forward_prop(self, image):
        self.original_shape = image.shape # stored for backprop
        image_flattened = image.flatten()
        self.flattened_input = image_flattened # stored for backprop
        # linear output
        first_output = np.dot(image_flattened, self.weight) + self.bias
        self.output = first_output
        # softmax activation
        softmax_output = np.exp(first_output) / np.sum(np.exp(first_output), axis=0)
        return softmax_output

    def back_prop(self, dE_dY, alpha):
        for i, gradient in enumerate(dE_dY):
            if gradient == 0:
                continue
            transformation_eq = np.exp(self.output)
            S_total = np.sum(transformation_eq)

            # gradients with respect to output (Z)
            dY_dZ = -transformation_eq[i]*transformation_eq / (S_total**2)
            dY_dZ[i] = transformation_eq[i]*(S_total - transformation_eq[i]) / (S_total**2)

            # gradients of linear output with respect to weight, bias, input
            dZ_dw = self.flattened_input
            dZ_db = 1
            dZ_dX = self.weight

            # gradient of loss with respect ot output
            dE_dZ = gradient * dY_dZ

            # gradient of loss with respect to weight, bias, input
            dE_dw = dZ_dw[np.newaxis].T @ dE_dZ[np.newaxis]
            dE_db = dE_dZ * dZ_db
            dE_dX = dZ_dX @ dE_dZ

            # update parameters
            self.weight -= alpha*dE_dw
            self.bias -= alpha*dE_db

            return dE_dX.reshape(self.original_shape)


def CNN_forward(image, label, layers):
    output = image/255.
    for layer in layers:
        output = layer.forward_prop(output)
    # loss (cross-entropy) and accuracy
    loss = -np.log(output[label])
    accuracy = 1 if np.argmax(output) == label else 0
    return output, loss, accuracy


def CNN_backprop(gradient, layers, alpha=0.05):
    grad_back = gradient
    for layer in layers[::-1]:
        if type(layer) in [ConvolutionLayer, SoftmaxLayer]:
            grad_back = layer.back_prop(grad_back, alpha)
        elif isinstance(layer, AvgPoolingLayer):
            grad_back = layer.back_prop(grad_back)
    return grad_back


def CNN_training(image, label, layers, alpha=0.05):
    # forward step
    output, loss, accuracy = CNN_forward(image, label, layers)

    # initial gradient
    gradient = np.zeros(10)
    gradient[label] = -1/output[label]

    # backprop step
    _gradient_back = CNN_backprop(gradient, layers, alpha)

    return loss, accuracy


def _as_generator(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class NotebookCNN:
    """The notebook's network: ``ConvolutionLayer(16, 3) -> AvgPoolingLayer(2) -> SoftmaxLayer``.

    kernels: (16, 3, 3); weight: (16*P*P, 10) in the notebook's (H, W, C) row order, P = (S-2)//2
    for S x S images (P = 13, 2704 rows for MNIST); bias: (10,). Any of them left out is drawn as
    the notebook does (kernels = randn/9, then weight = randn/rows, bias = zeros) from ``rng``, a
    ``numpy.random.Generator`` or a seed for one (None: fresh entropy, like the unseeded
    notebook). Given arrays are copied, never updated in place.
    """

    def __init__(self, kernels=None, weight=None, bias=None, rng=None, image_size=28, alpha=0.05):
        if kernels is None or weight is None:
            rng = _as_generator(rng)
        pooled = (image_size - 3 + 1) // 2
        self.alpha = alpha
        self.layers = [
            ConvolutionLayer(16, 3, rng=rng, kernels=kernels),
            AvgPoolingLayer(2),
            SoftmaxLayer(pooled*pooled*16, 10, rng=rng, weight=weight, bias=bias),
        ]
        self._check_shapes(pooled)

    def _check_shapes(self, pooled):
        expected = {"kernels": (16, 3, 3), "weight": (pooled*pooled*16, 10), "bias": (10,)}
        for name, arr in zip(expected, self.weights()):
            if arr.shape != expected[name]:
                raise ValueError(f"{name} must have shape {expected[name]}, got {arr.shape}")

    @property
    def conv(self):
        return self.layers[0]

    @property
    def softmax(self):
        return self.layers[2]

    def weights(self):
        """(kernels (16,3,3), weight (rows,10), bias (10,)): the live arrays, not copies."""
        return self.conv.kernels, self.softmax.weight, self.softmax.bias

    def xpcnn_weights(self):
        """Copies in xpcnn's layout: [conv (16,1,3,3), W (rows,10), b (10,)]."""
        return to_xpcnn_weights(*self.weights())

    @classmethod
    def from_xpcnn(cls, weights, **kwargs):
        """A NotebookCNN holding xpcnn-layout weights ``[conv, W, b]`` (e.g. ``model.get_weights()``)."""
        kernels, weight, bias = from_xpcnn_weights(weights)
        size = 2 * int(round((weight.shape[0] // 16) ** 0.5)) + 2
        return cls(kernels, weight, bias, image_size=size, **kwargs)

    def forward(self, image, label):
        """``CNN_forward``: (softmax output (10,), loss, 1 if correct else 0); updates nothing."""
        return CNN_forward(image, label, self.layers)

    def train_step(self, image, label):
        """``CNN_training`` on one uint8 (S, S) image: updates the weights, returns (loss, correct)."""
        return CNN_training(image, int(label), self.layers, self.alpha)

    def predict(self, images):
        """Softmax probabilities: (S, S) -> (10,), or (N, S, S) -> (N, 10). Updates nothing."""
        images = np.asarray(images)
        if images.ndim == 2:
            return self._probabilities(images)
        return np.stack([self._probabilities(image) for image in images])

    def _probabilities(self, image):
        # CNN_forward without the label's loss
        output = image/255.
        for layer in self.layers:
            output = layer.forward_prop(output)
        return output

    def train(self, images, labels, epochs, rng_or_permutations=None, log=print):
        """``main()``'s loop: ``epochs`` passes of per-image ``CNN_training`` over shuffled data.

        Each epoch prints ``Epoch {n} ->`` and, every 100 steps, ``Step {i+1}. For the last 100
        steps: average loss {loss/100}, accuracy {accuracy}`` through ``log`` (None: silent).

        Shuffling is the notebook's: each epoch draws ``permutation = rng.permutation(len(X))``
        and applies it to the order left by the previous epoch (``X = X[permutation]``), so the
        permutations compose across epochs; :func:`epoch_orders` gives the resulting index
        order into the original arrays. ``rng_or_permutations`` is a Generator or seed (drawn
        from per epoch), or a sequence of ``epochs`` permutations used as drawn ones.

        Returns the per-step losses, float64 (epochs * N,).
        """
        X, y = np.asarray(images), np.asarray(labels)
        permutations = _permutations(len(X), epochs, rng_or_permutations)
        log = log or (lambda *_: None)
        losses = []
        for epoch in range(epochs):
            log(f'Epoch {epoch+1} ->')
            # shuffle training data
            permutation = next(permutations)
            X = X[permutation]
            y = y[permutation]
            # training the CNN
            loss = 0
            accuracy = 0
            for i, (image, label) in enumerate(zip(X, y)):
                if i % 100 == 0: # print for every 100 steps
                    log(f"Step {i+1}. For the last 100 steps: average loss {loss/100}, accuracy {accuracy}")
                    loss = 0
                    accuracy = 0
                loss_1, accuracy_1 = self.train_step(image, label)
                loss += loss_1
                accuracy += accuracy_1
                losses.append(loss_1)
        return np.asarray(losses, dtype=np.float64)


def _permutations(n, epochs, rng_or_permutations):
    if rng_or_permutations is None or isinstance(rng_or_permutations, (int, np.integer, np.random.Generator)):
        rng = _as_generator(rng_or_permutations)
        return (rng.permutation(n) for _ in range(epochs))
    perms = [np.asarray(p) for p in rng_or_permutations]
    if len(perms) < epochs or any(p.shape != (n,) for p in perms):
        raise ValueError(f"need {epochs} permutations of length {n}")
    return iter(perms)


def epoch_orders(n, epochs, rng):
    """Index orders into the original data that :meth:`NotebookCNN.train` visits, one per epoch.

    Draws the same ``rng.permutation(n)`` per epoch as ``train`` and composes them as the
    notebook's ``X = X[permutation]`` does. Returns (epochs, n) int64.
    """
    rng = _as_generator(rng)
    order = np.arange(n)
    orders = []
    for _ in range(epochs):
        order = order[rng.permutation(n)]
        orders.append(order)
    return np.stack(orders) if orders else np.zeros((0, n), dtype=np.int64)
