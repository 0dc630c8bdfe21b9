"""``to_onnx(model, path, method="trace")``: the graph is xpcnn's own layer code run on ndonnx
arrays (the Array API as a graph builder), with a symbolic batch.

The layers' inference code reads no array values and takes every size but the batch from the
built geometry, so it runs unchanged on ndonnx: each operation becomes ONNX nodes. Two things
are the tracer's: the weights become ndonnx constants (on a copy of the model), and ndonnx,
which forgets the static sizes of a matmul's result once one dimension is symbolic, is told
each layer's output shape again with a reshape (a no-op in the graph). A layer whose code
needs the batch size as a number (Conv2DTranspose's column folding, the augmentation layers'
per-image index maps) cannot be traced: an ExportError names it.
"""

from __future__ import annotations

import copy

import ndonnx
import numpy as np

from ..backend import to_numpy
from ..functional import softmax
from ..layers.containers import run_traced


def traced_model(model, *, output: str, dynamic_batch: bool, dtype: str):
    """The ONNX ModelProto (ndonnx's opset) of ``model`` traced on an input "input"
    (N, C, H, W) -> ``output`` (N, K): logits, or softmax probabilities."""
    twin = copy.deepcopy(model)
    for slots, kind in ((twin.named_parameters(), "params"), (twin.named_buffers(), "buffers")):
        for _, layer, name in slots:
            arrays = getattr(layer, kind)
            arrays[name] = ndonnx.asarray(np.asarray(to_numpy(arrays[name]), dtype=dtype))
    x = ndonnx.argument(shape=("N" if dynamic_batch else 1, *model.input_shape), dtype=getattr(ndonnx, dtype))
    y = run_traced(twin.layers, "", x, model.input_shape)
    return ndonnx.build({"input": x}, {output: softmax(y, axis=1) if output == "probabilities" else y})
