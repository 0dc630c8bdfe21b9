"""A built Sequential as an ONNX graph written with ``onnx.helper`` (opset 17), and back.

Each layer becomes the operators below (docs/deploy.md has the table), in the graph's float
dtype, its nodes named ``"<layer path>/<Op>_<k>"``. Parameters and buffers are initializers
named by their keys (``"3.block.0.weight"``), and ``metadata_props`` keep the architecture
(``xpcnn_config``), the class names and the xpcnn version, so :func:`from_onnx` rebuilds the
model from a graph xpcnn wrote: it writes the graph again for that architecture and those
weights and refuses a file whose nodes or constants differ, naming the first node that does.

The traps: ONNX pads are [top, left, bottom, right]; pools run in floor mode with the bottom /
right padding already extended for ``ceil_mode`` (ONNX shape inference and PyTorch disagree on
some ceil-mode sizes); an average whose windows count fewer cells (``count_include_pad=False``
with padding, a ceil-mode window past the padding) is the full-window average times
kh*kw / count; Dense's weight is (in, out), Gemm's B as it is.
"""

from __future__ import annotations

import json
import os
from itertools import zip_longest

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from .. import layers
from ..backend import to_numpy
from ..errors import ArgumentError, ArgumentTypeError, ExportError, ModelFileError
from ..fileformat import write_atomic
from ..model import Sequential
from ..version import __version__

ELEMENT_TYPES = {"float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE}
# onnxruntime's CPU provider has no double kernel for these (None), or none before that opset: a
# float64 graph with one would not run.
DOUBLE_KERNEL_SINCE = {"Conv": None, "ConvTranspose": None, "AveragePool": None, "Erf": None, "PRelu": 16}
OUTPUTS = ("logits", "probabilities")
OPSETS = range(13, 18)  # ReduceMean takes its axes as an attribute up to opset 17
METHODS = ("hand", "trace")


class Graph:
    """The nodes and initializers being written, in ``dtype`` for ``opset``; ``where`` names the layer at hand."""

    def __init__(self, dtype: str, opset: int) -> None:
        self.dtype, self.opset, self.nodes, self.initializers, self.where = dtype, opset, [], [], ""

    def constant(self, name: str, value, dtype=None) -> str:
        array = np.asarray(to_numpy(value), dtype=dtype or self.dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs, path: str, **attributes) -> str:
        since = DOUBLE_KERNEL_SINCE.get(op, 0)
        if self.dtype == "float64" and (since is None or self.opset < since):
            before, fix = ("", "export") if since is None else (f" before opset {since}", f"opset={since} or export")
            raise ExportError(f"{self.where}: onnxruntime has no float64 kernel for ONNX {op}{before}, so a float64 "
                              f"graph with it would not run; {fix} in float32: to_onnx(model, path, dtype='float32') "
                              "(xpcnn export --dtype float32)")
        name = f"{path}/{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attributes))
        return name

    def arrays(self, layer, path: str) -> list[str]:
        """The layer's parameters then buffers as initializers named by their keys."""
        return [self.constant(f"{path}.{name}", array) for name, array in {**layer.params, **layer.buffers}.items()]


def onnx_pads(padding) -> list[int]:
    """((top, bottom), (left, right)) -> ONNX's [top, left, bottom, right]."""
    (top, bottom), (left, right) = padding
    return [top, left, bottom, right]


def conv(g: Graph, layer: layers.Conv2D, path: str, x: str) -> str:
    geometry = layer.geometry
    return g.node("Conv", [x, *g.arrays(layer, path)], path, kernel_shape=list(layer.kernel_size),
                  strides=list(geometry.stride), pads=onnx_pads(geometry.padding),
                  dilations=list(geometry.dilation), group=geometry.groups)


def conv_transpose(g: Graph, layer: layers.Conv2DTranspose, path: str, x: str) -> str:
    """PyTorch's output_padding rows lie in the full output as long as the padding covers them (they
    are then less end padding); past it, they hold the bias alone (then Pad, and the bias after).
    onnxruntime refuses an output_padding at least the stride, which PyTorch allows with dilation."""
    (ph, pw), (oh, ow) = layer.padding, layer.output_padding
    kept = (min(oh, ph), min(ow, pw))
    extra = [oh - kept[0], ow - kept[1]]
    out_hw = layer.geometry.out_hw
    # Where that leaves the convolution no rows (or columns) of its own, the whole uncropped
    # output, padded by the extra rows, then the output's window of it.
    whole = any(out_hw[a] - extra[a] <= 0 for a in range(2))
    begin = (0, 0) if whole else (ph, pw)
    end = (0, 0) if whole else (ph - kept[0], pw - kept[1])
    weight, *bias = g.arrays(layer, path)
    y = g.node("ConvTranspose", [x, weight, *([] if any(extra) else bias)], path, kernel_shape=list(layer.kernel_size),
               strides=list(layer.stride), pads=[*begin, *end], dilations=list(layer.dilation), group=layer.groups)
    if not any(extra):
        return y
    y = g.node("Pad", [y, g.constant(f"{path}.pads", [0, 0, 0, 0, 0, 0, *extra], np.int64)], path)
    if whole:
        y = crop(g, path, y, (ph, pw), out_hw)
    if not bias:
        return y
    axes = g.constant(f"{path}.bias_axes", [1, 2], np.int64)
    return g.node("Add", [y, g.node("Unsqueeze", [bias[0], axes], path)], path)


def pool(g: Graph, layer, path: str, x: str) -> str:
    geometry = layer.geometry
    window = dict(kernel_shape=list(geometry.kernel), strides=list(geometry.stride), pads=onnx_pads(geometry.padding))
    if isinstance(layer, layers.MaxPool2D):
        return g.node("MaxPool", [x], path, dilations=list(geometry.dilation), **window)
    y = g.node("AveragePool", [x], path, count_include_pad=1, **window)
    if geometry.divisor is None:
        return y
    (kh, kw), (rows, cols) = geometry.kernel, geometry.divisor
    scale = np.outer(kh / np.asarray(rows, dtype=float), kw / np.asarray(cols, dtype=float))
    return g.node("Mul", [y, g.constant(f"{path}.scale", scale)], path)


def gelu(g: Graph, layer: layers.GELU, path: str, x: str) -> str:
    def c(name, value):
        return g.constant(f"{path}.{name}", value)

    if layer.approximate == "none":
        erf = g.node("Erf", [g.node("Mul", [x, c("sqrt1_2", np.sqrt(0.5))], path)], path)
        cdf = g.node("Mul", [g.node("Add", [erf, c("one", 1.0)], path), c("half", 0.5)], path)
        return g.node("Mul", [x, cdf], path)
    cube = g.node("Mul", [g.node("Mul", [x, x], path), x], path)
    inner = g.node("Add", [x, g.node("Mul", [cube, c("kappa", 0.044715)], path)], path)
    tanh = g.node("Tanh", [g.node("Mul", [inner, c("beta", np.sqrt(2.0 / np.pi))], path)], path)
    return g.node("Mul", [g.node("Mul", [x, c("half", 0.5)], path), g.node("Add", [tanh, c("one", 1.0)], path)], path)


def random_crop(g: Graph, layer: layers.RandomCrop, path: str, x: str) -> str:
    """At inference, the center crop of the padded input (:class:`~xpcnn.layers.RandomCrop`)."""
    (_, height, width), (h, w), (ph, pw) = layer.input_shape, layer.size, layer.padding
    if (h, w) == (height, width):
        return x
    if ph or pw:
        x = g.node("Pad", [x, g.constant(f"{path}.pads", [0, 0, ph, pw, 0, 0, ph, pw], np.int64)], path)
    return crop(g, path, x, ((height + 2 * ph - h) // 2, (width + 2 * pw - w) // 2), (h, w))


def crop(g: Graph, path: str, x: str, start, size) -> str:
    """``x[..., top:top + h, left:left + w]`` for ``start`` (top, left) and ``size`` (h, w), as a Slice."""
    end = [start[0] + size[0], start[1] + size[1]]
    ints = [g.constant(f"{path}.{name}", value, np.int64)
            for name, value in (("starts", list(start)), ("ends", end), ("axes", [2, 3]))]
    return g.node("Slice", [x, *ints], path)


def normalize(g: Graph, layer: layers.Normalize, path: str, x: str) -> str:
    def column(name):
        return g.constant(f"{path}.{name}", np.reshape(getattr(layer, name), (-1, 1, 1)))

    return g.node("Div", [g.node("Sub", [x, column("mean")], path), column("std")], path)


def residual(g: Graph, layer: layers.Residual, path: str, x: str) -> str:
    return g.node("Add", [chain(g, layer.block, f"{path}.block.", x), chain(g, layer.shortcut, f"{path}.shortcut.", x)],
                  path)


def batchnorm(g: Graph, layer, path: str, x: str) -> str:
    """ONNX's epsilon is a float32 attribute: the variance plus eps is a node in the graph's dtype instead."""
    gamma, beta, mean, var = g.arrays(layer, path)
    var = g.node("Add", [var, g.constant(f"{path}.eps", layer.eps)], path)
    return g.node("BatchNormalization", [x, gamma, beta, mean, var], path, epsilon=0.0)


def leaky_relu(g: Graph, layer, path: str, x: str) -> str:
    """PRelu with the slope a constant in the graph's dtype (LeakyRelu's alpha is a float32 attribute)."""
    return g.node("PRelu", [x, g.constant(f"{path}.slope", layer.negative_slope)], path)


def identity(g: Graph, layer, path: str, x: str) -> str:
    return x


def single(op: str, **attributes):
    """A layer that is one ONNX operator on its input, its parameters and buffers."""
    def emit(g: Graph, layer, path: str, x: str) -> str:
        return g.node(op, [x, *g.arrays(layer, path)], path, **attributes)

    return emit


# By class name; only the built-in classes themselves (a subclass may change the op).
EMITTERS = {"Conv2D": conv, "Conv2DTranspose": conv_transpose, "MaxPool2D": pool, "AvgPool2D": pool, "GELU": gelu,
            "Residual": residual, "RandomCrop": random_crop, "Normalize": normalize, "Dropout": identity,
            "RandomFlip": identity, "RandomTranslation": identity, "Dense": single("Gemm"),
            "Flatten": single("Flatten", axis=1), "ReLU": single("Relu"), "Tanh": single("Tanh"),
            "Sigmoid": single("Sigmoid"), "LeakyReLU": leaky_relu, "BatchNorm1D": batchnorm, "BatchNorm2D": batchnorm,
            "GlobalAvgPool2D": single("ReduceMean", axes=[2, 3], keepdims=0)}


def chain(g: Graph, stack, prefix: str, x: str) -> str:
    """``x`` through the layers of ``stack`` (their paths ``prefix`` + index); a layer without an
    ONNX form is an ExportError naming it and its path."""
    for i, layer in enumerate(stack):
        path, kind = f"{prefix}{i}", type(layer).__name__
        emit = EMITTERS.get(kind) if type(layer) is getattr(layers, kind, None) else None
        if emit is None:
            raise ExportError(f"layer {path} ({kind}): has no ONNX form; the exportable layers are the built-in "
                              f"{', '.join(sorted(EMITTERS))}")
        g.where = f"layer {path} ({kind})"
        x = emit(g, layer, path, x)
    return x


def onnx_model(model: Sequential, *, opset: int = 17, output: str = "logits", dynamic_batch: bool = True,
               dtype: str | None = None, method: str = "hand") -> onnx.ModelProto:
    """The ONNX graph of a built ``model``: input "input" (N, C, H, W), output ``output`` (N, K),
    logits or softmax probabilities; N symbolic ("N") with ``dynamic_batch``, else 1. The graph is
    of ``model.fold_batchnorm()`` (and its config is what :func:`from_onnx` rebuilds). ``dtype``:
    the graph's float dtype (default the model's). ``method``: "hand" (written here, opset
    ``opset``) or "trace" (xpcnn's layer code run on ndonnx, ndonnx's opset: :mod:`.trace`)."""
    if not isinstance(model, Sequential):
        raise ArgumentTypeError(f"model: expected a built xpcnn Sequential, got {type(model).__name__}")
    model.require_built()
    dtype = model.dtype if dtype is None else dtype
    for name, value, valid in (("dtype", dtype, ELEMENT_TYPES), ("output", output, OUTPUTS), ("opset", opset, OPSETS),
                               ("method", method, METHODS), ("dynamic_batch", dynamic_batch, (True, False))):
        if not (type(value) is bool if name == "dynamic_batch" else type(value) in (str, int) and value in valid):
            raise ArgumentError(f"{name}: expected one of {', '.join(map(repr, valid))}, got {value!r}")
    if method == "trace" and opset != 17:
        raise ArgumentError(f"opset: a traced graph takes ndonnx's opset; opset applies to method='hand', got {opset}")
    folded = model.fold_batchnorm()  # each Conv2D + BatchNorm2D as one Conv: fewer nodes, same numbers
    try:
        proto = _graph(folded, opset, output, dynamic_batch, dtype, method)
    except ExportError:
        _graph(model, opset, output, dynamic_batch, dtype, method)  # its error names the layer by the user's path
        raise
    proto.producer_name, proto.producer_version = "xpcnn", __version__
    helper.set_model_props(proto, {"xpcnn_version": __version__, "xpcnn_config": json.dumps(folded.get_config()),
                                   "class_names": json.dumps(model.class_names), "xpcnn_output": output,
                                   "xpcnn_method": method})
    return proto


def _graph(model: Sequential, opset: int, output: str, dynamic_batch: bool, dtype: str, method: str):
    if method == "trace":
        from .trace import traced_model  # ndonnx is imported only for this

        proto = traced_model(model, output=output, dynamic_batch=dynamic_batch, dtype=dtype)
    else:
        g = Graph(dtype, opset)
        y = chain(g, model.layers, "", "input")
        g.nodes.append(helper.make_node("Softmax" if output == "probabilities" else "Identity", [y], [output],
                                        name=f"output/{output}", **({"axis": 1} if output == "probabilities" else {})))
        batch, element = "N" if dynamic_batch else 1, ELEMENT_TYPES[dtype]
        values = [helper.make_tensor_value_info(name, element, [batch, *shape])
                  for name, shape in (("input", model.input_shape), (output, model.output_shape()))]
        proto = helper.make_model(helper.make_graph(g.nodes, "xpcnn", values[:1], values[1:], g.initializers),
                                  opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return proto


def to_onnx(model: Sequential, path, *, opset: int = 17, output: str = "logits", dynamic_batch: bool = True,
            dtype: str | None = None, method: str = "hand") -> onnx.ModelProto:
    """Write ``model`` (built) as an ONNX file at ``path`` (see :func:`onnx_model`); checked with
    ``onnx.checker.check_model(full_check=True)`` first. Returns the graph."""
    proto = onnx_model(model, opset=opset, output=output, dynamic_batch=dynamic_batch, dtype=dtype, method=method)
    onnx.checker.check_model(proto, full_check=True)
    write_atomic(path, proto.SerializeToString())  # an old file at path stays whole if writing fails
    return proto


# Every operator the writer emits: a node of another kind is named first in a foreign graph.
EMITTED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Mul", "Add", "Erf", "Tanh", "Pad", "Slice", "Sub",
           "Div", "Unsqueeze", "Gemm", "Flatten", "Relu", "PRelu", "Sigmoid", "BatchNormalization", "ReduceMean",
           "Softmax", "Identity"}


def describe_node(i: int, node) -> str:
    return f"node {i} ({node.op_type} {node.name!r})" if node is not None else f"node {i} (missing)"


def from_onnx(path, *, backend=None) -> Sequential:
    """The built Sequential (weights, buffers, class names) of an ONNX file :func:`to_onnx` wrote,
    on ``backend`` (default: the selected one). Anything else is an ExportError naming the
    first node xpcnn does not write there."""
    try:  # external data would be read from other files: xpcnn writes none, so it is refused below
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable ONNX file ({e})") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ModelFileError(f"{path}: its weights are in external files; xpcnn writes them into the graph")
    meta, nodes = {p.key: p.value for p in proto.metadata_props}, list(proto.graph.node)
    if meta.get("xpcnn_method") == "trace":
        raise ExportError(f"{path}: written with method='trace', whose weights are unnamed ndonnx constants; "
                          "from_onnx reads graphs written with method='hand' (the default)")
    if "xpcnn_config" not in meta:
        first = next(((i, n) for i, n in enumerate(nodes) if n.op_type not in EMITTED),
                     (0, nodes[0] if nodes else None))
        raise ExportError(f"{path}: {describe_node(*first)} is not one xpcnn wrote (no 'xpcnn_config' in "
                          "metadata_props): from_onnx reads back graphs written by xpcnn.export.to_onnx")
    try:
        dtype = {v: k for k, v in ELEMENT_TYPES.items()}.get(proto.graph.input[0].type.tensor_type.elem_type)
        config = json.loads(meta["xpcnn_config"])
        model = Sequential.from_config(config)
        # The initializers' declared shapes against the architecture's, before anything is allocated
        dims = {t.name: tuple(t.dims) for t in proto.graph.initializer}
        params, buffers = model.state_shapes(config["input_shape"])
        for key, shape in {**params, **buffers}.items():
            if dims.get(key) != shape:
                raise ExportError(f"initializer {key!r}: expected shape {shape} for that architecture, got "
                                  f"{dims.get(key, 'none')}")
        model.build(config["input_shape"], dtype=dtype, backend=backend)
        model.class_names = json.loads(meta.get("class_names", "null"))
        arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as e:  # ArgumentError, DTypeError among them
        raise ExportError(f"{path}: its metadata or input do not describe an xpcnn model: {e}") from None
    for slots, assign in ((model.named_parameters(), model.set_weights), (model.named_buffers(), model.set_buffers)):
        missing = [key for key, _, _ in slots if key not in arrays]
        if missing:
            raise ExportError(f"{path}: initializer {missing[0]!r} (a weight of that architecture) is missing")
        assign([arrays[key] for key, _, _ in slots])
    expected = onnx_model(model, output=meta.get("xpcnn_output", "logits"), dtype=dtype)
    for i, (got, want) in enumerate(zip_longest(nodes, expected.graph.node)):
        if got != want:
            raise ExportError(f"{path}: {describe_node(i, got)} differs from what xpcnn writes for this architecture "
                              f"({describe_node(i, want)}): the graph was changed after export")
    for want in expected.graph.initializer:
        if not np.array_equal(arrays.get(want.name), numpy_helper.to_array(want)):
            raise ExportError(f"{path}: the constant {want.name!r} differs from what xpcnn writes for this model")
    return model
