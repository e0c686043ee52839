"""What every compat suite shares: the kernels that accept a request, flash-attn's tolerance
rule, and the disagreements found and explained (each also in docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import torch

import attnkit
from attnkit.kernels import kernels


def accepting(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> list[str]:
    """Every registered kernel that can serve ``attnkit.attention(q, k, v, **kwargs)``, in
    ``auto`` order (the ones that refuse say so through ``explain_dispatch``)."""
    names = []
    for name in kernels():
        try:
            attnkit.explain_dispatch(q, k, v, backend=name, **kwargs)
        except ValueError:
            continue
        names.append(name)
    return names


def within_twice_reference_error(
    got: torch.Tensor,
    ref: torch.Tensor,
    low_precision_ref: torch.Tensor,
    *,
    factor: float = 2.0,
    atol: float = 1e-5,
    what: str = "",
) -> None:
    """flash-attn's rule: the error of ``got`` against the high-precision ``ref`` is at most
    ``factor`` times the error of the same reference computed in the inputs' precision
    (``low_precision_ref``), plus ``atol``."""
    err = (got.double() - ref.double()).abs().max().item()
    ref_err = (low_precision_ref.double() - ref.double()).abs().max().item()
    assert err <= factor * ref_err + atol, (
        f"{what}: error {err:.3g} > {factor} x {ref_err:.3g} + {atol}"
    )
