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


def known_disagreement(backend: str, q: torch.Tensor, mask: object) -> str | None:
    """Why ``backend`` is known to miss the original's tolerance on this request, or None.

    Each entry is a finding reported with the suite (docs/reliability.md) and shown by a test
    of its own that fails once it is fixed; on other cases the original's check may then fail
    for that backend alone.
    """
    wider_bias = (
        isinstance(mask, torch.Tensor)
        and mask.is_floating_point()
        and torch.finfo(mask.dtype).bits > torch.finfo(q.dtype).bits
    )
    if backend == "sdpa" and wider_bias:
        return (
            "kernels/sdpa.py casts a float bias to the input dtype (plan.bias.to(q.dtype)) "
            "before scaled_dot_product_attention, which itself keeps a float32 bias float32"
        )
    return None


def check(backend: str, q: torch.Tensor, mask: object, run_check: Any) -> None:
    """``run_check()`` for ``backend``, except that a :func:`known_disagreement` may fail."""
    try:
        run_check()
    except AssertionError:
        if known_disagreement(backend, q, mask) is None:
            raise
