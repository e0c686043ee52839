"""Graphs to ONNX files (``torch.onnx.export(..., dynamo=True)``), and onnxruntime sessions.

Needs the ``export`` extra (``onnx``, ``onnxscript``, ``onnxruntime``); without it the functions
here raise :class:`MissingExtraError` saying what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.export import ExportedProgram

from attnkit.explain._files import write_atomic
from attnkit.export.graph import Graph

EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL = "pip install 'attnkit[export]'"


class MissingExtraError(ModuleNotFoundError):
    """A package of the ``export`` extra is not installed (the message says what to run)."""


def require(*packages: str) -> None:
    """Raise :class:`MissingExtraError` naming the ``packages`` that are not installed."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"ONNX needs {', '.join(missing)}: {INSTALL}")


def save_onnx(graph: Graph, program: ExportedProgram, path: Path) -> Path:
    """Write ``program`` (exported from ``graph``) to ``path`` as one ONNX file, with the
    graph's input/output names and its dynamic axes named after their ``Dim``s; atomically
    (a temporary file renamed over ``path``).

    Raises:
        MissingExtraError: ``onnx``/``onnxscript`` are not installed.
    """
    require("onnx", "onnxscript")
    with _quiet_exporter():
        onnx_program = torch.onnx.export(
            program,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_shapes=graph.dynamic_shapes,  # names the axes after the Dims
            dynamo=True,
            verbose=False,
        )
    write_atomic(path, onnx_program.model_proto.SerializeToString())
    return path


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's chatter that says nothing about the graph, silenced: the registry's
    notes on torchvision ops, the optimizer's skipped folds, the note that a ``Dim`` shared by
    several inputs names one axis, torch's own deprecation of a pytree class."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*shares the same shape constraints")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


# A graph as a function from named input tensors to named output tensors.
Runner = Callable[[dict[str, Tensor]], dict[str, Tensor]]


class OnnxGraph:
    """An ONNX file run by onnxruntime on the CPU, as a :data:`Runner`.

    Raises:
        MissingExtraError: ``onnxruntime`` is not installed.
        FileNotFoundError: no such file.
    """

    def __init__(self, path: Path) -> None:
        require("onnxruntime")
        import onnxruntime

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The outputs by name, as CPU tensors sharing onnxruntime's memory."""
        feeds = {
            name: np.ascontiguousarray(inputs[name].detach().cpu().numpy())
            for name in self.input_names
        }
        arrays = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, map(torch.from_numpy, arrays), strict=True))


def describe(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The inputs and outputs of the ONNX file ``path``: name, dtype and shape (an int for a
    fixed axis, the axis's name for a dynamic one), as the manifest lists them."""
    require("onnx")
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def entry(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": dims}

    return {
        "inputs": [entry(v) for v in model.graph.input],
        "outputs": [entry(v) for v in model.graph.output],
    }


def opset(path: Path) -> int:
    """The default-domain ONNX opset of the file ``path``."""
    require("onnx")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
