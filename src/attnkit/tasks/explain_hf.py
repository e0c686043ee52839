"""``attnkit explain --hf DIR``: what any local Hugging Face model attends to.

The folder is loaded with ``attn_implementation="attnkit"`` and run once on the text (an
encoder–decoder also on the target text) inside :func:`attnkit.explain.record`. Each layer's
weights are cut down as soon as that layer has run (:func:`attnkit.explain.compact.top_k`, and
the head average for the rollout), so the full weights of all layers never exist at once.

Long inputs: when the text has more tokens than the model has positions (MiniLM: 512), it is
cut into consecutive chunks that each fit (an encoder's special tokens around each chunk); each
chunk attends only within itself, and the pages say so. The viewer of a long input keeps each
query's top-k keys and the rest's mass (see :mod:`attnkit.explain.viewer`).

Writes ``attention.html`` (self-attention; for an encoder–decoder the encoder's, with
``cross_attention.html`` and ``decoder_attention.html`` beside it), ``rollout.png`` (attention
rollout of that self-attention, within each chunk) and, for up to 60 tokens,
``last_layer_heads.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.explain import plot_heads, plot_heatmap, record, rollout, write_viewer
from attnkit.explain.compact import TopK, concat_queries, top_k
from attnkit.tasks.explain_text import Explanation, most_attended

KEEP_K = 32  # keys kept per query while recording; the viewer keeps what fits its budget
KEEP_FULL = 1 << 17  # a call's weights up to this many numbers are kept whole (exact page)
HEADS_PNG_TOKENS = 60  # the grid of heads is drawn for inputs up to this long


@dataclass
class _Layer:
    """What is kept of one layer over the chunks: the weights (whole when small, else top-k
    rows) and the head-averaged blocks."""

    parts: list[TopK | Tensor]  # (H, Lq_chunk, Lk_chunk) when whole
    means: list[Tensor]  # (Lq_chunk, Lk_chunk) each


@dataclass
class _Chunk:
    ids: list[int]
    start: int  # position of its first token in the whole input


def _keep(weights: Tensor) -> tuple[TopK | Tensor, Tensor]:
    """The record() transform: one call's weights (1, H, Lq, Lk) → (the weights whole if
    small, else their top-k; the head mean (Lq, Lk))."""
    heads = weights[0].float()  # (H, Lq, Lk)
    kept = heads if heads.numel() <= KEEP_FULL else top_k(heads, KEEP_K)
    return kept, heads.mean(dim=0)


def explain_hf(
    folder: Path, text: str, out: Path, *, target: str | None = None, top: int = 3
) -> Explanation:
    """Run the model in ``folder`` on ``text`` (and ``target`` for an encoder–decoder).

    Raises:
        FileNotFoundError: ``folder`` is not a Hugging Face model folder.
        ValueError: an encoder–decoder without ``target`` (or a target for another kind), an
            empty text, or an encoder–decoder input longer than its positions.
    """
    from attnkit.integrations import hf_models
    from attnkit.integrations.transformers import attention_modules

    loaded = hf_models.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    kinds = {name: kind for name, (_, kind) in attention_modules(model).items()}
    if (loaded.kind == "encoder-decoder") != (target is not None):
        raise ValueError(
            f"{folder} holds a {loaded.kind} ({type(model).__name__}): "
            + ("give the target text too" if target is None else "it takes one text only")
        )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the text {text!r} has no tokens")
    name = Path(folder).name
    if loaded.kind == "encoder-decoder":
        title = f"{name} ({type(model).__name__}): {_short(text)} → {_short(target)}"
        return _encoder_decoder(model, tokenizer, kinds, ids, target, out, title, top,
                                loaded.max_positions)
    chunks = _chunks(tokenizer, ids, loaded.max_positions, loaded.kind)
    layers: dict[str, _Layer] = {}
    for chunk in chunks:
        with torch.no_grad(), record(model, transform=_keep) as rec:
            model(input_ids=torch.tensor([chunk.ids]))
        _collect(layers, rec, kinds, "self")
    tokens = [t for c in chunks for t in _token_strings(tokenizer, c.ids)]
    starts = [c.start for c in chunks]
    notes = _chunk_notes(chunks, loaded.max_positions, len(tokens))
    title = f"{name} ({type(model).__name__}): {_short(text)}"
    files = _self_attention_files(layers, tokens, starts, out, title, notes)
    last = _block_diagonal(layers[list(layers)[-1]].means, starts, len(tokens))  # (L, L)
    skipped = (*tokenizer.all_special_tokens, ".", ",")
    return Explanation(files, most_attended(last, tokens, top=top, skipped=skipped))


def _chunks(tokenizer: Any, ids: list[int], positions: int | None, kind: str) -> list[_Chunk]:
    """``ids`` cut so that each chunk, with the special tokens the tokenizer adds around it,
    fits the model's positions (one chunk when it has no limit)."""
    prefix, suffix = _special_tokens_around(tokenizer)
    extra = len(prefix) + len(suffix)
    room = len(ids) if positions is None else max(1, positions - extra)
    chunks, start = [], 0
    for i in range(0, len(ids), room):
        full = prefix + ids[i : i + room] + suffix
        chunks.append(_Chunk(full, start))
        start += len(full)
    return chunks


def _special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a text (``[CLS]``/``[SEP]``,
    ``</s>``, none), read off a one-word probe."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for at in range(len(full) - len(bare) + 1):
        if full[at : at + len(bare)] == bare:
            return full[:at], full[at + len(bare) :]
    return [], []


def _collect(layers: dict[str, _Layer], rec: Any, kinds: dict[str, str], kind: str) -> None:
    for layer_name in rec.names():
        if kinds.get(layer_name, "self") != kind:
            continue
        kept, mean = rec[layer_name][-1]
        entry = layers.setdefault(layer_name, _Layer([], []))
        entry.parts.append(kept)
        entry.means.append(mean)


def _viewer_layers(
    layers: dict[str, _Layer], starts: Sequence[int], kv_len: int
) -> dict[str, TopK | Tensor]:
    """Each layer over the whole input: whole weights (H, Lq, Lk) when every chunk kept them
    (block-diagonal over chunks of a self-attention), else the joined top-k rows."""
    joined: dict[str, TopK | Tensor] = {}
    for name, entry in layers.items():
        if all(isinstance(p, Tensor) for p in entry.parts):
            if len(entry.parts) == 1:
                joined[name] = entry.parts[0]
            else:
                heads = zip(*(p.unbind(0) for p in entry.parts), strict=True)  # per head
                joined[name] = torch.stack(
                    [_block_diagonal(list(blocks), starts, kv_len) for blocks in heads]
                )  # (H, L, L)
            continue
        parts = [p if isinstance(p, TopK) else top_k(p, KEEP_K) for p in entry.parts]
        joined[name] = concat_queries(parts, starts, kv_len)
    return joined


def _block_diagonal(blocks: list[Tensor], starts: Sequence[int], length: int) -> Tensor:
    """The chunks' square blocks placed on the diagonal of an ``(L, L)`` matrix."""
    full = torch.zeros(length, length)
    for block, start in zip(blocks, starts, strict=True):
        n = block.shape[0]
        full[start : start + n, start : start + n] = block
    return full


def _self_attention_files(
    layers: dict[str, _Layer],
    tokens: list[str],
    starts: Sequence[int],
    out: Path,
    title: str,
    notes: list[str],
) -> list[Path]:
    files = [
        write_viewer(
            _viewer_layers(layers, starts, len(tokens)), out / "attention.html",
            tokens=tokens, title=title, notes=notes,
        )
    ]
    per_chunk = [
        rollout(torch.stack([entry.means[c] for entry in layers.values()])[:, None, None])[0]
        for c in range(len(starts))
    ]  # (Lc, Lc) each: layers of chunk c, rolled out
    what = "within each chunk" if len(starts) > 1 else "across layers"
    files.append(
        plot_heatmap(
            _block_diagonal(per_chunk, starts, len(tokens)),
            out / "rollout.png",
            tokens=tokens,
            title=f"attention rollout {what} ({len(layers)} layers)",
        )
    )
    name = list(layers)[-1]
    last = _viewer_layers({name: layers[name]}, starts, len(tokens))[name]
    if len(tokens) <= HEADS_PNG_TOKENS and isinstance(last, Tensor):
        files.append(
            plot_heads(last, out / "last_layer_heads.png", tokens=tokens, title=name)
        )
    return files


def _chunk_notes(chunks: list[_Chunk], positions: int | None, length: int) -> list[str]:
    if len(chunks) == 1:
        return []
    return [
        f"The input has {length} tokens but the model's positions cover {positions}: it was "
        f"cut into {len(chunks)} consecutive chunks that each fit (with the model's special "
        "tokens around each), run one after the other. A token attends only within its own "
        "chunk."
    ]


def _token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token as the text it stands for (GPT-2's "Ġcat" shows as " cat")."""
    return [tokenizer.decode([i]) for i in ids]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _encoder_decoder(
    model: Any,
    tokenizer: Any,
    kinds: dict[str, str],
    ids: list[int],
    target: str,
    out: Path,
    title: str,
    top: int,
    positions: int | None,
) -> Explanation:
    prefix, suffix = _special_tokens_around(tokenizer)
    source = prefix + ids + suffix
    target_ids = tokenizer(text_target=target)["input_ids"]
    for what, seq in (("text", source), ("target", target_ids)):
        if positions is not None and len(seq) > positions:
            raise ValueError(
                f"the {what} has {len(seq)} tokens but {type(model).__name__} has {positions} "
                "positions; an encoder–decoder input is not cut into chunks"
            )
    start = model.config.decoder_start_token_id
    decoder_ids = [start, *target_ids[:-1]] if start is not None else target_ids
    with torch.no_grad(), record(model, transform=_keep) as rec:
        model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([decoder_ids]))
    src_tokens = _token_strings(tokenizer, source)
    tgt_tokens = _token_strings(tokenizer, decoder_ids)
    encoder_names = {n for n, _ in model.get_encoder().named_modules(prefix=_prefix(model))}
    encoder, decoder, cross = {}, {}, {}
    _collect(cross, rec, kinds, "cross")
    selfs: dict[str, _Layer] = {}
    _collect(selfs, rec, kinds, "self")
    for layer_name, entry in selfs.items():
        (encoder if layer_name in encoder_names else decoder)[layer_name] = entry
    files = _self_attention_files(encoder, src_tokens, [0], out, f"{title} (encoder)", [])
    files.append(write_viewer(
        _viewer_layers(cross, [0], len(src_tokens)), out / "cross_attention.html",
        tokens=tgt_tokens, key_tokens=src_tokens, title=f"{title} (cross-attention)",
    ))
    files.append(write_viewer(
        _viewer_layers(decoder, [0], len(tgt_tokens)), out / "decoder_attention.html",
        tokens=tgt_tokens, title=f"{title} (decoder self-attention)",
    ))
    last = cross[list(cross)[-1]].means[0]  # (T, S): last cross-attention layer, heads averaged
    skipped = tuple(tokenizer.all_special_tokens)
    report = most_attended(last, tgt_tokens, top=top, skipped=skipped, key_tokens=src_tokens)
    return Explanation(files, report)


def _prefix(model: Any) -> str:
    """The qualified name of the encoder inside ``model``."""
    encoder = model.get_encoder()
    return next(n for n, m in model.named_modules() if m is encoder)
