"""The attnkit transformers backend's own contracts: masks in attnkit's form (checked against
the dense masks transformers' ``sdpa_mask`` materialises), weights only when asked, every
keyword honoured or refused, ``set_window`` (against eager given the same band as a 4-D
mask), recording, and the import boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import transformers as T
from transformers import masking_utils as hf_masks

import attnkit
from attnkit.explain import record
from attnkit.integrations import transformers as attnkit_hf
from attnkit.integrations._hf_masks import AttnkitMask, build_mask
from attnkit.kernels import Kernel, kernels, register
from tests.integrations.tiny_models import (
    LENGTHS,
    bart,
    bert,
    gpt_oss,
    llama,
    padding_mask,
    token_ids,
)

attnkit_hf.register()
SRC = Path(__file__).resolve().parents[2] / "src" / "attnkit"


# -- the import boundary ----------------------------------------------------------------------


def test_import_attnkit_does_not_import_transformers() -> None:
    code = "import sys, attnkit, attnkit.explain, attnkit.integrations; "
    code += "assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_integrations_imports_transformers() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "integrations" not in path.parts
        and any(
            line.lstrip().startswith(("import transformers", "from transformers"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


# -- masks ------------------------------------------------------------------------------------


def attnkit_visible(mask: AttnkitMask, batch: int) -> torch.Tensor:
    """What attnkit lets each query see under ``mask.arguments()``: (B, Lq, Lk) bool, built
    from attnkit's own mask functions (bottom-right queries)."""
    args = mask.arguments()
    lq, lk = mask.q_len, mask.kv_len
    visible = torch.ones(batch, lq, lk, dtype=torch.bool)
    if args["causal"]:
        visible &= attnkit.masks.causal(lq, lk)
    if args["window"] is not None:
        visible &= attnkit.masks.window(lq, lk, *args["window"])
    if isinstance(args["mask"], attnkit.KeyLengths):
        visible &= attnkit.masks.key_padding(args["mask"].lengths, lk)[:, 0]
        if args["mask"].starts is not None:  # left padding: keys before the start hidden
            visible &= (torch.arange(lk) >= args["mask"].starts[:, None]).unsqueeze(1)
    elif args["mask"] is not None:
        visible &= args["mask"][:, 0]
    return visible


MASK_FUNCTIONS = {
    "causal": hf_masks.causal_mask_function,
    "bidirectional": hf_masks.bidirectional_mask_function,
    **{
        f"sliding-{w}": hf_masks.sliding_window_causal_mask_function(w)
        for w in (1, 2, 3, 6, 20)
    },
    "sliding-bidirectional-2": hf_masks.sliding_window_bidirectional_mask_function(2),
    "chunked-3": hf_masks.chunked_causal_mask_function(3, torch.zeros(3, dtype=torch.long)),
}
# (q_length, kv_length, q_offset, kv_offset): no cache, a dynamic cache (prefill continued,
# one decoding step), a sliding-window cache, a static cache (keys beyond the queries), and
# cross-attention (queries and keys from different sequences).
SIZES = [(9, 9, 0, 0), (3, 10, 7, 0), (1, 10, 9, 0), (1, 5, 9, 5), (4, 16, 0, 0), (5, 9, 0, 0)]


@pytest.mark.parametrize("name", list(MASK_FUNCTIONS))
@pytest.mark.parametrize("padding", ["none", "right", "left", "holes"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "q{}-k{}-qo{}-ko{}".format(*s))
def test_mask_equals_transformers_dense_mask(name: str, padding: str, sizes) -> None:
    q_len, kv_len, q_offset, kv_offset = sizes
    total = kv_offset + kv_len
    lengths = (total, total - 2, total - 4)
    attention_mask = None
    if padding in ("right", "left"):
        attention_mask = padding_mask(lengths, padding).bool()
    elif padding == "holes":  # a pad token between real ones: not one run of real keys
        attention_mask = torch.ones(3, total, dtype=torch.bool)
        attention_mask[1, total - 3] = False
    kwargs = {
        "batch_size": 3, "q_length": q_len, "kv_length": kv_len, "q_offset": q_offset,
        "kv_offset": kv_offset, "mask_function": MASK_FUNCTIONS[name],
        "attention_mask": attention_mask,
    }
    ours = build_mask(**kwargs)
    expected = hf_masks.sdpa_mask(
        **kwargs, allow_is_causal_skip=False, allow_is_bidirectional_skip=False
    )  # (B, 1, Lq, Lk)
    assert torch.equal(attnkit_visible(ours, 3), expected[:, 0])
    aligned = q_offset + q_len == kv_offset + kv_len
    structured_band = name != "chunked-3" and (aligned or name == "bidirectional")
    keys = None if attention_mask is None else attention_mask[:, kv_offset:total]  # (B, Lk)
    one_run = keys is None or all(  # each item's real keys are one run (left/right padding)
        len({j for j in range(kv_len) if keys[b, j]}) in (0, max(
            (j1 - j0 for j0 in range(kv_len) for j1 in range(j0, kv_len + 1)
             if bool(keys[b, j0:j1].all())), default=0))
        for b in range(3))
    assert (ours.dense is None) == (structured_band and one_run)
    if ours.dense is None:
        padded = keys is not None and not bool(keys.all())
        assert (ours.padding is not None) == padded


@pytest.mark.parametrize("size", [1, 2, 4, 7])
def test_sliding_window_of_size_w_sees_w_keys_ending_at_itself(size: int) -> None:
    """transformers' convention (masking_utils.sliding_window_overlay: kv_idx > q_idx − W):
    with the causal mask a query sees itself and the W − 1 keys before it: window=(W − 1, 0)."""
    dense = hf_masks.sdpa_mask(
        batch_size=1, q_length=10, kv_length=10,
        mask_function=hf_masks.sliding_window_causal_mask_function(size),
        allow_is_causal_skip=False,
    )[0, 0]  # (Lq, Lk)
    for i in range(10):
        assert dense[i].nonzero().flatten().tolist() == list(range(max(0, i - size + 1), i + 1))
    args = build_mask(
        1, 10, 10, mask_function=hf_masks.sliding_window_causal_mask_function(size)
    ).arguments()
    assert args["causal"] is True
    assert args["window"] == (None if size >= 10 else (size - 1, 0))


# -- weights only when asked ------------------------------------------------------------------


@pytest.fixture
def asked(monkeypatch) -> list[bool]:
    """The ``return_weights`` of every attnkit.attention call the backend makes."""
    calls: list[bool] = []
    real = attnkit.attention

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get("return_weights")))
        return real(*args, **kwargs)

    monkeypatch.setattr(attnkit, "attention", spy)
    return calls


@pytest.mark.parametrize("build", [bert, llama], ids=["bert", "llama"])
def test_weights_only_when_asked(build, asked: list[bool]) -> None:
    model = build()
    model.set_attn_implementation("attnkit")
    ids = token_ids(2, 7)
    with torch.no_grad():
        plain = model(ids, output_hidden_states=True)
        assert asked and not any(asked)
        assert getattr(plain, "attentions", None) is None
        asked.clear()
        with_weights = model(ids, output_attentions=True)
    assert asked and all(asked)
    assert len(with_weights.attentions) == 2


def test_gpt2_output_attentions_reaches_the_backend(asked: list[bool]) -> None:
    """GPT-2's attention module keeps ``output_attentions`` to itself: the backend learns it
    from transformers' output capturing, which also reads ``config.output_attentions``
    (transformers lets that be set only on eager; it stays set after a switch)."""
    from tests.integrations.tiny_models import gpt2

    model = gpt2()
    ids = token_ids(2, 7)
    model.set_attn_implementation("attnkit")
    with torch.no_grad():
        assert len(model(ids, output_attentions=True).attentions) == 2
        assert asked and all(asked)
        model.set_attn_implementation("eager")
        model.config.output_attentions = True
        model.set_attn_implementation("attnkit")
        asked.clear()
        assert len(model(ids).attentions) == 2
        assert asked and all(asked)


# -- keywords: honoured or refused ------------------------------------------------------------


def self_attention(model: T.PreTrainedModel) -> torch.nn.Module:
    return model.bert.encoder.layer[0].attention.self


@pytest.mark.parametrize(
    ("keyword", "value", "feature"),
    [
        ("block_indices", torch.zeros(4), "block-sparse attention"),
        ("head_mask", torch.ones(4), "head_mask"),
        ("cu_seq_lens_q", torch.tensor([0, 5]), "cu_seq_lens"),
        ("mystery_option", 3, "mystery_option=3"),
    ],
)
def test_unsupported_keywords_are_refused_by_name(keyword: str, value, feature: str) -> None:
    module = self_attention(bert())
    q = torch.randn(1, 4, 5, 8)
    with pytest.raises(ValueError, match=f"BertSelfAttention \\(model type 'bert'\\).*{feature}"):
        attnkit_hf.attention_forward(module, q, q, q, None, **{keyword: value})


def test_sinks_per_query_equal_the_models_own_eager_attention() -> None:
    """Inkling 2 passes ``sinks (B, Hq, Lq, 1)``, one logit per query: its own eager
    attention (transformers' code) appends them as a column, softmaxes, drops the column."""
    from transformers.models.inkling2 import modeling_inkling2

    class Attention(torch.nn.Module):
        num_key_value_groups = 2  # 4 query heads, 2 key/value heads

    module = Attention().eval()
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 6, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    sinks = torch.randn(2, 4, 6, 1, generator=g, dtype=torch.float64, requires_grad=True)
    allowed = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()  # (B|1, 1, Lq, Lk)
    causal = torch.zeros(1, 1, 6, 6, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    want, want_w = modeling_inkling2.eager_attention_forward(
        module, q, k, v, causal, scaling=0.3, sinks=sinks)
    got, got_w = attnkit_hf.attention_forward(
        module, q, k, v, allowed, scaling=0.3, sinks=sinks,
        output_attentions=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_w, want_w)
    (want_grad,) = torch.autograd.grad(want.sum(), sinks)
    (got_grad,) = torch.autograd.grad(
        attnkit_hf.attention_forward(module, q, k, v, None, scaling=0.3, sinks=sinks,
                                     is_causal=True)[0].sum(), sinks)
    torch.testing.assert_close(got_grad, want_grad)
    with pytest.raises(ValueError, match=r"sinks must be \(B, Hq, Lq, 1\).*\(2, 4, 6\)"):
        attnkit_hf.attention_forward(module, q, k, v, None, sinks=sinks[..., 0])


def test_softcap_caps_the_scaled_scores_before_the_mask() -> None:
    """Gemma 2's eager attention: ``cap · tanh(q kᵀ · scale / cap)``, then the mask, softmax."""
    module = self_attention(bert())
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) * 3 for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    scores = 2.0 * torch.tanh(q @ k.transpose(-1, -2) * 0.5 / 2.0)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    out, got = attnkit_hf.attention_forward(
        module, q, k, v, mask[None, None], scaling=0.5, softcap=2.0, output_attentions=True
    )
    torch.testing.assert_close(got, weights)
    torch.testing.assert_close(out, (weights @ v).transpose(1, 2))
    with pytest.raises(ValueError, match="softcap must be a positive"):
        attnkit_hf.attention_forward(module, q, k, v, None, softcap=-1.0)


def test_dropout_in_training_is_applied() -> None:
    model = bert()
    model.config.attention_probs_dropout_prob = 0.5
    for layer in model.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.5
    model.set_attn_implementation("attnkit")
    ids = token_ids(2, 9)
    with torch.no_grad():
        evaluated = model.bert(ids).last_hidden_state
        model.train()
        trained = model.bert(ids).last_hidden_state
    assert torch.isfinite(trained).all()
    assert (trained - evaluated).abs().max() > 1e-2


def test_none_valued_keywords_ask_for_nothing() -> None:
    module = self_attention(bert())
    q = torch.randn(1, 4, 5, 8)
    out, weights = attnkit_hf.attention_forward(module, q, q, q, None, softcap=None, s_aux=None)
    assert out.shape == (1, 5, 4, 8) and weights is None


# -- set_window -------------------------------------------------------------------------------


def banded_float_mask(real: torch.Tensor, left: int, right: int, causal: bool) -> torch.Tensor:
    """The reference: (B, 1, L, L) additive mask for eager, 0 where a query may look (within
    the band, a real key, not in the future when causal), the float minimum elsewhere."""
    length = real.shape[1]
    i = torch.arange(length).unsqueeze(1)
    j = torch.arange(length).unsqueeze(0)
    allowed = (j >= i - left) & (j <= i + (0 if causal else right))
    allowed = allowed.unsqueeze(0) & real.bool().unsqueeze(1)  # (B, L, L)
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[
        :, None
    ]


@pytest.mark.parametrize(("build", "causal"), [(bert, False), (llama, True)], ids=["bert", "llama"])
def test_set_window_equals_eager_with_the_band_as_mask(build, causal: bool) -> None:
    model = build()
    mask = padding_mask(LENGTHS, "right")
    ids = token_ids(3, mask.shape[1])
    names = attnkit_hf.set_window(model, (2, 1))
    assert len(names) >= 2
    model.set_attn_implementation("attnkit")
    with torch.no_grad():
        got = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        model.set_attn_implementation("eager")
        band = banded_float_mask(mask, 2, 1, causal)
        ref = model(ids, attention_mask=band, output_attentions=True, output_hidden_states=True)
    real = mask.bool()
    assert (got.hidden_states[-1] - ref.hidden_states[-1])[real].abs().max() <= 1e-5
    for a, b in zip(got.attentions, ref.attentions, strict=True):
        assert (a - b).transpose(1, 2)[real].abs().max() <= 1e-5
        row = a[0, 0, 6]  # query 6 sees keys 4..7 (bidirectional) or 4..6 (causal)
        assert set(row.nonzero().flatten().tolist()) <= set(range(4, 7 if causal else 8))
    attnkit_hf.set_window(model, None)
    model.set_attn_implementation("attnkit")
    with torch.no_grad():
        plain = model(ids, attention_mask=mask, output_attentions=True)
    assert plain.attentions[0][0, 0, 6, 0] > 0  # the window is gone


def test_set_window_runs_the_local_kernel(monkeypatch) -> None:
    local = kernels()["local"]
    calls = []

    def counting(q, k, v, plan):
        calls.append((plan.visibility.left, plan.visibility.right))  # the window
        return local.fn(q, k, v, plan)

    register(Kernel("local", counting, local.capabilities, local.priority, local.description,
                    local.declines))
    try:
        model = bert()
        attnkit_hf.set_window(model, (4, 4))
        model.set_attn_implementation("attnkit")
        with torch.no_grad():
            model(token_ids(1, 60))
    finally:
        register(local)
    assert calls == [(4, 4), (4, 4)]


def test_set_window_leaves_cross_attention_alone() -> None:
    names = attnkit_hf.set_window(bart(), (3, 3))
    assert any("self_attn" in n for n in names)
    assert not any("encoder_attn" in n for n in names)


def test_set_window_refuses_bad_windows_and_models() -> None:
    with pytest.raises(ValueError, match="window must be"):
        attnkit_hf.set_window(bert(), (-1, 2))
    with pytest.raises(TypeError, match="PreTrainedModel"):
        attnkit_hf.set_window(torch.nn.Linear(2, 2), (1, 1))


# -- recording --------------------------------------------------------------------------------


def test_record_captures_a_transformers_model_on_attnkit() -> None:
    model = bert()
    mask = padding_mask(LENGTHS, "right")
    ids = token_ids(3, mask.shape[1])
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, output_attentions=True).attentions  # eager
        model.set_attn_implementation("attnkit")
        with record(model) as rec:
            out = model(ids, attention_mask=mask)
    assert getattr(out, "attentions", None) is None  # recording does not change the output
    assert rec.names() == [f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
    stacked = rec.stack("bert.encoder.layer.*.attention.self")  # (N, B, H, L, L)
    for got, expected in zip(stacked, ref, strict=True):
        assert (got - expected).transpose(1, 2)[mask.bool()].abs().max() <= 1e-5
    with torch.no_grad(), record(model, include="*layer.1*", transform=lambda w: w.half()) as rec:
        model(ids, attention_mask=mask)
    assert rec.names() == ["bert.encoder.layer.1.attention.self"]
    assert rec.single("bert.encoder.layer.1.attention.self").dtype == torch.float16


def test_record_summaries_of_gpt_oss_with_its_sinks(monkeypatch) -> None:
    """gpt-oss's attention sinks: the recorded key totals are eager's weights (which include
    the sinks' share) summed over the queries, made by chunked without the full weights."""
    from attnkit.kernels import chunked

    model = gpt_oss()
    mask = padding_mask(LENGTHS, "right")  # every query sees a key: eager's rows mean it
    ids = token_ids(3, mask.shape[1]).masked_fill(mask == 0, model.config.pad_token_id)
    summaries = []
    forward = chunked._forward

    def spy(call, *args):
        summaries.append((call.plan.summary, call.plan.sinks is not None))
        return forward(call, *args)

    monkeypatch.setattr(chunked, "_forward", spy)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        ref = model(ids, attention_mask=mask, output_attentions=True).attentions
        model.set_attn_implementation("attnkit")
        with record(model, weights="key_totals") as rec:
            model(ids, attention_mask=mask)
    assert summaries == [("key_totals", True)] * 2
    for name, weights in zip(rec.names(), ref, strict=True):
        torch.testing.assert_close(rec.single(name), weights.sum(dim=2), atol=1e-5, rtol=1e-5)


def test_record_says_how_to_switch_a_model_on_another_backend() -> None:
    model = bert()
    model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="set_attn_implementation\\('attnkit'\\)"):
        record(model)


def test_from_pretrained_and_set_attn_implementation(tmp_path: Path) -> None:
    model = bert()
    model.save_pretrained(tmp_path)
    loaded = T.AutoModelForMaskedLM.from_pretrained(tmp_path, attn_implementation="attnkit")
    assert loaded.config._attn_implementation == "attnkit"
    loaded.set_attn_implementation("eager")
    loaded.set_attn_implementation("attnkit")
    assert loaded.config._attn_implementation == "attnkit"


def test_left_padding_reaches_attention_as_key_starts(monkeypatch) -> None:
    """A left-padded batch (as generate pads decoder-only prompts) reaches attnkit.attention
    as KeyLengths with starts and causal=True, not as a dense mask, and equals eager on every
    real token."""
    seen = []
    original = attnkit.attention

    def recording(q, k, v, **kwargs):
        seen.append(kwargs)
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(attnkit, "attention", recording)
    model = llama()
    mask = padding_mask(LENGTHS, "left")
    ids = token_ids(3, mask.shape[1])
    with torch.no_grad():
        model.set_attn_implementation("attnkit")
        got = model(ids, attention_mask=mask, output_hidden_states=True)
        model.set_attn_implementation("eager")
        ref = model(ids, attention_mask=mask, output_hidden_states=True)
    pads = [mask.shape[1] - n for n in LENGTHS]
    assert seen and all(isinstance(c["mask"], attnkit.KeyLengths) for c in seen)
    assert all(c["mask"].starts.tolist() == pads and c["causal"] is True for c in seen)
    real = mask.bool()
    assert (got.hidden_states[-1] - ref.hidden_states[-1])[real].abs().max() <= 1e-5
