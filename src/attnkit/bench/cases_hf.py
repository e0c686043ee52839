"""Benchmark cases of the transformers backend (``attn_implementation="attnkit"``): whole
models, attnkit against transformers' own ``eager`` (the only backend that returns weights) or
``sdpa``, in the same process, on one model switched between the two.

- MiniLM's config (all-MiniLM-L6-v2: 6 layers, 12 heads, hidden 384; random weights), batch 8,
  512 tokens; GPT-2 small's config (12 layers, 12 heads, hidden 768), batch 1, 1024 tokens:
  forward with ``output_attentions=True`` against eager, and without against sdpa.
- A Mistral-style config (hidden 256, 4 layers, 8 heads, 2 key/value heads, sliding window
  256) at 8192 tokens against sdpa, which gets transformers' dense (L, L) sliding-window mask.

transformers is imported when a case is built, through :mod:`attnkit.integrations.hf_models`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnkit.bench.cases import Case, Fn, Target

MIB = 1 << 20
WEIGHTS = "transformers eager (output_attentions=True)"
SDPA = "transformers sdpa"
SDPA_DENSE = "transformers sdpa (dense sliding-window mask)"


@dataclass(frozen=True)
class BeyondReturned(Target):
    """A target on the memory beyond the ``returned_mb`` of weights that both sides return:
    ``(baseline peak − returned) / (our peak − returned) ≥ min_memory_ratio``."""

    returned_mb: float = 0.0

    def describe(self) -> str:
        parts = [] if self.min_speedup is None else [f"speedup ≥ {self.min_speedup:g}"]
        if self.min_memory_ratio is not None:
            parts.append(
                f"peak beyond the {self.returned_mb:.0f} MiB of returned weights ≤ "
                f"{1 / self.min_memory_ratio:g}× eager's"
            )
        return ", ".join(parts)

    def met(self, speedup: float | None, ours_mb: float, base_mb: float | None) -> bool | None:
        beyond = None if base_mb is None else base_mb - self.returned_mb
        ratio = None if beyond is None else beyond / max(ours_mb - self.returned_mb, 1e-9)
        checks = [
            None if self.min_speedup is None or speedup is None else speedup >= self.min_speedup,
            None if self.min_memory_ratio is None or ratio is None
            else ratio >= self.min_memory_ratio,
        ]
        if any(c is False for c in checks):
            return False
        return None if any(c is None for c in checks) else True


def _minilm(**config: Any):
    from attnkit.integrations import hf_models
    from attnkit.models.bert import default_model_path

    return hf_models.build(default_model_path(), **config)


def _gpt2(**config: Any):
    from attnkit.integrations import hf_models

    return hf_models.build("gpt2", **config)  # GPT2Config's defaults are GPT-2 small's


def _mistral(**config: Any):
    from attnkit.integrations import hf_models

    return hf_models.build(
        "mistral", hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, sliding_window=256, vocab_size=1000,
        max_position_embeddings=8192, **config,
    )


def model_pair(
    make: Callable[..., Any], batch: int, length: int, baseline: str, weights: bool
) -> Callable[[], tuple[Fn, Fn]]:
    """One model, run on attnkit and on ``baseline``; random token ids."""

    def build() -> tuple[Fn, Fn]:
        model = make()
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)

        def on(implementation: str) -> Fn:
            def run() -> object:
                model.set_attn_implementation(implementation)
                with torch.no_grad():
                    return model(input_ids=ids, output_attentions=weights)

            return run

        return on("attnkit"), on(baseline)

    return build


def _weights_mb(layers: int, batch: int, heads: int, length: int) -> float:
    return layers * batch * heads * length * length * 4 / MIB


HF_CASES = [
    Case(
        "hf-minilm-weights-B8-L512", WEIGHTS, model_pair(_minilm, 8, 512, "eager", True),
        BeyondReturned(1.5, min_memory_ratio=2, returned_mb=_weights_mb(6, 8, 12, 512)),
        repeats=3,
    ),
    Case(
        "hf-gpt2-weights-L1024", WEIGHTS, model_pair(_gpt2, 1, 1024, "eager", True),
        Target(1.5), repeats=3,
    ),
    Case("hf-minilm-B8-L512", SDPA, model_pair(_minilm, 8, 512, "sdpa", False), Target(0.95),
         repeats=3),
    Case("hf-gpt2-L1024", SDPA, model_pair(_gpt2, 1, 1024, "sdpa", False), Target(0.95),
         repeats=3),
    Case(
        "hf-mistral-sliding256-L8192", SDPA_DENSE, model_pair(_mistral, 1, 8192, "sdpa", False),
        Target(5), repeats=3,
    ),
]
