"""transformers models on the attnkit backend under ``torch.compile(fullgraph=True)``: the
forward and the gradients equal the same model on ``eager`` (not compiled), with padding.

Under compile the padding's values are unknown, so the backend's mask function hands the
padding over as the dense mask (the graph holds for any padding); plain causality stays
structured. Sliding-window layers (Mistral, Gemma 2, gpt-oss's with attention sinks) get the
dense mask too: the window's size sits in a closure dynamo cannot read.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from attnkit.integrations import transformers as attnkit_hf
from tests.integrations.tiny_models import (
    LENGTHS,
    bert,
    gemma2,
    gpt_oss,
    llama,
    mistral,
    padding_mask,
    token_ids,
)

attnkit_hf.register()


@pytest.mark.parametrize(
    ("build", "side"),
    [(llama, "left"), (bert, "right"), (mistral, "left"), (gemma2, "left"), (gpt_oss, "right")],
    ids=["llama-left", "bert-right", "mistral-left", "gemma2-left", "gpt_oss-right"],
)
def test_compiled_model_on_attnkit_equals_eager(build, side: str) -> None:
    torch._dynamo.reset()
    model = build()
    mask = padding_mask(LENGTHS, side)
    ids = token_ids(3, mask.shape[1])
    real = mask.bool()

    def loss_and_grads(run) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = run(ids, attention_mask=mask).logits  # (B, L, V)
        loss = logits[real].square().mean()  # padded rows left out (see test_transformers_models)
        loss.backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.set_attn_implementation("eager")
    ref, ref_grads = loss_and_grads(model)
    model.set_attn_implementation("attnkit")
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got, grads = loss_and_grads(compiled)
    assert (got - ref)[real].abs().max() <= 1e-5
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
