"""flash-attention's own tests, ported to attnkit on CPU.

Source: Dao-AILab/flash-attention, ``tests/test_flash_attn.py`` at commit
0251105a2fb19d2957484b7f023cd8c115286ced. Ported (rewritten here, in torch without einops):
``construct_local_mask``, ``attention_ref``, ``attn_bias_from_alibi_slopes`` and
``generate_random_padding_mask``; the (seqlen_q, seqlen_k) grids of ``test_flash_attn_causal``,
``test_flash_attn_output`` and ``test_flash_attn_varlen_output``; their tolerance rule: the
kernel's error against ``attention_ref`` in high precision is at most twice (outputs; gradients
twice in the causal test, three times in the output tests) the error of ``attention_ref``
computed in the inputs' precision with reordered operations, plus 1e-5.

Adaptations, each for a reason:
- CPU dtypes: float32 (reference upcast to float64) and bfloat16 (reference upcast to float32,
  as flash-attn does for fp16/bf16). flash-attn's fp16 has no fast CPU path.
- Sizes: batch 2 and the head counts of the original, head dims 59 and 64, lengths up to 1024
  (not 2048), and the flag combinations spread over the length pairs instead of crossed with
  every one, so the suite stays within its time budget on 2 cores.
- Not ported: dropout (flash-attn reads its kernel's dropout mask back; attnkit's dropout draws
  from torch's generator), the KV-cache and block-sparse APIs (no attnkit counterpart).
  ``softcap`` is ported as the score_mod ``attnkit.flex.soft_capping``.
- Variable-length causal/local attention: flash-attn aligns each sequence bottom-right to its
  own length, which is ``KeyLengths(key_lengths, query_lengths=...)`` (``align="end"``): those
  cases run batched with it, except with an ALiBi bias (one ``mask`` argument: the bias), which
  run attnkit per sequence; non-causal, non-local ones run batched with ``KeyLengths``.

Every kernel that accepts a case (``attnkit.kernels.kernels()``) is checked. Layout: flash-attn
is ``(B, L, H, D)``, attnkit ``(B, H, L, D)``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import attnkit
from attnkit import KeyLengths
from tests.compat._helpers import accepting, within_twice_reference_error

BATCH = 2  # 1 for lengths over 600 (time budget)
HEAD_DIMS = (59, 64)
HIGH = {torch.float32: torch.float64, torch.bfloat16: torch.float32}  # reference precision


# -- flash-attn's reference, ported --------------------------------------------------------------


def construct_local_mask(
    seqlen_q: int,
    seqlen_k: int,
    window_size: tuple[int, int] = (-1, -1),
    query_padding_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """True = masked out; (Lq, Lk) or (B, 1, Lq, Lk) with padding masks. Query i of a sequence
    of sq queries and sk keys sits at key position i + sk - sq (each sequence its own)."""
    row = torch.arange(seqlen_q).reshape(seqlen_q, 1)
    col = torch.arange(seqlen_k)
    sk = seqlen_k if key_padding_mask is None else key_padding_mask.sum(-1).reshape(-1, 1, 1, 1)
    sq = seqlen_q if query_padding_mask is None else query_padding_mask.sum(-1).reshape(-1, 1, 1, 1)
    if window_size[0] < 0:
        return col > row + sk - sq + window_size[1]
    sk = torch.full_like(col, seqlen_k) if key_padding_mask is None else sk
    return torch.logical_or(
        col > torch.minimum(row + sk - sq + window_size[1], sk),
        col < row + sk - sq - window_size[0],
    )


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_padding_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    attn_bias: torch.Tensor | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    upcast: bool = True,
    reorder_ops: bool = False,
    softcap: float = 0.0,
) -> torch.Tensor:
    """flash-attn's ``attention_ref`` (without dropout): q (B, Lq, H, D),
    k, v (B, Lk, Hk, D) -> (B, Lq, H, D). ``upcast`` computes in :data:`HIGH` precision."""
    if causal:
        window_size = (window_size[0], 0)
    dtype_og = q.dtype
    if upcast:
        q, k, v = (t.to(HIGH[dtype_og]) for t in (q, k, v))
    seqlen_q, seqlen_k = q.shape[1], k.shape[1]
    g = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)  # (B, Lk, H, D)
    d = q.shape[-1]
    if not reorder_ops:
        scores = torch.einsum("bthd,bshd->bhts", q / math.sqrt(d), k)
    else:
        scores = torch.einsum("bthd,bshd->bhts", q, k / math.sqrt(d))
    if softcap > 0:
        scores = scores / softcap
        scores = scores.tanh()
        scores = scores * softcap
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    local = None
    if window_size[0] >= 0 or window_size[1] >= 0:
        local = construct_local_mask(
            seqlen_q, seqlen_k, window_size, query_padding_mask, key_padding_mask
        )
        scores = scores.masked_fill(local, float("-inf"))
    if attn_bias is not None:
        scores = scores + attn_bias
    attention = torch.softmax(scores, dim=-1).to(v.dtype)
    if local is not None:  # rows with no key: 0, not NaN
        attention = attention.masked_fill(local.all(dim=-1, keepdim=True), 0.0)
    if query_padding_mask is not None:
        attention = attention.masked_fill(~query_padding_mask[:, None, :, None], 0.0)
    output = torch.einsum("bhts,bshd->bthd", attention, v)
    if query_padding_mask is not None:
        output = output.masked_fill(~query_padding_mask[:, :, None, None], 0.0)
    return output.to(dtype_og)


def attn_bias_from_alibi_slopes(
    slopes: torch.Tensor,
    seqlen_q: int,
    seqlen_k: int,
    query_padding_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """flash-attn's ALiBi bias, (B, H, 1, Lk) causal or (B, H, Lq, Lk)."""
    slopes = slopes[:, :, None, None]
    if causal:
        return torch.arange(-seqlen_k + 1, 1, dtype=torch.float32) * slopes
    row = torch.arange(seqlen_q).reshape(seqlen_q, 1)
    col = torch.arange(seqlen_k)
    sk = seqlen_k if key_padding_mask is None else key_padding_mask.sum(-1).reshape(-1, 1, 1, 1)
    sq = seqlen_q if query_padding_mask is None else query_padding_mask.sum(-1).reshape(-1, 1, 1, 1)
    relative_pos = torch.abs(row + sk - sq - col)
    return -slopes * relative_pos.to(slopes.dtype)


def generate_random_padding_mask(max_seqlen: int, batch_size: int) -> torch.Tensor:
    """flash-attn's "random" mode: lengths in max(1, L - 20) .. L. True = real token."""
    lengths = torch.randint(max(1, max_seqlen - 20), max_seqlen + 1, (batch_size, 1))
    return torch.arange(max_seqlen).expand(batch_size, max_seqlen) < lengths


# -- running attnkit in flash-attn's layout --------------------------------------------------


def heads_first(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2)  # (B, L, H, D) <-> (B, H, L, D)


def attnkit_kwargs(causal: bool, window_size, bias: torch.Tensor | None) -> dict:
    window = None if window_size[0] < 0 else (int(window_size[0]), int(window_size[1]))
    return {"causal": causal, "window": window, "mask": bias}


def check_every_kernel(q, k, v, g, out_ref, out_pt, grads_ref, grads_pt, grad_factor, run):
    """Run ``run(backend)`` -> output (B, Lq, H, D) for every kernel that accepts the case and
    hold outputs and gradients to flash-attn's rule."""
    for backend in run.backends:
        out = run(backend)
        within_twice_reference_error(out, out_ref, out_pt, what=f"{backend} output")
        grads = torch.autograd.grad(out, (q, k, v), g)
        for name, got, ref, pt in zip("qkv", grads, grads_ref, grads_pt, strict=True):
            within_twice_reference_error(
                got, ref, pt, factor=grad_factor, what=f"{backend} d{name}"
            )


def references(q, k, v, g, **kwargs):
    out_ref = attention_ref(q, k, v, **kwargs)
    out_pt = attention_ref(q, k, v, upcast=False, reorder_ops=True, **kwargs)
    grads_ref = torch.autograd.grad(out_ref, (q, k, v), g)
    grads_pt = torch.autograd.grad(out_pt, (q, k, v), g)
    return out_ref, out_pt, grads_ref, grads_pt


class Batched:
    """attnkit over the whole batch with one request."""

    def __init__(self, q, k, v, **kwargs) -> None:
        self.args = (heads_first(q), heads_first(k), heads_first(v))
        self.kwargs = kwargs
        self.bias = kwargs.get("mask")
        self.backends = accepting(*(t.detach() for t in self.args), **kwargs)

    def __call__(self, backend: str) -> torch.Tensor:
        return heads_first(attnkit.attention(*self.args, backend=backend, **self.kwargs))


def _inputs(seqlen_q, seqlen_k, nheads, nheads_k, d, dtype):
    batch = BATCH if max(seqlen_q, seqlen_k) <= 600 else 1

    def make(*shape):
        return torch.randn(*shape).to(dtype).requires_grad_()

    return make(batch, seqlen_q, nheads, d), make(batch, seqlen_k, nheads_k, d), make(
        batch, seqlen_k, nheads_k, d
    )


# -- test_flash_attn_causal --------------------------------------------------------------------

CAUSAL_PAIRS = [
    (1, 239), (3, 799), (127, 512), (127, 513), (113, 203), (128, 217), (113, 211), (108, 256),
    (256, 512), (1023, 1024),
]


@pytest.mark.parametrize(
    ("seqlen_q", "seqlen_k", "swap_sq_sk", "local", "dtype"),
    [
        (sq, sk, swap, local, dtype)
        for sq, sk in CAUSAL_PAIRS
        for swap in (False, True)
        for local in (False, True)
        # bfloat16 on the shorter pairs (time budget); float32 on every one
        for dtype in ((torch.float32, torch.bfloat16) if sk <= 300 else (torch.float32,))
    ],
)
def test_flash_attn_causal(seqlen_q, seqlen_k, swap_sq_sk, local, dtype) -> None:
    if swap_sq_sk:
        seqlen_q, seqlen_k = seqlen_k, seqlen_q
    torch.random.manual_seed(0)
    d = HEAD_DIMS[(seqlen_q + seqlen_k) % 2]
    window_size = (-1, -1) if not local else tuple(torch.randint(0, seqlen_k, (2,)).tolist())
    q, k, v = _inputs(seqlen_q, seqlen_k, 3, 3, d, dtype)
    g = torch.randn(q.shape).to(dtype)
    kwargs = {"causal": True, "window_size": window_size}
    refs = references(q, k, v, g, **kwargs)
    run = Batched(q, k, v, **attnkit_kwargs(True, window_size, None))
    assert "reference" in run.backends and "chunked" in run.backends
    check_every_kernel(q, k, v, g, *refs, grad_factor=2.0, run=run)


# -- test_flash_attn_output: mha / mqa / gqa, causal, local, alibi ---------------------------

OUTPUT_PAIRS = [(113, 203), (128, 217), (113, 211), (108, 256), (256, 512), (512, 256)]
LONG_PAIRS = [(1024, 1024), (1023, 1024), (1024, 1023)]
FLAGS = list(itertools.product(["mha", "mqa", "gqa"], [False, True], [False, True], [False, True]))


def _output_cases() -> list[tuple]:
    """Every flag combination once, the length pairs in turn (the three long pairs take the
    first three combinations with causal and local on); every third case in bfloat16."""
    cases, pairs = [], iter(OUTPUT_PAIRS * 4)
    long_pairs = iter(LONG_PAIRS)
    for i, flags in enumerate(FLAGS):
        pair = next(long_pairs, None) if flags[1] and flags[2] else None
        pair = pair or next(pairs)
        dtype = torch.bfloat16 if i % 3 == 2 and max(pair) <= 512 else torch.float32
        cases.append((*flags, *pair, dtype))
    return cases


@pytest.mark.parametrize(
    ("mha_type", "causal", "local", "alibi", "seqlen_q", "seqlen_k", "dtype"), _output_cases()
)
def test_flash_attn_output(mha_type, causal, local, alibi, seqlen_q, seqlen_k, dtype) -> None:
    torch.random.manual_seed(0)
    nheads = 6
    nheads_k = {"mha": nheads, "mqa": 1, "gqa": 2}[mha_type]
    d = HEAD_DIMS[seqlen_q % 2]
    window_size = (-1, -1) if not local else tuple(torch.randint(0, seqlen_k, (2,)).tolist())
    q, k, v = _inputs(seqlen_q, seqlen_k, nheads, nheads_k, d, dtype)
    attn_bias = None
    if alibi:  # float32, as flash-attn takes its slopes
        slopes = torch.rand(q.shape[0], nheads) * 0.3
        attn_bias = attn_bias_from_alibi_slopes(slopes, seqlen_q, seqlen_k, causal=causal)
    g = torch.randn(q.shape).to(dtype)
    refs = references(q, k, v, g, attn_bias=attn_bias, causal=causal, window_size=window_size)
    run = Batched(q, k, v, **attnkit_kwargs(causal, window_size, attn_bias))
    assert "reference" in run.backends
    check_every_kernel(q, k, v, g, *refs, grad_factor=3.0, run=run)


# -- softcap: flash-attn's tanh soft-capping as attnkit's score_mod -------------------------


@pytest.mark.parametrize(
    ("mha_type", "causal", "local", "seqlen_q", "seqlen_k", "dtype"),
    [
        ("mha", True, False, 113, 203, torch.float32),
        ("gqa", False, True, 128, 217, torch.float32),
        ("mqa", True, True, 256, 512, torch.float32),
        ("gqa", True, False, 108, 256, torch.bfloat16),
    ],
)
def test_flash_attn_softcap(mha_type, causal, local, seqlen_q, seqlen_k, dtype) -> None:
    """flash-attn's ``softcap`` (30.0 in its grid) is attnkit's ``flex.soft_capping`` score_mod,
    applied to the scaled scores before the masks, as in ``attention_ref``."""
    torch.random.manual_seed(0)
    nheads, softcap = 6, 30.0
    nheads_k = {"mha": nheads, "mqa": 1, "gqa": 2}[mha_type]
    d = HEAD_DIMS[seqlen_q % 2]
    window_size = (-1, -1) if not local else tuple(torch.randint(0, seqlen_k, (2,)).tolist())
    q, k, v = _inputs(seqlen_q, seqlen_k, nheads, nheads_k, d, dtype)
    q.data.mul_(8.0)  # scores well past the cap, so capping changes the answer
    g = torch.randn(q.shape).to(dtype)
    refs = references(q, k, v, g, causal=causal, window_size=window_size, softcap=softcap)
    kwargs = {**attnkit_kwargs(causal, window_size, None), "score_mod": attnkit.flex.soft_capping(softcap)}
    run = Batched(q, k, v, **kwargs)
    assert {"reference", "chunked"} <= set(run.backends)
    check_every_kernel(q, k, v, g, *refs, grad_factor=3.0, run=run)


# -- test_flash_attn_varlen_output ----------------------------------------------------------

VARLEN_PAIRS = [(1, 147), (113, 203), (128, 217), (108, 256), (256, 512), (512, 256), (1023, 1024)]


class PerSequence:
    """attnkit once per sequence, cut to its own lengths (flash-attn's varlen alignment), the
    rows of padded queries left 0 as flash-attn's ``pad_input`` leaves them."""

    def __init__(self, q, k, v, query_padding_mask, key_padding_mask, causal, window_size, bias):
        self.q, self.k, self.v, self.bias = q, k, v, bias
        self.lq = query_padding_mask.sum(-1).tolist()
        self.lk = key_padding_mask.sum(-1).tolist()
        self.kwargs = attnkit_kwargs(causal, window_size, None)
        first = self._one(0)
        self.backends = accepting(*(t.detach() for t in first[:3]), **first[3])

    def _one(self, b: int):
        lq, lk = self.lq[b], self.lk[b]
        q = heads_first(self.q[b : b + 1, :lq])  # (1, H, lq, D)
        k, v = heads_first(self.k[b : b + 1, :lk]), heads_first(self.v[b : b + 1, :lk])
        bias = None if self.bias is None else self.bias[b : b + 1, :, :lq, :lk]
        return q, k, v, {**self.kwargs, "mask": bias}

    def __call__(self, backend: str) -> torch.Tensor:
        rows = []
        for b in range(self.q.shape[0]):
            q, k, v, kwargs = self._one(b)
            out = heads_first(attnkit.attention(q, k, v, backend=backend, **kwargs))[0]
            rows.append(torch.nn.functional.pad(out, (0, 0, 0, 0, 0, self.q.shape[1] - out.shape[0])))
        return torch.stack(rows)  # (B, Lq, H, D)


class PaddedKeyLengths(Batched):
    """attnkit over the padded batch with ``KeyLengths``; padded query rows set to 0."""

    def __init__(self, q, k, v, query_padding_mask, key_padding_mask, bias) -> None:
        self.keep = query_padding_mask[:, :, None, None]  # (B, Lq, 1, 1)
        if bias is None:
            mask = KeyLengths(key_padding_mask.sum(-1))
        else:  # one mask argument: the key padding goes into the float bias as -inf
            mask = bias.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
        super().__init__(q, k, v, mask=mask)

    def __call__(self, backend: str) -> torch.Tensor:
        return super().__call__(backend) * self.keep


class VarlenKeyLengths(Batched):
    """attnkit over the padded batch with each sequence aligned on its own:
    ``KeyLengths(key lengths, query_lengths=...)``; its padded query rows see no key (0)."""

    def __init__(self, q, k, v, query_padding_mask, key_padding_mask, causal, window_size):
        padding = KeyLengths(key_padding_mask.sum(-1), query_lengths=query_padding_mask.sum(-1))
        super().__init__(q, k, v, **attnkit_kwargs(causal, window_size, padding))


@pytest.mark.parametrize(
    ("mha_type", "causal", "local", "alibi", "seqlen_q", "seqlen_k"),
    [
        (*flags, *VARLEN_PAIRS[i % len(VARLEN_PAIRS)])
        for i, flags in enumerate(itertools.product(["mha", "gqa"], [False, True], [False, True],
                                                    [False, True]))
    ],
)
def test_flash_attn_varlen_output(mha_type, causal, local, alibi, seqlen_q, seqlen_k) -> None:
    torch.random.manual_seed(0)
    dtype, nheads = torch.float32, 6
    nheads_k = nheads if mha_type == "mha" else 2
    d = HEAD_DIMS[seqlen_k % 2]
    window_size = (-1, -1) if not local else tuple(torch.randint(0, seqlen_k, (2,)).tolist())
    q, k, v = _inputs(seqlen_q, seqlen_k, nheads, nheads_k, d, dtype)
    batch = q.shape[0]
    query_padding_mask = generate_random_padding_mask(seqlen_q, batch)
    key_padding_mask = generate_random_padding_mask(seqlen_k, batch)
    attn_bias = None
    if alibi:
        slopes = torch.rand(batch, nheads) * 0.3
        attn_bias = attn_bias_from_alibi_slopes(
            slopes, seqlen_q, seqlen_k, query_padding_mask, key_padding_mask, causal=causal
        ).expand(batch, nheads, seqlen_q, seqlen_k)
    g = torch.randn(q.shape).to(dtype)
    masks = {"query_padding_mask": query_padding_mask, "key_padding_mask": key_padding_mask}
    refs = references(
        q, k, v, g, attn_bias=attn_bias, causal=causal, window_size=window_size, **masks
    )
    if (causal or local) and not alibi:  # per-sequence alignment, batched
        run = VarlenKeyLengths(q, k, v, query_padding_mask, key_padding_mask, causal, window_size)
    elif causal or local:  # and a bias: attnkit per sequence
        run = PerSequence(q, k, v, query_padding_mask, key_padding_mask, causal, window_size,
                          attn_bias)
    else:
        run = PaddedKeyLengths(q, k, v, query_padding_mask, key_padding_mask, attn_bias)
    assert "reference" in run.backends
    check_every_kernel(q, k, v, g, *refs, grad_factor=3.0, run=run)


def test_local_mask_is_attnkits_window_and_causal_is_bottom_right() -> None:
    """construct_local_mask (True = hidden) against attnkit's dense band, both alignments."""
    for lq, lk, window in [(5, 9, (2, 1)), (9, 5, (0, 0)), (7, 7, (3, 3)), (3, 8, (-1, 0))]:
        theirs = construct_local_mask(lq, lk, window)
        left = None if window[0] < 0 else window[0]
        ours = attnkit.masks.window(lq, lk, left, window[1])
        assert torch.equal(~theirs, ours), (lq, lk, window)


def test_sdpa_keeps_a_float32_bias_float32_with_bfloat16_inputs() -> None:
    """flash-attn takes ALiBi slopes in float32. The ``sdpa`` kernel once rounded a float32
    bias to bfloat16 before ``scaled_dot_product_attention`` (0.23 off where flash-attn's rule
    allows 0.03); PyTorch's SDPA adds it in float32, and so must attnkit."""
    torch.random.manual_seed(0)
    seqlen_q, seqlen_k, dtype = 512, 256, torch.bfloat16
    q, k, v = _inputs(seqlen_q, seqlen_k, 6, 2, 64, dtype)
    slopes = torch.rand(q.shape[0], 6) * 0.3
    bias = attn_bias_from_alibi_slopes(slopes, seqlen_q, seqlen_k, causal=True)
    out_ref = attention_ref(q, k, v, attn_bias=bias, causal=True)
    out_pt = attention_ref(q, k, v, attn_bias=bias, causal=True, upcast=False, reorder_ops=True)
    run = Batched(q, k, v, **attnkit_kwargs(True, (-1, -1), bias))
    for backend in ("reference", "sdpa", "chunked"):
        within_twice_reference_error(run(backend), out_ref, out_pt, what=backend)
