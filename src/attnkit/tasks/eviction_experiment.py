"""Does a bounded KV cache keep quality? Held-out sequences scored token by token through each
eviction policy (H2O, Zhang et al. 2023; StreamingLLM's attention sinks, Xiao et al. 2024;
a sliding window) at cache budgets of a share of the sequence length, against the full cache.

Two trained decoders of this repository are scored, both with teacher forcing: the Music
Transformer on the Bach chorales (relative positions) and a language model on the King James
Bible (rotary positions). Each sequence is fed one token per step through
``model.step`` with the cache of every layer bounded by a :class:`~attnkit.CachePolicy`; the
score is the negative log-likelihood per predicted token (nats) and its perplexity.

Shape legend: N sequences, B batch, L sequence length, V vocabulary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.explain._files import write_atomic
from attnkit.layers import CachePolicy
from attnkit.training import TrainConfig, model_device

BUDGETS = (0.1, 0.2, 0.5)
POLICIES = ("window", "sinks", "h2o")


@dataclass
class Sequences:
    """Held-out teacher-forcing material: ``inputs (N, L)`` and ``targets (N, L)``."""

    name: str
    inputs: Tensor
    targets: Tensor


@torch.no_grad()
def cached_nll(
    model: nn.Module,
    sequences: Sequences,
    cache: CachePolicy | None,
    *,
    batch_size: int,
    advance: Callable[[], None] = lambda: None,
) -> float:
    """Mean NLL per token (nats) of ``sequences`` fed one token per step through ``model``'s
    KV caches bounded by ``cache`` (``None``: unbounded); ``advance`` is called after each step
    (a progress bar)."""
    device = model_device(model)
    total, count = 0.0, 0
    for i in range(0, len(sequences.inputs), batch_size):
        inputs = sequences.inputs[i : i + batch_size].to(device)  # (B, L)
        targets = sequences.targets[i : i + batch_size].to(device)  # (B, L)
        state = model.start(inputs.shape[0], cache=cache)  # type: ignore[operator]
        for t in range(inputs.shape[1]):
            logits = model.step(state, inputs[:, t : t + 1])[:, 0].float()  # type: ignore[operator]
            nll = torch.nn.functional.cross_entropy(logits, targets[:, t], reduction="sum")
            total += float(nll)
            count += targets.shape[0]
            advance()
    return total / count


def budget_policy(budget: float, length: int, policy: str, sinks: int) -> CachePolicy:
    """The cache of ``budget`` × ``length`` slots under ``policy``."""
    return CachePolicy(max_len=max(sinks + 1, round(budget * length)), policy=policy, sinks=sinks)


def score(
    model: nn.Module,
    sequences: Sequences,
    *,
    budgets: tuple[float, ...] = BUDGETS,
    policies: tuple[str, ...] = POLICIES,
    sinks: int = 4,
    batch_size: int = 64,
) -> dict:
    """NLL per token of the full cache and of every (budget, policy); with a progress bar."""
    from tqdm.auto import tqdm

    length = sequences.inputs.shape[1]
    runs = [(None, "full")] + [(b, p) for b in budgets for p in policies]
    batches = math.ceil(len(sequences.inputs) / batch_size)
    rows: list[dict] = []
    with tqdm(total=len(runs) * batches * length, desc=sequences.name, unit="step") as bar:
        for budget, policy in runs:
            cache = None if budget is None else budget_policy(budget, length, policy, sinks)
            nll = cached_nll(model, sequences, cache, batch_size=batch_size,
                             advance=lambda: bar.update(1))
            rows.append({
                "budget": budget,
                "slots": length if cache is None else cache.max_len,
                "policy": policy,
                "nll": nll,
                "perplexity": math.exp(nll),
            })
    return {"sequences": len(sequences.inputs), "length": length, "rows": rows}


def music_sequences(run: Path, count: int) -> tuple[nn.Module, Sequences]:
    """The trained Music Transformer and up to ``count`` full windows (of its training
    length) of the held-out test chorales."""
    from attnkit.data.music import eval_windows
    from attnkit.tasks.music import Composer

    composer = Composer.load(run)
    data = composer.settings.data()
    length = composer.settings.window
    batches = eval_windows(data.test, length=length, batch_size=1)
    full = [w for w in batches if bool((w.targets != 0).all())][:count]
    inputs = torch.cat([w.inputs for w in full])  # (N, L)
    targets = torch.cat([w.targets for w in full])  # (N, L)
    return composer.model, Sequences("music", inputs, targets)


def text_sequences(run: Path, count: int) -> tuple[nn.Module, Sequences]:
    """The trained language model and up to ``count`` consecutive windows (of its training
    length) of the held-out test text."""
    from attnkit.tasks.text_lm import eval_windows, load_text_model

    model, settings, data = load_text_model(run)
    batch = eval_windows(data.test, settings.window, batch_size=count)[0]
    return model, Sequences("text", batch.inputs, batch.targets)


def training_config(minutes: float, seed: int) -> TrainConfig:
    """How the experiment trains a model that is not given: AdamW, warm-up, a time budget (as
    ``attnkit train``'s ``--minutes``: no decay, since the number of updates is unknown)."""
    return TrainConfig(lr=1e-3, warmup_steps=100, decay_steps=1_000_000, minutes=minutes,
                       eval_every=200, log_every=50, seed=seed)


def _has_run(folder: Path) -> bool:
    return (folder / "best").exists() or (folder / "last").exists()


def trained_runs(
    out: Path, music: Path | None, text: Path | None, *, minutes: float, seed: int
) -> tuple[Path, Path]:
    """The two run folders: those given, else ``out/music`` and ``out/text``, each trained
    there for ``minutes`` unless it already holds a run."""
    from attnkit.tasks.music import MusicSettings, train_music
    from attnkit.tasks.text_lm import TextSettings, train_text

    if music is None:
        music = out / "music"
        if not _has_run(music):
            train_music(MusicSettings(seed=seed), training_config(minutes, seed), music)
    if text is None:
        text = out / "text"
        if not _has_run(text):
            train_text(TextSettings(seed=seed), training_config(minutes, seed), text)
    return music, text


def plot(results: dict[str, dict], path: Path) -> Path:
    """Perplexity against the cache budget, one panel per model, the full cache dashed."""
    from attnkit.explain.heatmap import _figure, _save

    fig = _figure(4.2 * len(results), 4, 130)
    for i, (name, result) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), i + 1)
        rows = result["rows"]
        full = next(r["perplexity"] for r in rows if r["policy"] == "full")
        for policy in POLICIES:
            mine = [r for r in rows if r["policy"] == policy]
            ax.plot([100 * r["budget"] for r in mine], [r["perplexity"] for r in mine],
                    marker="o", label=policy)
        ax.axhline(full, color="black", linestyle="--", label="full cache")
        ax.axhline(1.05 * full, color="grey", linestyle=":", label="full + 5 %")
        ax.set_xlabel("cache budget (% of the sequence length)")
        ax.set_ylabel("perplexity per token")
        ax.set_title(f"{name}: {result['sequences']} held-out sequences of {result['length']}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def run(
    out: Path,
    *,
    music: Path | None = None,
    text: Path | None = None,
    minutes: float = 15.0,
    sequences: int = 64,
    budgets: tuple[float, ...] = BUDGETS,
    sinks: int = 4,
    seed: int = 0,
) -> dict[str, dict]:
    """Train what is not given (into ``out/music``, ``out/text``), score both models, write
    ``out/eviction.json`` and ``out/eviction.png``; return the results per model."""
    music, text = trained_runs(out, music, text, minutes=minutes, seed=seed)
    results = {}
    for name, load, folder in (("music", music_sequences, music), ("text", text_sequences, text)):
        model, held_out = load(folder, sequences)
        results[name] = {
            "run": str(folder),
            **score(model, held_out, budgets=budgets, sinks=sinks),
        }
    write_atomic(out / "eviction.json", json.dumps(results, indent=2).encode())
    plot(results, out / "eviction.png")
    return results
