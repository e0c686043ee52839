"""Bahdanau, Cho & Bengio 2015, Figure 2: translation quality against source length, with and
without attention.

RNNenc (the encoder's summary is the only link) and RNNsearch (Bahdanau attention) are trained
on the same data, with parameter counts within 10 % and the same time budget; the test split
is cut into buckets by source length and each bucket is scored (BLEU, chrF, exact match).
Without attention quality should fall as sources get longer; with attention it should hold.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from attnkit.explain._files import write_atomic
from attnkit.tasks.metrics import translation_scores
from attnkit.tasks.translate import TranslateSettings, Translator, prepare, train_translator
from attnkit.training import TrainConfig


def parameter_count(settings: TranslateSettings, src_vocab: int, tgt_vocab: int) -> int:
    return sum(p.numel() for p in settings.build_model(src_vocab, tgt_vocab).parameters())


def matched_rnnenc(search: TranslateSettings, src_vocab: int, tgt_vocab: int) -> TranslateSettings:
    """RNNenc settings whose parameter count is closest to ``search``'s (RNNsearch has the
    attention's weights; RNNenc gets a wider hidden state instead).

    Raises:
        ValueError: no hidden size brings the two within 10 %.
    """
    target = parameter_count(search, src_vocab, tgt_vocab)
    best = None
    for hidden in range(max(2, search.hidden_dim // 2) // 2 * 2, 4 * search.hidden_dim + 1, 2):
        candidate = dataclasses.replace(search, model="rnnenc", hidden_dim=hidden)
        gap = abs(parameter_count(candidate, src_vocab, tgt_vocab) - target) / target
        if best is None or gap < best[0]:
            best = (gap, candidate)
    assert best is not None
    if best[0] > 0.10:
        raise ValueError(f"cannot match RNNenc's parameters within 10 % (best gap {best[0]:.1%})")
    return best[1]


def length_buckets(lengths: list[int], count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ``[low, high]`` length ranges holding about equal numbers of items."""
    ordered = sorted(lengths)
    edges = [ordered[min(len(ordered) - 1, round(i * len(ordered) / count))] for i in range(count)]
    edges = sorted(set(edges))
    ranges = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else ordered[-1]
        ranges.append((low, high))
    return ranges


@dataclass
class BucketScores:
    low: int
    high: int
    pairs: int
    scores: dict[str, dict[str, float]]  # model name -> {"bleu", "chrf", "exact"}


def score_by_length(
    translators: dict[str, Translator], pairs: list[tuple[str, str]], buckets: int
) -> list[BucketScores]:
    """Score every translator on ``pairs`` per source-length bucket (in source tokens)."""
    first = next(iter(translators.values()))
    lengths = [len(first.source.encode(src)) for src, _ in pairs]
    hypotheses = {name: t.translate([s for s, _ in pairs]) for name, t in translators.items()}
    out = []
    for low, high in length_buckets(lengths, buckets):
        chosen = [i for i, n in enumerate(lengths) if low <= n <= high]
        refs = [pairs[i][1] for i in chosen]
        scores = {
            name: translation_scores([hyps[i] for i in chosen], refs)
            for name, hyps in hypotheses.items()
        }
        out.append(BucketScores(low, high, len(chosen), scores))
    return out


def plot(results: list[BucketScores], path: Path, title: str) -> Path:
    """BLEU against source length for each model (a PNG like the paper's Figure 2)."""
    from attnkit.explain.heatmap import _figure, _save

    fig = _figure(7, 4.5, 130)
    ax = fig.add_subplot()
    centres = [(b.low + b.high) / 2 for b in results]
    for name in results[0].scores:
        ax.plot(centres, [b.scores[name]["bleu"] for b in results], marker="o", label=name)
    ax.set_xlabel("source length (tokens), bucket centre")
    ax.set_ylabel("test BLEU")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def run(
    data: str,
    out: Path,
    *,
    minutes: float,
    hidden_dim: int = 128,
    buckets: int = 6,
    seed: int = 0,
    source_tokens: str = "char",
    source_vocab: int = 8000,
) -> dict:
    """Train both models for ``minutes`` each into ``out/rnnsearch`` and ``out/rnnenc``, score
    the test split by length, write ``out/length.json`` and ``out/length.png``."""
    search = TranslateSettings(
        data=data,
        model="rnnsearch",
        hidden_dim=hidden_dim,
        seed=seed,
        source_tokens=source_tokens,
        source_vocab=source_vocab,
    )
    task, _ = prepare(search)
    src_vocab, tgt_vocab = task.source.vocab_size, task.target.vocab_size
    enc = matched_rnnenc(search, src_vocab, tgt_vocab)
    training = TrainConfig(
        lr=3e-3,
        warmup_steps=100,
        minutes=minutes,
        eval_every=1000,
        log_every=200,
        seed=seed,
    )
    translators, params, steps = {}, {}, {}
    for name, settings in (("RNNsearch", search), ("RNNenc", enc)):
        result, translators[name] = train_translator(settings, training, out / name.lower())
        params[name] = parameter_count(settings, src_vocab, tgt_vocab)
        steps[name] = result.steps
    results = score_by_length(translators, task.splits.test, buckets)
    summary = {
        "data": data,
        "source_tokens": f"{source_tokens} ({source_vocab})",
        "minutes_per_model": minutes,
        "parameters": params,
        "steps": steps,
        "hidden_dim": {"RNNsearch": search.hidden_dim, "RNNenc": enc.hidden_dim},
        "buckets": [dataclasses.asdict(b) for b in results],
    }
    write_atomic(out / "length.json", json.dumps(summary, indent=2).encode())
    plot(results, out / "length.png", f"{data}: quality against source length")
    return summary
