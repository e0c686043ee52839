"""The main job: train RNNsearch on German→English number words, then show what it learned.

German says "vierundzwanzig" (four-and-twenty) for 24: the model must reorder, and its
attention shows where each English word looked in the German.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.translation import load_pairs
from attnkit.tasks.translate import TranslateSettings, Translator, train_translator
from attnkit.training import TrainConfig

EXAMPLES = (
    "dreihundertvierundzwanzig",
    "neuntausendachthundertsiebenundfünfzig",
    "zweitausendeinundzwanzig",
    "siebzehn",
)


@dataclass
class DemoSummary:
    steps: int
    minutes: float
    scores: dict[str, float]
    translations: list[tuple[str, str]]
    heatmap: Path


def run(out: Path, *, minutes: float = 2.5, max_steps: int = 800) -> DemoSummary:
    """Train (fresh, into ``out/demo-run``), score the test split, translate the examples and
    draw the alignment of the first one to ``out/demo_alignment.png``."""
    from attnkit.explain import plot_heatmap

    run_dir = out / "demo-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = TranslateSettings()
    training = TrainConfig(
        lr=3e-3,
        warmup_steps=100,
        decay_steps=max_steps,
        max_steps=max_steps,
        minutes=minutes,
        eval_every=200,
        log_every=100,
    )
    result, translator = train_translator(settings, training, run_dir)
    scores = translator.evaluate(load_pairs(settings.data, seed=settings.seed).test)
    translations = list(zip(EXAMPLES, translator.translate(list(EXAMPLES)), strict=True))
    heatmap = draw_alignment(translator, EXAMPLES[0], out / "demo_alignment.png", plot_heatmap)
    return DemoSummary(result.steps, result.seconds / 60, scores, translations, heatmap)


def draw_alignment(translator: Translator, text: str, path: Path, plot) -> Path:
    """A heatmap of the target tokens (rows) over the source tokens (columns)."""
    alignment = translator.align(text)
    return plot(
        alignment.weights,
        path,
        tokens=alignment.target_tokens,
        key_tokens=alignment.source_tokens,
        title=f"attention while translating {text!r}",
        query_label="English output",
        key_label="German input",
    )
