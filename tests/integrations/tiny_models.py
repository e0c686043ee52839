"""Tiny random transformers models (fixed seeds, no download) and their inputs, for the
tests of the attnkit backend. Each builder returns a model in eval mode on ``eager``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers as T

from tests.compat.test_hf_eager import padding_2d

VOCAB = 97
LENGTHS = (11, 8, 5)  # batch of 3: one full row, two padded


def _seeded(build: Callable[[], T.PreTrainedModel], seed: int) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    model = build()
    model.set_attn_implementation("eager")
    return model.eval()


def bert() -> T.PreTrainedModel:
    config = T.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=64, pad_token_id=0,
    )
    return _seeded(lambda: T.BertForMaskedLM(config), 1)


def gpt2(**overrides) -> T.PreTrainedModel:
    fields = {"vocab_size": VOCAB, "n_positions": 64, **overrides}
    config = T.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2, **fields,
    )
    return _seeded(lambda: T.GPT2LMHeadModel(config), 2)


def llama() -> T.PreTrainedModel:
    """Grouped-query attention (4 query heads, 2 key/value heads) and RoPE."""
    config = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2,
    )
    return _seeded(lambda: T.LlamaForCausalLM(config), 3)


def mistral(sliding_window: int = 4) -> T.PreTrainedModel:
    """Sliding-window attention (shorter than the inputs) and grouped-query attention."""
    config = T.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        sliding_window=sliding_window, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        initializer_range=0.2,
    )
    return _seeded(lambda: T.MistralForCausalLM(config), 4)


def gemma2() -> T.PreTrainedModel:
    """Logit soft-capping (a score_mod), sliding-window layers alternating with global ones,
    grouped-query attention and a scale that is not 1/√d."""
    config = T.Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        attn_logit_softcapping=2.0, query_pre_attn_scalar=4, sliding_window=4,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.5,
    )
    return _seeded(lambda: T.Gemma2ForCausalLM(config), 8)


def gpt_oss() -> T.PreTrainedModel:
    """Attention sinks (a learnt logit per head in each softmax denominator, ``s_aux``),
    sliding-window layers alternating with global ones, grouped-query attention."""
    config = T.GptOssConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        num_local_experts=2, num_experts_per_tok=1, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, initializer_range=0.2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # sizes multiples of 16 bytes: the experts' grouped matmul asks for it

    def build() -> T.PreTrainedModel:
        model = T.GptOssForCausalLM(config)
        with torch.no_grad():  # sinks of either sign, larger than the initial ones
            for module in model.modules():
                if isinstance(getattr(module, "sinks", None), torch.nn.Parameter):
                    module.sinks.normal_(0.0, 1.0)
        return model

    return _seeded(build, 9)


def t5() -> T.PreTrainedModel:
    """Relative position bias added to the scores, no 1/√d scaling."""
    config = T.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        initializer_factor=1.0,
    )
    return _seeded(lambda: T.T5ForConditionalGeneration(config), 5)


def bart(**overrides) -> T.PreTrainedModel:
    """Encoder–decoder with cross-attention."""
    config = T.BartConfig(
        vocab_size=overrides.pop("vocab_size", VOCAB), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.2,
    )
    return _seeded(lambda: T.BartForConditionalGeneration(config), 6)


def vit() -> T.PreTrainedModel:
    config = T.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=16, patch_size=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return _seeded(lambda: T.ViTModel(config), 7)


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[], T.PreTrainedModel]
    kind: str  # "encoder", "decoder", "encoder-decoder", "vision"


ARCHS = [
    Arch("bert", bert, "encoder"),
    Arch("gpt2", gpt2, "decoder"),
    Arch("llama", llama, "decoder"),
    Arch("mistral", mistral, "decoder"),
    Arch("gemma2", gemma2, "decoder"),
    Arch("gpt_oss", gpt_oss, "decoder"),
    Arch("t5", t5, "encoder-decoder"),
    Arch("bart", bart, "encoder-decoder"),
    Arch("vit", vit, "vision"),
]


def padding_mask(lengths: tuple[int, ...], side: str) -> torch.Tensor:
    """``(B, max(lengths))`` long, 1 = real token; the padding on the right or the left."""
    return padding_2d(list(lengths), max(lengths), side)


def token_ids(batch: int, length: int, seed: int = 11) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=gen)
