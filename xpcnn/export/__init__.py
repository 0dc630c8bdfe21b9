"""Deployment: a built model as an ONNX graph (:func:`to_onnx`), run by onnxruntime
(:class:`OnnxModel`), and read back (:func:`from_onnx`). Needs the ``onnx`` extra:
``pip install 'xpcnn[onnx]'`` (docs/deploy.md)."""

from .onnx import from_onnx, onnx_model, to_onnx
from .runtime import OnnxModel

__all__ = ["to_onnx", "onnx_model", "from_onnx", "OnnxModel"]
