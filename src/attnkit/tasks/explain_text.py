"""``attnkit explain``: what a real model attends to, as pictures and a short text report.

- A sentence through the pretrained MiniLM encoder (running in attnkit's own layers): the head
  view of every layer (HTML), the attention rollout across layers (PNG), the last layer's
  heads (PNG), and for each word the words it attends to most.
- A source sentence through a trained translation run: the source × target alignment (PNG) and
  the head view of the cross-attention (HTML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from attnkit.explain import plot_heads, plot_heatmap, record, rollout, write_viewer

SKIPPED = ("[CLS]", "[SEP]", ".", ",")


@dataclass
class Explanation:
    files: list[Path]
    # token -> its most-attended tokens with weights (from the last layer, heads averaged)
    top: list[tuple[str, list[tuple[str, float]]]] = field(default_factory=list)
    note: str | None = None  # what the report leaves out, said before it (a cut text)


SUMMARIES = ("key_totals", "heads_mean")  # what explain_sentence(summary=...) records


def explain_sentence(
    text: str, out: Path, *, top: int = 3, summary: str | None = None
) -> Explanation:
    """Run MiniLM on ``text``; write ``attention.html``, ``rollout.png`` and
    ``last_layer_heads.png`` into ``out``.

    ``summary`` (one of :data:`SUMMARIES`) records only that summary of each layer's weights,
    made by the kernel without the full weights (for long inputs), and writes only the head
    view of it (``attention.html``): ``"key_totals"`` as a heat strip of the attention each
    token received in total (the report lists those totals, last layer, heads averaged),
    ``"heads_mean"`` as one head per layer. Rollout and the per-head picture need every head's
    full weights, so they are not drawn.

    Raises:
        ValueError: an unknown ``summary``.
    """
    from attnkit.models import load_bert

    if summary is not None and summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
    model = load_bert()
    tokens = model.tokens(text)
    ids, mask = model.tokenize([text])
    note, cut = None, ""
    if model.tokenizer.encode(text).overflowing:  # the tokenizer cut the text at max_length
        note = (
            f"MiniLM reads at most {model.max_length} tokens: only the first "
            f"{model.max_length} of this text are explained (cut it, or use --hf DIR, which "
            "explains longer texts in chunks)"
        )
        text = f"{model.max_length} first tokens of: {text}"  # the viewers' titles say it too
        cut = f" (the first {model.max_length} tokens of the text)"
    if summary is not None:
        with torch.no_grad(), record(model, weights=summary) as rec:
            model(ids, mask)
        page = write_viewer(rec, out / "attention.html", tokens=tokens,
                            title=f"MiniLM ({summary}): {text}")
        last = rec.single(rec.names()[-1])[0]  # (H, Lk) or (Lq, Lk)
        if summary == "heads_mean":
            return Explanation([page], most_attended(last, tokens, top=top), note)
        received = last.mean(dim=0)  # (Lk,): heads averaged
        return Explanation([page], [(t, [("in total", float(w))]) for t, w in
                                    zip(tokens, received, strict=True)], note)
    with torch.no_grad(), record(model) as rec:
        model(ids, mask)
    layers = rec.stack("encoder.layers.*.self_attn")  # (N, 1, H, L, L)
    files = [
        write_viewer(rec, out / "attention.html", tokens=tokens, title=f"MiniLM: {text}"),
        plot_heatmap(
            rollout(layers, residual=True)[0],
            out / "rollout.png",
            tokens=tokens,
            title="attention rollout across MiniLM's 6 layers" + cut,
        ),
        plot_heads(
            layers[-1, 0],
            out / "last_layer_heads.png",
            tokens=tokens,
            title="MiniLM, last layer: every head" + cut,
        ),
    ]
    last = layers[-1, 0].mean(0)  # (L, L): heads averaged
    return Explanation(files, most_attended(last, tokens, top=top), note)


def most_attended(
    weights: torch.Tensor,
    tokens: list[str],
    *,
    top: int = 3,
    skipped: tuple[str, ...] = SKIPPED,
    key_tokens: list[str] | None = None,
) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each query token (``skipped`` ones aside) the ``top`` keys it gives most weight,
    itself and ``skipped`` keys aside: ``weights (Lq, Lk)`` (e.g. a layer's heads averaged)."""
    keys = tokens if key_tokens is None else key_tokens
    hidden = torch.tensor([k in skipped for k in keys])  # (Lk,)
    report = []
    for i, token in enumerate(tokens):
        if token in skipped:
            continue
        row = weights[i].clone().masked_fill(hidden, -1.0)
        if key_tokens is None:
            row[i] = -1.0
        values, index = row.topk(min(top, len(keys)))
        report.append(
            (token, [(keys[j], float(v)) for v, j in zip(values, index, strict=True) if v >= 0])
        )
    return report


def explain_translation(run: Path, text: str, out: Path) -> Explanation:
    """Translate ``text`` with a trained run; write ``alignment.png`` and ``attention.html``."""
    from attnkit.tasks.translate import Translator

    translator = Translator.load(run)
    translation = translator.translate([text])[0]
    alignment = translator.align(text, translation)
    files = [
        plot_heatmap(
            alignment.weights,
            out / "alignment.png",
            tokens=alignment.target_tokens,
            key_tokens=alignment.source_tokens,
            title=f"where each output token looked: {text}",
            query_label="output (target)",
            key_label="input (source)",
        ),
    ]
    files.append(
        write_viewer(
            translator.cross_attention(text, translation),
            out / "attention.html",
            tokens=alignment.target_tokens,
            key_tokens=alignment.source_tokens,
            title=f"{text} -> {translation}",
        )
    )
    report = [
        (token, [(alignment.source_tokens[int(row.argmax())], float(row.max()))])
        for token, row in zip(alignment.target_tokens, alignment.weights, strict=True)
    ]
    return Explanation(files, report)
