"""attnkit.attention(): the contract of DESIGN.md, dispatch, and one test per bad input."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit import KeyLengths, Normalizer, Score


def qkv(b=2, hq=4, hkv=4, lq=5, lk=7, d=8, dv=8, dtype=torch.float32, grad=False):
    q = torch.randn(b, hq, lq, d, dtype=dtype, requires_grad=grad)
    k = torch.randn(b, hkv, lk, d, dtype=dtype, requires_grad=grad)
    v = torch.randn(b, hkv, lk, dv, dtype=dtype, requires_grad=grad)
    return q, k, v


# -- the contract ----------------------------------------------------------------------------


def test_default_equals_torch_sdpa() -> None:
    q, k, v = qkv()
    torch.testing.assert_close(attnkit.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_return_weights_shape_and_rows_sum_to_one() -> None:
    q, k, v = qkv(hkv=2)
    out, weights = attnkit.attention(q, k, v, return_weights=True)
    assert out.shape == (2, 4, 5, 8) and weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))


def test_grouped_query_equals_repeated_heads() -> None:
    q, k, v = qkv(hq=6, hkv=2)
    grouped = attnkit.attention(q, k, v, causal=True)
    repeated = attnkit.attention(
        q,
        k.repeat_interleave(3, dim=1),
        v.repeat_interleave(3, dim=1),
        causal=True,
        backend="reference",
    )
    torch.testing.assert_close(grouped, repeated)


def test_key_lengths_equal_a_bool_padding_mask() -> None:
    q, k, v = qkv()
    lengths = torch.tensor([7, 3])
    dense = torch.arange(7) < lengths[:, None]  # (B, Lk)
    a = attnkit.attention(q, k, v, mask=KeyLengths(lengths))
    b = attnkit.attention(q, k, v, mask=dense[:, None, None, :])
    torch.testing.assert_close(a, b)


def test_key_starts_equal_a_bool_left_padding_mask() -> None:
    q, k, v = qkv()
    starts, lengths = torch.tensor([2, 0]), torch.tensor([7, 5])
    j = torch.arange(7)
    dense = (j >= starts[:, None]) & (j < lengths[:, None])  # (B, Lk)
    for causal in (False, True):
        a = attnkit.attention(q, k, v, mask=KeyLengths(lengths, starts=starts), causal=causal)
        b = attnkit.attention(q, k, v, mask=dense[:, None, None, :], causal=causal)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[1, 1, 0], [1, 1, 1]], ([2, 3], None)),  # right padding only: no starts
        ([[0, 1, 1], [0, 0, 1]], ([3, 3], [1, 2])),  # left padding
        ([[0, 1, 0], [0, 0, 0]], ([2, 0], [1, 0])),  # both sides; an item with no real key
        ([[1, 0, 1], [1, 1, 1]], None),  # a pad between real keys: not a run
    ],
)
def test_key_lengths_from_mask(rows, expected) -> None:
    got = KeyLengths.from_mask(torch.tensor(rows, dtype=torch.bool))
    if expected is None:
        assert got is None
        return
    lengths, starts = expected
    assert got.lengths.tolist() == lengths
    assert (None if got.starts is None else got.starts.tolist()) == starts


def test_key_lengths_refuse_bad_starts() -> None:
    with pytest.raises(ValueError, match=r"starts must be ≥ 0"):
        KeyLengths(torch.tensor([3, 3]), starts=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"starts \(3,\) and lengths \(2,\)"):
        KeyLengths(torch.tensor([3, 3]), starts=torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match=r"starts must be a 1-D integer tensor"):
        KeyLengths(torch.tensor([3, 3]), starts=torch.tensor([0.5, 0.0]))


def test_row_with_nothing_to_attend_is_zero_and_has_zero_grad() -> None:
    q, k, v = qkv(grad=True)
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    mask[1, 0, 3] = False
    for backend in ("auto", "reference"):
        out = attnkit.attention(q, k, v, mask=mask, backend=backend)
        assert torch.all(out[1, :, 3] == 0)
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        assert torch.all(q.grad[1, :, 3] == 0)
        q.grad = k.grad = v.grad = None


def test_causal_with_more_queries_than_keys_leaves_early_queries_empty() -> None:
    q, k, v = qkv(lq=6, lk=3)
    out, weights = attnkit.attention(q, k, v, causal=True, return_weights=True)
    assert torch.all(out[:, :, :3] == 0) and torch.all(weights[:, :, :3] == 0)
    assert torch.isfinite(out).all()


def test_sdpa_and_reference_agree_on_masks_windows_and_causal() -> None:
    q, k, v = qkv(hkv=2, lq=6, lk=9)
    for kwargs in (
        {"causal": True},
        {"window": (2, 1)},
        {"causal": True, "window": (3, 0), "mask": KeyLengths(torch.tensor([9, 4]))},
        {"mask": torch.randn(6, 9)},
    ):
        assert attnkit.explain_dispatch(q, k, v, **kwargs).kernel == "sdpa"
        torch.testing.assert_close(
            attnkit.attention(q, k, v, **kwargs),
            attnkit.attention(q, k, v, backend="reference", **kwargs),
        )


def test_empty_lengths_give_zeros_and_backward() -> None:
    q, k, v = qkv(lk=0, grad=True)
    out, weights = attnkit.attention(q, k, v, return_weights=True)
    assert out.shape == (2, 4, 5, 8) and torch.all(out == 0) and weights.shape == (2, 4, 5, 0)
    out.sum().backward()
    assert torch.all(q.grad == 0)
    q, k, v = qkv(lq=0)
    assert attnkit.attention(q, k, v).shape == (2, 4, 0, 8)


def test_dropout_changes_output_but_weights_are_the_exact_probabilities() -> None:
    q, k, v = qkv()
    plain = attnkit.attention(q, k, v)
    dropped, weights = attnkit.attention(q, k, v, dropout_p=0.5, return_weights=True)
    assert not torch.allclose(plain, dropped)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))


def test_explain_dispatch_names_the_kernel_and_every_reason() -> None:
    q, k, v = qkv()
    fast = attnkit.explain_dispatch(q, k, v)
    assert fast.kernel != "reference" and "reference" in fast.passed_over
    weighted = attnkit.explain_dispatch(q, k, v, normalize="sparsemax")
    assert weighted.kernel == "reference"
    assert "sparsemax" in weighted.passed_over["sdpa"]
    assert "kernel: reference" in str(weighted)


def test_general_and_cosine_scores_run_on_the_fused_kernel() -> None:
    q, k, v = qkv()
    w = torch.randn(8, 8)
    for score in (Score("general", weight=w), "cosine", "dot"):
        assert attnkit.explain_dispatch(q, k, v, score=score).kernel == "sdpa"
        torch.testing.assert_close(
            attnkit.attention(q, k, v, score=score),
            attnkit.attention(q, k, v, score=score, backend="reference"),
        )


def test_bfloat16_runs_and_stays_close() -> None:
    q, k, v = qkv(dtype=torch.bfloat16)
    out = attnkit.attention(q, k, v)
    assert out.dtype == torch.bfloat16
    exact = attnkit.attention(q.double(), k.double(), v.double())
    ref = attnkit.attention(q, k, v, backend="reference")
    ref_error = (ref.double() - exact).abs().max()
    assert (out.double() - exact).abs().max() <= 2 * ref_error + 1e-2


@pytest.mark.parametrize(
    "score",
    ["dot", "scaled_dot", "cosine", "general", "additive", "concat", "location"],
)
def test_gradcheck_every_score(score: str) -> None:
    torch.manual_seed(1)
    q, k, v = (
        t.double().detach().requires_grad_() for t in qkv(b=1, hq=2, hkv=1, lq=3, lk=4, d=3, dv=2)
    )
    params = {
        "general": {"weight": torch.randn(3, 3)},
        "additive": {"w_q": torch.randn(2, 3), "w_k": torch.randn(2, 3), "v": torch.randn(2)},
        "concat": {"weight": torch.randn(2, 6), "v": torch.randn(2)},
        "location": {"weight": torch.randn(5, 3)},
    }.get(score, {})
    params = {name: p.double().requires_grad_() for name, p in params.items()}
    names = list(params)

    def fn(q, k, v, *ps):
        spec = Score(score, **dict(zip(names, ps, strict=True))) if names else score
        return attnkit.attention(q, k, v, score=spec, causal=True, backend="reference")

    assert torch.autograd.gradcheck(fn, (q, k, v, *params.values()))


@pytest.mark.parametrize("normalize", ["softmax", "sparsemax", "hardmax", "local_p"])
def test_gradcheck_every_normalizer(normalize: str) -> None:
    torch.manual_seed(2)
    q, k, v = (
        t.double().detach().requires_grad_() for t in qkv(b=1, hq=1, hkv=1, lq=3, lk=5, d=4, dv=2)
    )
    spec: str | Normalizer = normalize
    if normalize == "local_p":
        spec = Normalizer("local_p", centers=torch.tensor([[[0.5, 2.0, 3.7]]]).double(), sigma=1.0)

    def fn(q, k, v):
        return attnkit.attention(q, k, v, normalize=spec, window=(2, 2), backend="reference")

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_gumbel_softmax_is_one_hot_forward_with_the_softmax_gradient() -> None:
    """Jang et al. 2017, straight-through: forward one_hot(argmax y), backward ∂y, with
    y = softmax((s + g) / τ). With a linear loss Σ out·R, ∂L/∂out = R in both cases, so the
    gradient must equal that of Σ (y v)·R computed here with torch.softmax directly."""
    q, k, v = (
        t.double().detach().requires_grad_() for t in qkv(b=1, hq=1, hkv=1, lq=3, lk=5, d=4, dv=2)
    )
    noise, tau, r = torch.randn(1, 1, 3, 5).double(), 0.7, torch.randn(1, 1, 3, 2).double()
    out, w = attnkit.attention(
        q,
        k,
        v,
        score="dot",
        normalize=Normalizer("gumbel_softmax", tau=tau, noise=noise),
        return_weights=True,
    )
    y = torch.softmax((q @ k.transpose(-1, -2) + noise) / tau, dim=-1)
    torch.testing.assert_close(w, torch.nn.functional.one_hot(y.argmax(-1), 5).double())
    (grad_st,) = torch.autograd.grad((out * r).sum(), q)
    (grad_y,) = torch.autograd.grad(((y @ v) * r).sum(), q)
    torch.testing.assert_close(grad_st, grad_y)


# -- bad input: one test per case, each naming the argument and the shapes seen --------------


def raises(kind, pattern, **kwargs):
    q, k, v = kwargs.pop("tensors", qkv())
    with pytest.raises(kind, match=pattern):
        attnkit.attention(q, k, v, **kwargs)


def test_error_non_tensor() -> None:
    q, _, v = qkv()
    with pytest.raises(TypeError, match=r"k must be a torch.Tensor, got list"):
        attnkit.attention(q, [1, 2], v)


def test_error_integer_dtype() -> None:
    q, k, v = qkv()
    raises(
        TypeError,
        r"v must be a floating-point tensor, got dtype torch.int64",
        tensors=(q, k, v.long()),
    )


def test_error_mixed_dtypes() -> None:
    q, k, v = qkv()
    raises(TypeError, r"share a dtype.*float64", tensors=(q, k.double(), v))


def test_error_wrong_rank() -> None:
    q, k, v = qkv()
    raises(
        ValueError,
        re.escape("q must have 4 dims (batch, heads, length, dim), got shape (4, 5, 8)"),
        tensors=(q[0], k, v),
    )


def test_error_batch_mismatch() -> None:
    q, k, v = qkv()
    raises(
        ValueError,
        re.escape("same batch size, got q (2, 4, 5, 8), k (1, 4, 7, 8)"),
        tensors=(q, k[:1], v),
    )


def test_error_kv_length_mismatch() -> None:
    q, k, v = qkv()
    raises(ValueError, re.escape("k (2, 4, 7, 8), v (2, 4, 6, 8)"), tensors=(q, k, v[:, :, :6]))


def test_error_heads_do_not_divide() -> None:
    q, k, v = qkv(hq=4, hkv=3)
    raises(
        ValueError,
        r"k's heads must divide q's heads.*q \(2, 4, 5, 8\), k \(2, 3, 7, 8\)",
        tensors=(q, k, v),
    )


def test_error_head_dim_mismatch() -> None:
    q, k, v = qkv()
    raises(
        ValueError,
        r"same head dim for score 'scaled_dot'.*q \(2, 4, 5, 8\), k \(2, 4, 7, 6\)",
        tensors=(q, k[..., :6], v),
    )


def test_error_device_mismatch() -> None:
    q, k, v = qkv()
    raises(ValueError, r"one device, got cpu, meta, cpu", tensors=(q, k.to("meta"), v))


def test_error_mask_dtype() -> None:
    raises(
        TypeError, r"mask must be bool .* got torch.int64", mask=torch.ones(5, 7, dtype=torch.long)
    )


def test_error_mask_shape() -> None:
    raises(
        ValueError,
        re.escape(
            "mask of shape (5, 6) does not broadcast to (batch, heads, Lq, Lk) = (2, 4, 5, 7)"
        ),
        mask=torch.ones(5, 6, dtype=torch.bool),
    )


def test_error_mask_type() -> None:
    raises(TypeError, r"mask must be a bool/float tensor, KeyLengths or a block mask, got list",
           mask=[[True]])


def test_error_key_lengths_batch() -> None:
    raises(
        ValueError,
        r"KeyLengths has 3 entries but the batch is 2",
        mask=KeyLengths(torch.tensor([1, 2, 3])),
    )


@pytest.mark.parametrize("lengths", [[8, 3], [-1, 3]])
def test_error_key_lengths_outside_the_keys(lengths) -> None:
    # Lk = 7: a length of 8 or -1 was taken silently (clipped) and hid a counting mistake
    raises(
        ValueError,
        re.escape(f"KeyLengths lengths must be in 0..Lk = 0..7 (the number of keys), got {lengths}"),
        mask=KeyLengths(torch.tensor(lengths)),
    )


def test_error_key_padding_mask_names_the_fix() -> None:
    q, k, v = qkv()
    pads = torch.ones(2, 7, dtype=torch.bool)  # (B, Lk), as torch's key_padding_mask
    raises(ValueError, re.escape("mask[:, None, None, :]"), mask=pads)
    out = attnkit.attention(q, k, v, mask=pads[:, None, None, :])  # the fix it names works
    torch.testing.assert_close(out, attnkit.attention(q, k, v))


def test_error_heads_in_the_length_place_names_the_layout() -> None:
    q, k, v = qkv(hq=4, hkv=4, lq=5, lk=7)  # given as (B, L, H, D): "heads" 5 and 7
    raises(ValueError, re.escape("(batch, length, heads, dim) need .transpose(1, 2)"),
           tensors=(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))


def test_error_unknown_score() -> None:
    raises(ValueError, r"score must be one of .*'scaled_dot'.* got 'bilinear'", score="bilinear")


def test_error_score_needs_parameters() -> None:
    raises(ValueError, r"score 'general' needs parameters \['weight'\]", score="general")


def test_error_score_parameter_shape() -> None:
    raises(
        ValueError,
        re.escape(
            "parameter 'weight' must have shape (8, 8) or (4, 8, 8) for q dim 8 and k dim 8, got (8, 3)"
        ),
        score=Score("general", weight=torch.randn(8, 3)),
    )


def test_error_score_parameter_missing() -> None:
    with pytest.raises(ValueError, match=r"missing \['v'\]"):
        Score("additive", w_q=torch.randn(2, 8), w_k=torch.randn(2, 8))


def test_error_unknown_normalizer() -> None:
    raises(ValueError, r"normalize must be one of .* got 'entmax'", normalize="entmax")


def test_error_unknown_backend() -> None:
    raises(
        ValueError, r"backend must be 'auto' or one of .* got 'cuda-flash'", backend="cuda-flash"
    )


def test_error_backend_cannot_serve() -> None:
    raises(
        ValueError,
        r"backend 'sdpa' cannot serve this request \(sdpa: returning weights not supported\)",
        backend="sdpa",
        return_weights=True,
    )


def test_error_window() -> None:
    raises(
        ValueError,
        r"window must be \(left, right\) with integers ≥ 0, got \(-1, 2\)",
        window=(-1, 2),
    )


def test_error_dropout() -> None:
    raises(ValueError, r"dropout_p must be a number in \[0, 1\), got 1.5", dropout_p=1.5)


def test_error_scale() -> None:
    raises(ValueError, r"scale must be finite, got nan", scale=float("nan"))


def test_error_causal_not_bool() -> None:
    raises(TypeError, r"causal must be a bool, 'bottom_right' or 'top_left', got 'yes'",
           causal="yes")


def test_attention_sinks_through_attention_match_the_formula_with_gradients() -> None:
    # gpt-oss's sinks: grouped heads, causal and a window, weights returned; every gradient
    # (sinks included) checked numerically
    torch.manual_seed(3)
    q = torch.randn(2, 4, 6, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 9, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 9, 8, dtype=torch.float64, requires_grad=True)
    sinks = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def run(q, k, v, sinks):
        norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
        return attnkit.attention(q, k, v, causal=True, window=(3, 0), normalize=norm,
                                 return_weights=True)

    out, weights = run(q, k, v, sinks)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # (B, Hq, Lk, D)
    scores = q @ kk.transpose(-1, -2) / 8**0.5  # (B, Hq, Lq, Lk)
    pos = torch.arange(6).unsqueeze(-1) + 3  # bottom-right: query i at key position 3 + i
    seen = (torch.arange(9) <= pos) & (torch.arange(9) >= pos - 3)  # (Lq, Lk)
    column = sinks.view(1, 4, 1, 1).expand(2, 4, 6, 1)
    both = torch.cat([scores.masked_fill(~seen, float("-inf")), column], dim=-1)
    want = torch.softmax(both, dim=-1)[..., :-1]  # the sink's column dropped
    torch.testing.assert_close(weights, want)
    torch.testing.assert_close(out, want @ vv)
    assert torch.autograd.gradcheck(lambda *t: run(*t)[0], (q, k, v, sinks))
