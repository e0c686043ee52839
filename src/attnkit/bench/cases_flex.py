"""Benchmark cases for FlexAttention-style masks and for the band kernel's throughput.

* ``flex-*-fwd``: attnkit with a ``mask_mod`` against PyTorch's ``flex_attention`` compiled
  with ``torch.compile`` (CPU), the same ``mask_mod``, the block masks of both built once and
  the compilation done in ``build()``, outside the timed region.
* ``flex-*-fwdbwd``: the same masks, forward and backward, against SDPA with the dense bool
  mask (FlexAttention has no backward pass on CPU).
* ``local-throughput-N16384``: ``window=(128, 128)`` against a square float32 matmul of the
  same *useful* FLOPs (the ``4·D`` per visible query–key pair, per head): the fraction of
  the machine's matmul throughput the band kernel reaches.

Sizes as the other cases: float32, batch 1, 8 heads, head dim 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import attnkit
from attnkit.bench.cases import Case, Fn, Target, _forward_backward, _qkv, _randn

# 8 documents of different lengths packed into 4096 positions (not all whole 128-blocks)
DOCUMENT_LENGTHS = (256, 768, 384, 640, 512, 320, 704, 512)
WINDOW = 256


def document_mask(n: int):
    counts = torch.tensor(DOCUMENT_LENGTHS)
    doc = torch.repeat_interleave(torch.arange(len(DOCUMENT_LENGTHS)), counts)  # (N,)
    if doc.numel() != n:
        raise ValueError(f"the documents fill {doc.numel()} positions, not {n}")

    def same_document(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return doc[q_idx] == doc[kv_idx]

    return same_document


def sliding_window(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return (q_idx >= kv_idx) & (q_idx - kv_idx < WINDOW)


def _masks(kind: str, n: int):
    """``(mask_mod, attnkit block mask)``, the block mask built once."""
    mask_mod = document_mask(n) if kind == "document" else sliding_window
    return mask_mod, attnkit.create_block_mask(mask_mod, None, None, n, n)


def against_flex(kind: str, n: int):
    def build() -> tuple[Fn, Fn]:
        from torch.nn.attention import flex_attention as flex

        q, k, v = _qkv(n)
        mask_mod, ours_mask = _masks(kind, n)
        theirs_mask = torch.compile(flex.create_block_mask)(mask_mod, None, None, n, n, "cpu")
        compiled = torch.compile(flex.flex_attention, dynamic=False)
        compiled(q, k, v, block_mask=theirs_mask)  # compile here, not in the timed region
        return (
            lambda: attnkit.attention(q, k, v, mask=ours_mask),
            lambda: compiled(q, k, v, block_mask=theirs_mask),
        )

    return build


def against_dense_sdpa(kind: str, n: int):
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n, grad=True)
        mask_mod, ours_mask = _masks(kind, n)
        rows = torch.arange(n).unsqueeze(-1)  # (N, 1)
        dense = mask_mod(torch.zeros(()), torch.zeros(()), rows, torch.arange(n))  # (N, N)
        grad = _randn(1, 8, n, 64, seed=9)
        ours = _forward_backward(lambda: attnkit.attention(q, k, v, mask=ours_mask), (q, k, v),
                                 grad)
        base = _forward_backward(
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense), (q, k, v), grad
        )
        return ours, base

    return build


def band_throughput(n: int, window: tuple[int, int]):
    """``window`` attention against a square matmul of the same useful FLOPs."""

    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n)
        left, right = window
        i = torch.arange(n)
        pairs = int(((i + right).clamp(max=n - 1) - (i - left).clamp(min=0) + 1).sum())
        flops = 4 * pairs * 64 * 8  # q kᵀ and P V per visible pair, per head
        side = round((flops / 2) ** (1 / 3))
        a, b = _randn(side, side, seed=7), _randn(side, side, seed=8)
        return lambda: attnkit.attention(q, k, v, window=window), lambda: a @ b

    return build


FLEX = "torch flex_attention, torch.compile (CPU), same mask_mod"
SDPA_DENSE = "torch SDPA + the dense bool mask"

CASES: list[Case] = [
    Case("flex-document-fwd-N4096", FLEX, against_flex("document", 4096), Target(1.2)),
    Case("flex-sliding-256-fwd-N16384", FLEX, against_flex("sliding", 16384), Target(1.5),
         repeats=3),
    Case("flex-document-fwdbwd-N4096", SDPA_DENSE, against_dense_sdpa("document", 4096),
         Target(5)),
    Case("flex-sliding-256-fwdbwd-N16384", SDPA_DENSE, against_dense_sdpa("sliding", 16384),
         Target(5), repeats=3),
    Case("local-throughput-N16384", "float32 matmul, same useful FLOPs",
         band_throughput(16384, (128, 128)), Target(0.6), repeats=3),
]

__all__ = ["CASES"]
