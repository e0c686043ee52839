"""Opt-in checks for NaN and Inf: where do non-finite numbers first appear?

- ``attnkit.set_checks(True)`` (or ``ATTNKIT_CHECKS=1`` in the environment) makes every
  :func:`attnkit.attention` call check its inputs and output and raise :class:`NonFiniteError`
  naming which tensor holds how many NaN/Inf values. Off by default: no cost when off.
- ``with attnkit.checks.watch(model):`` checks the output of every submodule and raises naming
  the first module (by its qualified name and class) whose output is not finite.
- :func:`locate` runs a function under ``watch`` and returns that module's name instead of
  raising: the Trainer uses it to say where a diverged step went wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

_state = {"enabled": os.environ.get("ATTNKIT_CHECKS", "").strip() not in ("", "0")}


class NonFiniteError(FloatingPointError):
    """A tensor holds NaN or Inf values where finite numbers were expected."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


def set_checks(enabled: bool) -> None:
    """Turn the NaN/Inf checks of :func:`attnkit.attention` on or off (process-wide)."""
    from attnkit.kernels.registry import forget  # the kernels import nothing of this module

    _state["enabled"] = bool(enabled)
    forget()  # remembered calls skip the checks: none may be left while they are on


def checks_enabled() -> bool:
    """Whether :func:`set_checks` (or ``ATTNKIT_CHECKS=1``) turned the checks on; never
    while ``torch.compile`` or ``torch.export`` traces (a graph cannot raise on the values it
    will be given)."""
    return _state["enabled"] and not torch.compiler.is_compiling()


def check_within(
    name: str, values: Tensor, low: int, high: int, message: Callable[[], str]
) -> None:
    """Raise ``ValueError(message())`` unless every entry of the integer ``values`` lies in
    ``low..high``. A traced graph cannot raise from the values it will be given: under
    ``torch.compile`` the bounds become the compiled graph's run-time assertions (a
    ``RuntimeError`` naming the bound broken, or ``"{name} must lie in low..high"``), under
    ``torch.export`` the exported graph's caller checks them."""
    if values.numel() == 0 or torch.compiler.is_exporting():
        return
    lo, hi = int(values.min()), int(values.max())
    if torch.compiler.is_compiling():
        text = f"{name} must lie in {low}..{high}"
        torch._check(lo >= low, lambda: text)
        torch._check(hi <= high, lambda: text)
    elif lo < low or hi > high:
        raise ValueError(message())


def describe_non_finite(value: Any) -> str | None:
    """``"3 NaN and 1 Inf of (2, 5)"`` for the first tensor in ``value`` (a tensor, or a
    tuple/list/dict of them) that is not finite, or ``None`` when all are finite."""
    for tensor in _tensors(value):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nans = int(torch.isnan(tensor).sum())
            infs = int(torch.isinf(tensor).sum())
            return f"{nans} NaN and {infs} Inf of {tuple(tensor.shape)}"
    return None


def check_finite(where: str, **tensors: Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` and the first non-finite tensor."""
    for name, tensor in tensors.items():
        found = describe_non_finite(tensor)
        if found is not None:
            raise NonFiniteError(f"{where}: {name} holds {found} values", where=where)


@contextmanager
def watch(model: nn.Module) -> Iterator[None]:
    """Inside the block, the first submodule of ``model`` whose output is not finite raises
    :class:`NonFiniteError` naming it (``"decoder.layers.1.cross_attn (MultiHeadAttention)"``)."""
    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<model>'} ({type(module).__name__})"

        def hook(module: nn.Module, inputs: Any, output: Any, label: str = label) -> None:
            found = describe_non_finite(output)
            if found is not None:
                raise NonFiniteError(f"the output of {label} holds {found} values", where=label)

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def locate(model: nn.Module, run: Callable[[], Any]) -> str | None:
    """Run ``run()`` (a forward pass) under :func:`watch`; return the first module whose output
    is not finite, or ``None`` if every output is finite."""
    try:
        with watch(model), torch.no_grad():
            run()
    except NonFiniteError as error:
        return error.where
    return None


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
