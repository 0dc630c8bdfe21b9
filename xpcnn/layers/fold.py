"""BatchNorm folded into the convolution before it, for inference (PyTorch's ``fuse_conv_bn_eval``).

At inference BatchNorm2D is ``(y - mean) * gamma / sqrt(var + eps) + beta`` per channel, an
affine map of the Conv2D output ``y`` before it, so the pair is one Conv2D with the weight scaled
per output channel and a bias: one operation instead of the normalisation's several.
"""

from __future__ import annotations

import copy

from .base import Layer
from .containers import Container, Residual
from .conv import Conv2D
from .fused import folded_weight_and_bias
from .normalization import BatchNorm2D


def unbuilt_folded(layers: list[Layer], sources: list) -> list[Layer]:
    """New unbuilt layers for the built ``layers``, each Conv2D followed by a BatchNorm2D as one
    Conv2D with a bias (in Residual branches too); ``sources`` gets (new layer, conv or layer, bn or None)."""
    out, i = [], 0
    while i < len(layers):
        layer, bn = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        bn = bn if type(layer) is Conv2D and type(bn) is BatchNorm2D else None
        if type(layer) is Residual:
            twin = Residual(unbuilt_folded(layer.block, sources), unbuilt_folded(layer.shortcut, sources) or None)
        else:
            twin = Conv2D(**{**layer.get_config(), "bias": True}) if bn else copy.deepcopy(layer)
            sources.append((twin, layer, bn))
        out.append(twin)
        i += 2 if bn else 1
    return out


def fold_batchnorm(layers: list[Layer], build):
    """``build(new_layers)`` (a built container) for the built ``layers`` with every Conv2D then
    BatchNorm2D folded into one Conv2D, the other layers' arrays shared: the same outputs at
    inference within rounding."""
    sources = []
    model = build(unbuilt_folded(layers, sources))
    for twin, layer, bn in sources:
        if bn is not None:
            twin.params["weight"], twin.params["bias"] = folded_weight_and_bias(layer, bn)
            continue
        pairs = zip(twin.leaves(), layer.leaves()) if isinstance(layer, Container) else [((0, twin), (0, layer))]
        for (_, new), (_, old) in pairs:
            new.params.update(old.params)
            new.buffers.update(old.buffers)
            new.set_state(old.get_state())
    return model
