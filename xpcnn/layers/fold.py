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
    """New unbuilt layers for the built ``layers``, each Conv2D followed by BatchNorm2D layers as
    one Conv2D with a bias (in Residual branches too; all the BatchNorm2D layers in a row, so
    folding a folded model changes nothing); ``sources`` gets (new layer, conv or layer, the
    BatchNorm2D layers folded into it)."""
    out, i = [], 0
    while i < len(layers):
        layer, end = layers[i], i + 1
        while type(layer) is Conv2D and end < len(layers) and type(layers[end]) is BatchNorm2D:
            end += 1
        bns = layers[i + 1:end]
        if type(layer) is Residual:
            twin = Residual(unbuilt_folded(layer.block, sources), unbuilt_folded(layer.shortcut, sources) or None)
        else:
            # Arrays shared, not copied (set again after the build; lazy ndonnx arrays cannot be copied)
            arrays = [*layer.params.values(), *layer.buffers.values(), *layer.grads.values(), layer.saved_values]
            twin = Conv2D(**{**layer.get_config(), "bias": True, "weight_init": layer.weight_init,
                             "bias_init": layer.bias_init}) if bns else \
                copy.deepcopy(layer, {id(a): a for a in arrays})
            sources.append((twin, layer, bns))
        out.append(twin)
        i = end
    return out


def fold_batchnorm(layers: list[Layer], build):
    """``build(new_layers)`` (a built container) for the built ``layers`` with every Conv2D then
    BatchNorm2D folded into one Conv2D, the other layers' arrays shared: the same outputs at
    inference within rounding."""
    sources = []
    model = build(unbuilt_folded(layers, sources))
    for twin, layer, bns in sources:
        if bns:
            w, b = layer.params["weight"], layer.params.get("bias")
            for bn in bns:
                w, b = folded_weight_and_bias(w, b, bn)
            twin.params["weight"], twin.params["bias"] = w, b
            continue
        pairs = zip(twin.leaves(), layer.leaves()) if isinstance(layer, Container) else [((0, twin), (0, layer))]
        for (_, new), (_, old) in pairs:
            new.params.update(old.params)
            new.buffers.update(old.buffers)
            new.set_state(old.get_state())
    return model
