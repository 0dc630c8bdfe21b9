"""An exported graph run by onnxruntime, with the model's interface: ``predict`` returns softmax
probabilities (N, K) as a NumPy array, ``class_names`` the names the model was trained with."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime

from .._validate import positive_int
from ..backend import to_numpy
from ..errors import ArgumentError, DataError, ExportError, ShapeError
from ..fileformat import parse_json

DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64"}


class OnnxModel:
    """The ONNX file at ``path`` in an onnxruntime session (``providers``: onnxruntime's, default the
    CPU; ``threads``: its intra-op threads, default onnxruntime's choice). ``input_shape`` (C, H,
    W), ``dtype``, ``class_names`` (or None) and ``output`` ("logits" or "probabilities") come
    from the graph; inputs are gathered on the host (``backend``, as a model's)."""

    backend = "numpy"

    def __init__(self, path, *, providers=None, threads: int | None = None) -> None:
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(os.fspath(path), options,
                                                        providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (Fail, NoSuchFile, InvalidGraph, ...)
            raise ExportError(f"{path}: onnxruntime cannot load it: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.class_names = parse_json(meta.get("class_names", "null"), "class_names", path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names_ok = self.class_names is None or isinstance(self.class_names, list) and all(
            isinstance(n, str) for n in self.class_names)
        shapes = [i.shape for i in inputs] + [o.shape for o in outputs]
        if not names_ok or len(inputs) != 1 or len(outputs) != 1 or [len(s) for s in shapes] != [4, 2] or not all(
                isinstance(d, int) for d in (*shapes[0][1:], shapes[1][1])):
            raise ExportError(f"{path}: expected one input (N, C, H, W) and one output (N, K) with fixed C, H, W and "
                              "K, and class names as a list of strings, as xpcnn.export.to_onnx writes")
        (graph_input,), graph_output = inputs, outputs[0]
        self.input_name, self.output = graph_input.name, graph_output.name
        self.batch, self.input_shape = graph_input.shape[0], tuple(graph_input.shape[1:])
        self.dtype = DTYPES.get(graph_input.type, "float32")

    def run(self, x) -> np.ndarray:
        """The graph's output (N, K) for a batch x (N, C, H, W) (any array library; cast to ``dtype``)."""
        x = np.asarray(to_numpy(x), dtype=self.dtype)
        if x.shape[1:] != self.input_shape:
            raise ShapeError(f"x: expected shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if len(x) == 0:
            raise DataError("x: the batch is empty (N = 0)")
        step = self.batch if isinstance(self.batch, int) else len(x)
        return np.concatenate([self.session.run(None, {self.input_name: x[i:i + step]})[0]
                               for i in range(0, len(x), step)])

    def predict(self, x, *, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities (N, K) for x (N, C, H, W), ``batch_size`` images per run."""
        batch_size = positive_int(batch_size, "batch_size", error=ArgumentError)
        x = to_numpy(x)  # any backend's array, gathered on the host (array-api-strict's have no len)
        # An empty x still makes one run, which refuses it.
        y = np.concatenate([self.run(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])
        if self.output == "probabilities":
            return y
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_classes(self, x, *, batch_size: int = 256) -> list:
        """Each sample's class: its name when the graph has class names, else its index."""
        index = self.predict(x, batch_size=batch_size).argmax(axis=1).tolist()
        return [self.class_names[i] for i in index] if self.class_names else index
