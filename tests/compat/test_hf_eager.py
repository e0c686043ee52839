"""Hugging Face's eager attention, the reference of its sdpa/flash backends, against attnkit.

Source: the installed ``transformers`` 5.23.0 itself (not a copy):
``models/bert/modeling_bert.py::eager_attention_forward`` (BERT, bidirectional with padding),
``models/llama/modeling_llama.py::eager_attention_forward`` and ``repeat_kv`` (Llama-style
grouped-query heads, causal, with left padding and with a KV cache) and the masks HF builds
for them (``masking_utils.eager_mask``: 0 to attend, ``finfo(dtype).min`` not to; causal
with ``q_offset``, sliding window). Tolerance: HF's eager-vs-sdpa rule on CPU
(``tests/test_modeling_common.py``: float32 atol 1e-6 / rtol 1e-4, bfloat16 1e-2 / 1e-2),
compared on the rows of real tokens as HF compares them.

Every attnkit kernel that accepts a case is checked, twice: given HF's own float mask as an
additive bias, and given the same structure as attnkit describes it (``KeyLengths``, a bool
mask, ``causal``, ``window``).

Convention difference: a padded query row of a left-padded causal batch sees only padding.
HF's eager gives it a uniform average over every key (all scores equal ``finfo.min``);
attnkit gives 0 (a row with no key). Neither is used by the model; attnkit's is checked.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import attnkit
from attnkit import KeyLengths
from tests.compat._helpers import accepting

transformers = pytest.importorskip("transformers")
from transformers.masking_utils import (  # noqa: E402
    bidirectional_mask_function,
    causal_mask_function,
    eager_mask,
    sliding_window_causal_mask_function,
)
from transformers.models.bert.modeling_bert import (  # noqa: E402
    eager_attention_forward as bert_eager_attention_forward,
)
from transformers.models.llama.modeling_llama import (  # noqa: E402
    eager_attention_forward as llama_eager_attention_forward,
)
from transformers.models.llama.modeling_llama import repeat_kv  # noqa: E402

TOL = {torch.float32: (1e-6, 1e-4), torch.bfloat16: (1e-2, 1e-2)}  # (atol, rtol)


def padding_2d(lengths: list[int], length: int, side: str) -> torch.Tensor:
    """HF's ``attention_mask`` (B, L): 1 at real tokens, padded on the ``side``."""
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, length - n :] = 1
    return mask


def compare_rows(got: torch.Tensor, want: torch.Tensor, real_rows: torch.Tensor, dtype, msg: str):
    """``got``/``want`` (B, L, H, D) on the rows ``real_rows (B, L)``; attnkit's others are 0
    or (bidirectional) also compared."""
    atol, rtol = TOL[dtype]
    keep = real_rows[:, :, None, None]
    torch.testing.assert_close(got * keep, want * keep, atol=atol, rtol=rtol, msg=msg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", ["right", "left"])
def test_bert_eager_attention_with_padding(side: str, dtype) -> None:
    torch.manual_seed(0)
    b, h, length, d = 3, 4, 17, 16
    lengths = [17, 11, 1]
    q, k, v = (torch.randn(b, h, length, d).to(dtype) for _ in range(3))
    attention_mask = padding_2d(lengths, length, side)
    hf_mask = eager_mask(b, length, length, mask_function=bidirectional_mask_function,
                         attention_mask=attention_mask.bool(), dtype=dtype)  # (B, 1, L, L)
    module = SimpleNamespace(training=False)
    want, want_w = bert_eager_attention_forward(module, q, k, v, hf_mask, scaling=d**-0.5)
    structure = (
        KeyLengths(torch.tensor(lengths))
        if side == "right"
        else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L) True = may attend
    )
    every_row = torch.ones(b, length, dtype=torch.bool)  # every query sees a real key
    for mask in (hf_mask, structure):
        for backend in accepting(q, k, v, mask=mask):
            got = attnkit.attention(q, k, v, mask=mask, backend=backend)
            compare_rows(got.transpose(1, 2), want, every_row, dtype, f"{backend} {type(mask)}")
        for backend in accepting(q, k, v, mask=mask, return_weights=True):
            _, weights = attnkit.attention(q, k, v, mask=mask, return_weights=True,
                                           backend=backend)
            atol, rtol = TOL[dtype]
            torch.testing.assert_close(weights, want_w, atol=atol, rtol=rtol, msg=backend)


def _llama_module(num_heads: int, num_kv_heads: int) -> SimpleNamespace:
    return SimpleNamespace(training=False, num_key_value_groups=num_heads // num_kv_heads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("q_len", "kv_len"), [(13, 13), (3, 13), (1, 13)])
@pytest.mark.parametrize("num_kv_heads", [8, 2, 1])
def test_llama_eager_attention_causal_gqa_with_cache(num_kv_heads, q_len, kv_len, dtype) -> None:
    """Causal, grouped heads (HF repeats them with ``repeat_kv``), left padding; with a KV cache
    the new queries are the last ``q_len`` positions (``q_offset``): attnkit's bottom-right."""
    torch.manual_seed(0)
    b, h, d = 2, 8, 16
    q = torch.randn(b, h, q_len, d).to(dtype)
    k, v = (torch.randn(b, num_kv_heads, kv_len, d).to(dtype) for _ in range(2))
    attention_mask = padding_2d([kv_len, kv_len - 4], kv_len, "left")
    hf_mask = eager_mask(b, q_len, kv_len, q_offset=kv_len - q_len,
                         mask_function=causal_mask_function, attention_mask=attention_mask.bool(),
                         dtype=dtype)  # (B, 1, Lq, Lk)
    module = _llama_module(h, num_kv_heads)
    want, _ = llama_eager_attention_forward(module, q, k, v, hf_mask, scaling=d**-0.5)
    assert torch.equal(repeat_kv(k, h // num_kv_heads), k.repeat_interleave(h // num_kv_heads, 1))
    real_rows = attention_mask.bool()[:, kv_len - q_len :]  # (B, Lq): queries that are tokens
    padding = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Lk)
    for kwargs in ({"mask": hf_mask}, {"mask": padding, "causal": True}):
        for backend in accepting(q, k, v, **kwargs):
            got = attnkit.attention(q, k, v, backend=backend, **kwargs).transpose(1, 2)
            compare_rows(got, want, real_rows, dtype, f"{backend} {list(kwargs)}")
            if "causal" in kwargs:  # a padded query row sees nothing: attnkit gives 0
                assert (got[~real_rows] == 0).all(), backend


@pytest.mark.parametrize("sliding_window", [1, 4, 32])
def test_llama_eager_attention_sliding_window(sliding_window: int) -> None:
    """Mistral-style sliding window (keys q - w + 1 .. q): attnkit's causal window (w - 1, 0)."""
    torch.manual_seed(0)
    b, h, g, length, d = 2, 4, 2, 29, 8
    q = torch.randn(b, h, length, d)
    k, v = torch.randn(b, g, length, d), torch.randn(b, g, length, d)
    hf_mask = eager_mask(b, length, length,
                         mask_function=sliding_window_causal_mask_function(sliding_window))
    want, _ = llama_eager_attention_forward(_llama_module(h, g), q, k, v, hf_mask, scaling=d**-0.5)
    every_row = torch.ones(b, length, dtype=torch.bool)
    structure = {"causal": True, "window": (sliding_window - 1, 0)}
    for kwargs in ({"mask": hf_mask}, structure):
        for backend in accepting(q, k, v, **kwargs):
            got = attnkit.attention(q, k, v, backend=backend, **kwargs).transpose(1, 2)
            compare_rows(got, want, every_row, torch.float32, f"{backend} {list(kwargs)}")
    assert "local" in accepting(q, k, v, **structure) or sliding_window - 1 > length // 4
