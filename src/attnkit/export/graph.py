"""One module to export: example inputs, which axes are dynamic, and names for every input
and output (the names the ONNX graph and the manifest use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram


@dataclass
class Graph:
    """A module and what :func:`torch.export.export` needs to trace it for every size.

    Attributes:
        module: the module, in eval mode.
        args: example inputs (positional).
        dynamic_shapes: per input, ``{axis: torch.export.Dim}`` for the axes that vary
            (a tuple of them for ``*args``).
        input_names, output_names: one name per input tensor and per output tensor.
    """

    module: nn.Module
    args: tuple[Tensor, ...]
    dynamic_shapes: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]

    def named_args(self) -> dict[str, Tensor]:
        """The example inputs by input name."""
        return dict(zip(self.input_names, self.args, strict=True))

    def export(self) -> ExportedProgram:
        """The :class:`torch.export.ExportedProgram`, dynamic on the declared axes.

        Raises:
            torch's export errors, naming the line that stops tracing.
        """
        with torch.no_grad():
            return torch.export.export(
                self.module.eval(), self.args, dynamic_shapes=self.dynamic_shapes
            )
