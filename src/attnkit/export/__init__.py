"""Models out of PyTorch: ``torch.export`` graphs and ONNX files.

- :class:`Graph`: a module, example inputs, its dynamic axes (``torch.export.Dim``) and the
  names of its inputs and outputs; ``graph.export()`` traces it for every size.
- :func:`translator_graphs`: a Transformer translator as two graphs (encoder with the first
  decoding step; one more step), every key/value cache an input or output
  (:class:`TensorCache`).
- :func:`save_onnx`, :class:`OnnxGraph`: a graph to an ONNX file, and the file run by
  onnxruntime (the ``export`` extra: ``pip install 'attnkit[export]'``).
- :mod:`attnkit.export.onnx_translator`: a trained translation run to a folder of ONNX files
  with a manifest (``attnkit export``), and back to a translator decoding with onnxruntime
  (``attnkit translate --runtime onnx``).

Under ``torch.export``, ``backend="auto"`` chooses among the kernels that trace to standard
ATen ops (``sdpa``, ``reference``), whatever the sizes; a ``window`` then runs as ``sdpa``
with the band as a dense mask (see :func:`attnkit.explain_dispatch` and ``docs/export.md``).
"""

from attnkit.export.cache import TensorCache
from attnkit.export.graph import Graph
from attnkit.export.onnx import MissingExtraError, OnnxGraph, save_onnx
from attnkit.export.translator import TranslatorStart, TranslatorStep, translator_graphs

__all__ = [
    "Graph",
    "MissingExtraError",
    "OnnxGraph",
    "TensorCache",
    "TranslatorStart",
    "TranslatorStep",
    "save_onnx",
    "translator_graphs",
]
