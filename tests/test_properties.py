"""Property-based tests (hypothesis): every kernel against `reference`, and attnkit's
MultiHeadAttention against torch.nn.MultiheadAttention, on generated configurations.

Profiles: the default runs a few hundred cases per test (over 500 in all);
``HYPOTHESIS_PROFILE=slow`` runs many more.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import attnkit
from attnkit import KeyLengths, Score
from attnkit.functional import build_plan
from attnkit.kernels import kernels

settings.register_profile(
    "default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SCORES = ["scaled_dot", "dot", "cosine", "general", "additive", "concat"]


@st.composite
def requests(draw):
    b = draw(st.integers(1, 2))
    hkv = draw(st.integers(1, 2))
    hq = hkv * draw(st.integers(1, 3))
    lq = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 13, 33]))
    lk = draw(st.sampled_from([0, 1, 2, 4, 7, 9, 16, 31, 65]))
    d = draw(st.sampled_from([1, 3, 8, 16]))
    dv = draw(st.sampled_from([1, 5, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.bfloat16]))
    score = draw(st.sampled_from(SCORES))
    normalize = draw(st.sampled_from(["softmax", "softmax", "softmax", "sparsemax", "hardmax"]))
    causal = draw(st.booleans())
    window = draw(st.none() | st.tuples(st.integers(0, 5), st.integers(0, 5)))
    mask_kind = draw(st.sampled_from(["none", "bool", "lengths", "bias"]))
    return_weights = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([None, None, 0.5, 3.0]))
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return (torch.randn(*shape, generator=g) * 2).to(dtype)

    q, k, v = randn(b, hq, lq, d), randn(b, hkv, lk, d), randn(b, hkv, lk, dv)
    kwargs = {
        "causal": causal, "window": window, "normalize": normalize, "scale": scale,
        "return_weights": return_weights,
    }
    if score == "general":
        kwargs["score"] = Score("general", weight=torch.randn(d, d, generator=g))
    elif score == "additive":
        a = 4
        kwargs["score"] = Score(
            "additive", w_q=torch.randn(a, d, generator=g), w_k=torch.randn(a, d, generator=g),
            v=torch.randn(a, generator=g),
        )
    elif score == "concat":
        kwargs["score"] = Score(
            "concat", weight=torch.randn(4, 2 * d, generator=g), v=torch.randn(4, generator=g)
        )
    else:
        kwargs["score"] = score
    if mask_kind == "bool":
        kwargs["mask"] = torch.rand(b, 1, lq, lk, generator=g) > 0.3  # some rows end up empty
    elif mask_kind == "lengths":
        kwargs["mask"] = KeyLengths(torch.randint(0, lk + 1, (b,), generator=g))
    elif mask_kind == "bias":
        kwargs["mask"] = torch.randn(lq, lk, generator=g)
    return q, k, v, kwargs


def plain_low_precision(q, k, v, kwargs) -> Tensor:
    """Attention as plain PyTorch computes it in q's dtype: the dot-product scores' transforms
    and matmul, the normaliser and ``@ v`` in that dtype — the baseline of flash-attn's rule."""
    plan = build_plan(q, k, v, **kwargs)
    group = plan.shapes.group
    kr, vr = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, Hq, Lk, *)
    form = plan.score.dot
    if form is not None:  # e.g. general: q W rounded to q's dtype, as any bf16 matmul does
        qp, kp = form.prepare_q(q), form.prepare_k(kr)
        scores = form.scale * torch.matmul(qp, kp.transpose(-1, -2))  # (B, Hq, Lq, Lk)
    else:  # additive/concat: computed in float32, the logits rounded
        scores = plan.score.fn(q.float(), kr.float()).to(q.dtype)  # (B, Hq, Lq, Lk)
    if plan.visibility.bias is not None:
        scores = scores + plan.visibility.bias.to(q.dtype)
    allowed = plan.visibility.mask_of(0, q.shape[2], 0, k.shape[2])
    weights = plan.normalize(scores.to(q.dtype), allowed)  # (B, Hq, Lq, Lk) in q's dtype
    return torch.matmul(weights.to(q.dtype), vr)


def largest_logit(q, k, v, kwargs) -> float:
    """max |score| over every query–key pair, in float64."""
    if not q.shape[2] or not k.shape[2]:
        return 0.0
    q64, k64, v64 = q.double(), k.double(), v.double()
    plan = build_plan(q64, k64, v64, **kwargs)
    kr = k64.repeat_interleave(plan.shapes.group, dim=1)  # (B, Hq, Lk, D)
    scores = plan.score.fn(q64, kr)  # (B, Hq, Lq, Lk)
    if plan.visibility.bias is not None:
        scores = scores + plan.visibility.bias.double()
    return float(scores.abs().max())


def tolerance(plain, exact, dtype, logit: float = 0.0, value: float = 0.0) -> float:
    """flash-attn's rule: twice the error plain PyTorch makes in ``dtype`` (against float64),
    plus a floor. In bfloat16 a logit ``s`` is only known to ``|s|·2⁻⁸``, which moves a weight
    by that fraction of itself: kernels that round in a different order can differ from plain
    PyTorch by up to ``2·2⁻⁸·max|s|·max|v|`` on one small case, whatever their average."""
    size = float(exact.abs().max()) if exact.numel() else 0.0
    if dtype == torch.float32:
        return 1e-4 * (1 + size)
    own = float((plain.double() - exact).abs().max()) if exact.numel() else 0.0
    return 2 * own + 4 * 2**-8 * (1 + size) + 2 * 2**-8 * logit * value


@given(requests())
def test_every_kernel_matches_reference(request) -> None:
    q, k, v, kwargs = request
    if kwargs["normalize"] == "hardmax" and q.dtype == torch.bfloat16:
        kwargs["normalize"] = "softmax"  # bf16 scores tie often; the argmax is then arbitrary
    want = attnkit.attention(q, k, v, backend="reference", **kwargs)
    exact = attnkit.attention(q.double(), k.double(), v.double(), backend="reference", **kwargs)
    want_out = want[0] if kwargs["return_weights"] else want
    exact_out = exact[0] if kwargs["return_weights"] else exact
    assert torch.isfinite(want_out).all()
    plan = build_plan(q, k, v, **kwargs)
    plain = want_out if q.dtype == torch.float32 else plain_low_precision(q, k, v, kwargs)
    logit = largest_logit(q, k, v, kwargs)
    value = float(v.abs().max()) if v.numel() else 0.0
    for name, kernel in kernels().items():
        if name == "reference" or kernel.capabilities.refuses(plan) is not None:
            continue
        got = attnkit.attention(q, k, v, backend=name, **kwargs)
        got_out = got[0] if kwargs["return_weights"] else got
        assert got_out.dtype == q.dtype and got_out.shape == want_out.shape, name
        assert torch.isfinite(got_out).all(), name
        error = float((got_out.double() - exact_out).abs().max()) if got_out.numel() else 0.0
        bound = tolerance(plain, exact_out, q.dtype, logit, value)
        assert error <= bound, (name, error, bound)
        if kwargs["return_weights"]:
            w_error = (got[1].double() - exact[1]).abs().max() if got[1].numel() else 0.0
            assert w_error <= tolerance(want[1], exact[1], q.dtype), (name, "weights", w_error)


@given(requests())
def test_rows_with_nothing_to_attend_are_zero(request) -> None:
    q, k, v, kwargs = request
    kwargs["return_weights"] = True
    out, weights = attnkit.attention(q, k, v, **kwargs)
    plan = build_plan(q, k, v, **kwargs)
    allowed = plan.visibility.mask_of(0, q.shape[2], 0, k.shape[2])
    if allowed is None or not q.shape[2] or not k.shape[2]:
        return
    if plan.visibility.bias is not None:
        return  # -inf-free random biases never empty a row
    empty = ~allowed.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2]).any(-1)  # (B, H, Lq)
    assert torch.all(out[empty] == 0) and torch.all(weights[empty] == 0)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()


@st.composite
def mha_configs(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    embed = heads * draw(st.sampled_from([2, 3, 8]))
    batch_first = draw(st.booleans())
    b, lq, lk = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    self_attention = draw(st.booleans())
    use_kpm, use_mask = draw(st.booleans()), draw(st.sampled_from(["none", "bool", "float"]))
    need_weights, average = draw(st.booleans()), draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return (heads, embed, batch_first, b, lq, lk, self_attention, use_kpm, use_mask,
            need_weights, average, seed)


@settings(max_examples=150)
@given(mha_configs())
def test_multihead_matches_torch(config) -> None:
    (heads, embed, batch_first, b, lq, lk, self_attention, use_kpm, use_mask, need_weights,
     average, seed) = config
    torch.manual_seed(seed)
    if self_attention:
        lk = lq
    theirs = nn.MultiheadAttention(embed, heads, batch_first=batch_first).eval()
    ours = attnkit.MultiHeadAttention.from_torch(theirs)
    q = torch.randn(b, lq, embed)
    kv = q if self_attention else torch.randn(b, lk, embed)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    kwargs = {"need_weights": need_weights, "average_attn_weights": average}
    if use_kpm:
        kpm = torch.zeros(b, lk, dtype=torch.bool)
        kpm[:, 1:] = torch.rand(b, lk - 1) > 0.6  # key 0 stays: no empty rows (PyTorch gives NaN)
        kwargs["key_padding_mask"] = kpm if use_mask != "float" else torch.zeros(b, lk).masked_fill(kpm, float("-inf"))
    if use_mask == "bool":
        m = torch.rand(lq, lk) > 0.7
        m[:, 0] = False
        kwargs["attn_mask"] = m
    elif use_mask == "float":
        kwargs["attn_mask"] = torch.randn(lq, lk)
    want, want_w = theirs(q, kv, kv, **kwargs)
    got, got_w = ours(q, kv, kv, **kwargs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if need_weights:
        torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-4)
    else:
        assert got_w is None
