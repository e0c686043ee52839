"""Benchmark case of ``torch.compile``: one training step of the translation Transformer,
compiled against the same step uncompiled.

The model has the shape ``attnkit train translate --model transformer`` trains by default
(width 128, 4 heads, feed-forward 512, one encoder and one decoder layer, dropout 0.1), a batch
of 64 sentences of 16 source and 16 target tokens over vocabularies of 256. A step is the
forward pass, the cross-entropy loss, the backward pass and an AdamW update; ours runs the
model through ``torch.compile(fullgraph=True)`` (inductor, CPU), compiled in ``build()``
outside the timed region, the baseline the same model (same initial weights) uncompiled.
There is no target: the row says what compiling buys on this machine. A second row takes
dropout out (the model otherwise the same), to show what the compiled graph's own random
numbers cost.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from attnkit.bench.cases import Case, Fn, Target
from attnkit.models.transformer import Seq2SeqTransformer, TransformerConfig

BATCH, SOURCE, TARGET, VOCAB = 64, 16, 16, 256


def translator_step(dropout: float = 0.1) -> tuple[Fn, Fn]:
    """``(compiled step, eager step)`` on one fixed batch."""
    torch.manual_seed(0)
    config = TransformerConfig(VOCAB, VOCAB, width=128, heads=4, ff_dim=512, encoder_layers=1,
                               decoder_layers=1, dropout=dropout)
    eager = Seq2SeqTransformer(config).train()
    compiled_model = copy.deepcopy(eager)
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(4, VOCAB, (BATCH, SOURCE), generator=gen)
    lengths = torch.randint(SOURCE // 2, SOURCE + 1, (BATCH,), generator=gen)
    tgt = torch.randint(4, VOCAB, (BATCH, TARGET + 1), generator=gen)

    def step_of(model: torch.nn.Module, forward) -> Fn:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            logits = forward(src, lengths, tgt[:, :-1])  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return step

    ours = step_of(compiled_model, torch.compile(compiled_model, fullgraph=True))
    ours()  # compile here, not in the timed region
    return ours, step_of(eager, eager)


UNCOMPILED = "the same training step uncompiled"
COMPILE_CASES = [
    Case("compile-translator-train-step", UNCOMPILED, translator_step, Target()),
    Case("compile-translator-train-step-no-dropout", UNCOMPILED, lambda: translator_step(0.0),
         Target()),
]

__all__ = ["COMPILE_CASES"]
