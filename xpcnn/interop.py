"""PyTorch interop: :func:`from_torch` (an ``nn.Sequential`` tree -> a built xpcnn Sequential with
the same weights and buffers) and :func:`to_torch` (a built Sequential -> an ``nn.Sequential``).

torch is imported only when one of these is called; without it they raise
:class:`~xpcnn.errors.BackendUnavailableError` naming the install command.

Module <-> layer (PyTorch semantics on both sides, options carried over):

==================================================  ==============================================
torch                                               xpcnn
==================================================  ==============================================
``Conv2d`` (any groups, padding int/pair/"same")    ``Conv2D`` (weight as is; sides that differ:
                                                    ``PaddedConv2d``, its input padded first)
``ConvTranspose2d``                                 ``Conv2DTranspose`` (weight as is)
``BatchNorm2d`` / ``BatchNorm1d`` (momentum, eps)   ``BatchNorm2D`` / ``BatchNorm1D`` + running stats
``Linear``                                          ``Dense`` (weight transposed: xpcnn's is (in, out))
``ReLU`` ``Tanh`` ``Sigmoid`` ``LeakyReLU``         the layer of the same name (slope carried)
``GELU`` (approximate "none" or "tanh")             ``GELU`` (the same approximate)
``MaxPool2d`` / ``AvgPool2d``                       ``MaxPool2D`` / ``AvgPool2D`` (ceil_mode,
                                                    count_include_pad; sides that differ: a
                                                    ``ConstantPad2d`` first, to_torch only)
``AdaptiveAvgPool2d(1)`` then ``Flatten()``         ``GlobalAvgPool2D`` (it already returns (N, C))
``Dropout(p)`` / ``Flatten()``                      ``Dropout(p)`` / ``Flatten()``
``TorchResidual(block, shortcut)``                  ``Residual(block, shortcut)``
==================================================  ==============================================

Residual blocks: PyTorch has no standard residual module, so ``xpcnn.interop.TorchResidual(block,
shortcut=None)`` is one: an ``nn.Module`` computing ``block(x) + shortcut(x)`` (``shortcut`` None or
``nn.Identity()`` is the identity). :func:`to_torch` writes Residual layers as it, and
:func:`from_torch` reads it. Nested ``nn.Sequential`` containers are flattened; any other module
is an :class:`~xpcnn.errors.ArgumentError` naming its type and its path in the tree.

:func:`to_torch` puts every parameter under the key xpcnn uses (``"3.block.0.weight"``), so
``to_torch(model).state_dict()`` and ``model.named_parameters()`` line up (a GlobalAvgPool2D
becomes a nested ``nn.Sequential(AdaptiveAvgPool2d(1), Flatten())`` to keep the indices).
Weights are copied exactly: ``to_torch(from_torch(m, ...))`` has bit-identical tensors.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ._validate import positive_int
from .backend import current_backend, resolve_target, to_numpy
from .errors import ArgumentError, ArgumentTypeError, BackendUnavailableError, NotBuiltError, ShapeError
from .layers import (
    GELU,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Conv2DTranspose,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)
from .model import Sequential

INSTALL = "pip install -e '.[torch]'"
_cache: dict[str, Any] = {}


def _torch():
    """The torch module, or a BackendUnavailableError naming the install command."""
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise BackendUnavailableError(f"torch is not installed ({e}); xpcnn.interop needs it: {INSTALL} "
                                      "(or pip install 'xpcnn[torch]')") from e


def _define_residual(torch):
    class TorchResidual(torch.nn.Module):
        """``y = block(x) + shortcut(x)``; ``shortcut`` None means the identity. The torch side of
        ``xpcnn.layers.Residual``: ``block`` and ``shortcut`` are modules (usually nn.Sequential)."""

        def __init__(self, block, shortcut=None) -> None:
            super().__init__()
            self.block = block
            self.shortcut = torch.nn.Identity() if shortcut is None else shortcut

        def forward(self, x):
            return self.block(x) + self.shortcut(x)

    return TorchResidual


def _define_padded_conv(torch):
    class PaddedConv2d(torch.nn.Conv2d):
        """``nn.Conv2d`` run on its input zero-padded first by ``pads`` (left, right, top, bottom), for
        a Conv2D whose sides differ (``nn.Conv2d`` pads both sides of an axis alike). Its parameters
        keep nn.Conv2d's names."""

        def __init__(self, *args, pads, **options) -> None:
            super().__init__(*args, padding=0, **options)
            self.pads = tuple(pads)

        def forward(self, x):
            return super().forward(torch.nn.functional.pad(x, self.pads))

        def extra_repr(self) -> str:
            return f"{super().extra_repr()}, pads={self.pads}"

    return PaddedConv2d


_DEFINE = {"TorchResidual": _define_residual, "PaddedConv2d": _define_padded_conv}


def _torch_class(name: str):
    """The torch module class ``name`` (TorchResidual, PaddedConv2d), defined once on first use:
    torch is only imported then."""
    torch = _torch()  # asked every time: a missing torch is an error even once the class exists
    if name not in _cache:
        cls = _DEFINE[name](torch)
        cls.__module__, cls.__qualname__ = __name__, name
        _cache[name] = cls
    return _cache[name]


def __getattr__(name: str):
    if name in _DEFINE:
        return _torch_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- torch -> xpcnn


def _host(tensor) -> np.ndarray:
    """A torch tensor as a float64 host array: exact for float16/bfloat16/float32/float64, so the
    one rounding (if any) is to the model's dtype."""
    return tensor.detach().cpu().double().numpy().copy()


class _Converter:
    """Walks an nn.Sequential tree into xpcnn layers, remembering which torch tensors go into
    which layer slots."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.nn = torch.nn
        self.residual = _torch_class("TorchResidual")
        # (layer, "params" / "buffers", name, host array in xpcnn's layout, torch path, transposed)
        self.assign: list[tuple[Layer, str, str, np.ndarray, str, bool]] = []

    def refuse(self, path: str, module, why: str) -> ArgumentError:
        kind = f"{type(module).__module__}.{type(module).__name__}"
        return ArgumentError(f"module: {path or '(the root)'} ({kind}: {module!r:.120}) {why}")

    def leaves(self, module, path: str) -> list[tuple[str, Any]]:
        """(path, module) of a container's children, nested nn.Sequential flattened."""
        if type(module) is not self.nn.Sequential:
            return [(path, module)]
        out = []
        for name, child in module.named_children():
            out.extend(self.leaves(child, f"{path}.{name}" if path else name))
        return out

    def convert_list(self, module, path: str) -> list[Layer]:
        items = self.leaves(module, path)
        layers: list[Layer] = []
        i = 0
        while i < len(items):
            p, m = items[i]
            if type(m) is self.nn.AdaptiveAvgPool2d:
                size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
                if tuple(size) != (1, 1):
                    raise self.refuse(p, m, "is not supported: only AdaptiveAvgPool2d(1) (global average pooling)")
                nxt = items[i + 1] if i + 1 < len(items) else None
                if nxt is None or type(nxt[1]) is not self.nn.Flatten or not self.plain_flatten(nxt[1]):
                    raise self.refuse(p, m, "must be followed by nn.Flatten() (together they are xpcnn's "
                                            "GlobalAvgPool2D, which returns (N, C))")
                layers.append(GlobalAvgPool2D())
                i += 2
                continue
            layers.append(self.convert(m, p))
            i += 1
        return layers

    def plain_flatten(self, m) -> bool:
        return m.start_dim == 1 and m.end_dim == -1

    def take(self, layer: Layer, attr: str, name: str, tensor, path: str, transpose: bool = False) -> None:
        host = _host(tensor)
        self.assign.append((layer, attr, name, host.T.copy() if transpose else host, path, transpose))

    def convert(self, m, path: str) -> Layer:
        nn, kind = self.nn, type(m)
        if kind is self.residual:
            block = self.convert_list(m.block, f"{path}.block")
            if not block:
                raise self.refuse(path, m, "has an empty block")
            identity = type(m.shortcut) is nn.Identity
            shortcut = None if identity else self.convert_list(m.shortcut, f"{path}.shortcut") or None
            return Residual(block, shortcut)
        if kind in (nn.Conv2d, nn.ConvTranspose2d, _cache.get("PaddedConv2d")):
            return self.conv(m, path)
        if kind in (nn.BatchNorm2d, nn.BatchNorm1d):
            return self.batch_norm(m, path)
        if kind is nn.Linear:
            layer = Dense(m.out_features, bias=m.bias is not None)
            self.take(layer, "params", "weight", m.weight, f"{path}.weight", transpose=True)
            if m.bias is not None:
                self.take(layer, "params", "bias", m.bias, f"{path}.bias")
            return layer
        if kind in (nn.ReLU, nn.Tanh, nn.Sigmoid):
            return {nn.ReLU: ReLU, nn.Tanh: Tanh, nn.Sigmoid: Sigmoid}[kind]()
        if kind is nn.LeakyReLU:
            return LeakyReLU(m.negative_slope)
        if kind is nn.GELU:
            return GELU(approximate=m.approximate)
        if kind in (nn.MaxPool2d, nn.AvgPool2d):
            return self.pool(m, path)
        if kind is nn.Dropout:
            return Dropout(m.p)
        if kind is nn.Flatten:
            if not self.plain_flatten(m):
                raise self.refuse(path, m, f"flattens dims {m.start_dim}..{m.end_dim}; "
                                           "xpcnn's Flatten is start_dim=1, end_dim=-1")
            return Flatten()
        raise self.refuse(path, m, "is not supported by xpcnn.interop.from_torch; supported: Conv2d, ConvTranspose2d, "
                                   "BatchNorm1d/2d, Linear, ReLU, Tanh, Sigmoid, LeakyReLU, GELU, "
                                   "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1)+Flatten, Dropout, Flatten, "
                                   "xpcnn.interop.TorchResidual, nested nn.Sequential")

    def conv(self, m, path: str) -> Layer:
        if m.padding_mode != "zeros":
            raise self.refuse(path, m, f"pads with padding_mode={m.padding_mode!r}; xpcnn pads with zeros only")
        bias = m.bias is not None
        if type(m) is not self.nn.ConvTranspose2d:
            if hasattr(m, "pads"):  # a PaddedConv2d
                left, right, top, bottom = m.pads
                padding = ((top, bottom), (left, right))
            else:
                padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
            layer = Conv2D(m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride), padding=padding,
                           dilation=tuple(m.dilation), groups=m.groups, bias=bias)
        else:
            layer = Conv2DTranspose(m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride),
                                    padding=tuple(m.padding), output_padding=tuple(m.output_padding),
                                    dilation=tuple(m.dilation), groups=m.groups, bias=bias)
        self.take(layer, "params", "weight", m.weight, f"{path}.weight")
        if bias:
            self.take(layer, "params", "bias", m.bias, f"{path}.bias")
        return layer

    def batch_norm(self, m, path: str) -> Layer:
        if not m.affine:
            raise self.refuse(path, m, "has affine=False; xpcnn's BatchNorm always has a weight and a bias")
        if not m.track_running_stats or m.running_mean is None:
            raise self.refuse(path, m, "has track_running_stats=False; xpcnn's BatchNorm keeps running statistics")
        if m.momentum is None:
            raise self.refuse(path, m, "has momentum=None (a cumulative average); xpcnn needs a number in [0, 1]")
        layer = (BatchNorm2D if type(m) is self.nn.BatchNorm2d else BatchNorm1D)(momentum=m.momentum, eps=m.eps)
        slots = (("params", "weight"), ("params", "bias"), ("buffers", "running_mean"), ("buffers", "running_var"))
        for attr, name in slots:
            self.take(layer, attr, name, getattr(m, name), f"{path}.{name}")
        return layer

    def pool(self, m, path: str) -> Layer:
        kernel = m.kernel_size
        stride = m.stride if m.stride is not None and m.stride != [] else None
        if type(m) is self.nn.MaxPool2d:
            if m.dilation not in (1, (1, 1)):
                raise self.refuse(path, m, f"has dilation={m.dilation}; xpcnn's MaxPool2D has no dilation")
            if m.return_indices:
                raise self.refuse(path, m, "has return_indices=True; a Sequential passes one tensor along")
            return MaxPool2D(kernel, stride, m.padding, ceil_mode=bool(m.ceil_mode))
        if m.divisor_override is not None:
            raise self.refuse(path, m, f"has divisor_override={m.divisor_override}; xpcnn's AvgPool2D has none")
        return AvgPool2D(kernel, stride, m.padding, ceil_mode=bool(m.ceil_mode),
                         count_include_pad=bool(m.count_include_pad))


def from_torch(module, input_shape, dtype: str = "float32", *, backend=None, seed: int = 0) -> Sequential:
    """A built xpcnn Sequential computing what ``module`` computes, with its weights and buffers.

    module: an ``nn.Sequential`` tree of the supported modules (see the module docstring), or one
        such module. Its parameters are copied, not shared.
    input_shape: one sample's shape, (C, H, W) or (F,).
    dtype: "float32" or "float64" of the xpcnn model (torch tensors are converted exactly, then
        rounded once to ``dtype`` if narrower).
    backend: where the model lives (default: the selected backend); seed: the build seed, which
        here only keys the Dropout masks.

    Raises ArgumentError naming the path of the first module that has no xpcnn equivalent.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ArgumentTypeError(f"module: expected a torch.nn.Module (an nn.Sequential), got {type(module).__name__}")
    converter = _Converter(torch)
    layers = converter.convert_list(module, "")
    if not layers:
        raise ArgumentError("module: an empty nn.Sequential has no xpcnn equivalent")
    target = current_backend() if backend is None else resolve_target(backend)
    model = Sequential(layers).build(input_shape, seed=seed, dtype=dtype, backend=target)
    for layer, attr, name, host, path, transposed in converter.assign:
        slot = getattr(layer, attr)
        if tuple(slot[name].shape) != host.shape:
            flip = (lambda shape: tuple(reversed(shape))) if transposed else tuple
            raise ShapeError(f"module: {path}: torch shape {flip(host.shape)} does not fit input_shape "
                             f"{tuple(input_shape)}, which needs {flip(slot[name].shape)} there")
        slot[name] = target.asarray(host, dtype=dtype)
    return model


# ---------------------------------------------------------------- xpcnn -> torch


def _tensor(torch, array, dtype, *, transpose: bool = False):
    host = to_numpy(array)
    return torch.from_numpy(np.array(host.T if transpose else host, copy=True)).to(dtype)


def _copy(torch, target, array, dtype, *, transpose: bool = False) -> None:
    with torch.no_grad():
        target.copy_(_tensor(torch, array, dtype, transpose=transpose))


def _torch_layer(torch, layer: Layer, path: str, dtype):
    nn, kind = torch.nn, type(layer)
    if kind is Residual:
        def branch(name, layers):
            return nn.Sequential(*(_torch_layer(torch, sub, f"{path}.{name}.{i}", dtype)
                                   for i, sub in enumerate(layers)))

        shortcut = branch("shortcut", layer.shortcut) if layer.shortcut else None
        return _torch_class("TorchResidual")(branch("block", layer.block), shortcut)
    if kind in (Conv2D, Conv2DTranspose):
        options = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups, bias=layer.bias, dtype=dtype)
        shape = (layer.input_shape[0], layer.out_channels, layer.kernel_size)
        if kind is Conv2D:
            padding, pads = _torch_padding(layer)
            module = nn.Conv2d(*shape, padding=padding, **options) if pads is None else \
                _torch_class("PaddedConv2d")(*shape, pads=pads, **options)
        else:
            module = nn.ConvTranspose2d(*shape, padding=layer.padding, output_padding=layer.output_padding, **options)
        _copy(torch, module.weight, layer.params["weight"], dtype)
        if layer.bias:
            _copy(torch, module.bias, layer.params["bias"], dtype)
        return module
    if kind in (BatchNorm2D, BatchNorm1D):
        cls = nn.BatchNorm2d if kind is BatchNorm2D else nn.BatchNorm1d
        module = cls(layer.input_shape[0], eps=layer.eps, momentum=layer.momentum, dtype=dtype)
        for name in ("weight", "bias"):
            _copy(torch, getattr(module, name), layer.params[name], dtype)
        for name in ("running_mean", "running_var"):
            _copy(torch, getattr(module, name), layer.buffers[name], dtype)
        return module
    if kind is Dense:
        module = nn.Linear(layer.input_shape[0], layer.units, bias=layer.bias, dtype=dtype)
        _copy(torch, module.weight, layer.params["weight"], dtype, transpose=True)
        if layer.bias:
            _copy(torch, module.bias, layer.params["bias"], dtype)
        return module
    if kind in (ReLU, Tanh, Sigmoid):
        return {ReLU: nn.ReLU, Tanh: nn.Tanh, Sigmoid: nn.Sigmoid}[kind]()
    if kind is LeakyReLU:
        return nn.LeakyReLU(layer.negative_slope)
    if kind is GELU:
        return nn.GELU(approximate=layer.approximate)
    if kind in (MaxPool2D, AvgPool2D):
        return _torch_pool(nn, layer, path)
    if kind is GlobalAvgPool2D:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if kind is Dropout:
        return nn.Dropout(layer.p)
    if kind is Flatten:
        return nn.Flatten()
    raise ArgumentError(f"model: layer {path} ({kind.__module__}.{kind.__name__}) has no torch equivalent in "
                        "xpcnn.interop.to_torch (custom layers cannot be converted)")


def _torch_padding(layer: Layer) -> tuple:
    """(the padding a torch module takes, None) for a layer whose sides match, else (0, the pads
    (left, right, top, bottom) to apply first)."""
    padding = layer.padding
    if isinstance(padding, str) or not isinstance(padding[0], (tuple, list)):
        return padding, None
    (top, bottom), (left, right) = padding
    return ((top, left), None) if (top, left) == (bottom, right) else (0, (left, right, top, bottom))


def _torch_pool(nn, layer, path: str):
    """MaxPool2d / AvgPool2d; with sides that differ, the padding first (-inf for the maximum) and the
    pool in floor mode, its bottom / right padding extended for ``ceil_mode`` as the layer's geometry
    has it. An average whose windows then count fewer cells has no torch form."""
    (padding, pads), maximum = _torch_padding(layer), type(layer) is MaxPool2D
    window = (layer.kernel_size, layer.stride, padding)
    pool = nn.MaxPool2d(*window, ceil_mode=layer.ceil_mode and pads is None) if maximum else \
        nn.AvgPool2d(*window, ceil_mode=layer.ceil_mode and pads is None, count_include_pad=layer.count_include_pad)
    if pads is None:
        return pool
    if not maximum and layer.geometry.divisor is not None:
        raise ArgumentError(f"model: layer {path} (AvgPool2D) with padding {layer.padding} counts fewer cells in some "
                            "windows (count_include_pad=False or ceil_mode), which no torch module computes after "
                            "an explicit pad; use equal sides or count_include_pad=True without ceil_mode")
    (top, bottom), (left, right) = layer.geometry.padding
    return nn.Sequential(nn.ConstantPad2d((left, right, top, bottom), -float("inf") if maximum else 0.0), pool)


def to_torch(model: Sequential):
    """An ``nn.Sequential`` on the CPU computing what the built ``model`` computes, with its exact
    weights and buffers in the model's dtype; Residual layers become
    :class:`TorchResidual`. Parameter keys match ``model.named_parameters()``."""
    torch = _torch()
    if not isinstance(model, Sequential):
        raise ArgumentTypeError(f"model: expected an xpcnn Sequential, got {type(model).__name__}")
    if not model.built:
        raise NotBuiltError("model: not built; build it (model.build(input_shape)) before to_torch")
    dtype = {"float32": torch.float32, "float64": torch.float64}[model.dtype]
    return torch.nn.Sequential(*(_torch_layer(torch, layer, str(i), dtype) for i, layer in enumerate(model.layers)))


def torch_resnet8(num_classes: int = 10, in_channels: int = 1):
    """The zoo's ``resnet8`` written directly in torch (independently of :func:`to_torch`): the
    reference the tests convert with :func:`from_torch` and the benchmarks time. torch's default
    initialisation."""
    num_classes, in_channels = positive_int(num_classes, "num_classes"), positive_int(in_channels, "in_channels")
    torch = _torch()
    nn, residual = torch.nn, _torch_class("TorchResidual")

    def stage(cin, cout, stride):
        block = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                              nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        shortcut = None if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        return [residual(block, shortcut), nn.ReLU()]

    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         *stage(16, 16, 1), *stage(16, 32, 2), *stage(32, 64, 2),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(64, num_classes))
