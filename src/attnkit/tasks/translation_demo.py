"""The main job: train RNNsearch on German→English number words, then show what it learned.

German says "vierundzwanzig" (four-and-twenty) for 24: the model must reorder, and its
attention shows where each English word looked in the German. The German side is cut into
subwords by a BPE of 60 pieces (the data's suggestion), which learns the morphemes ("vier",
"und", "zwanzig"): short sequences train fast, and the attention lands on whole morphemes.
Every number length is trained (num2words repeats the short numbers) and scored on its own.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.translation import load_pairs
from attnkit.tasks.alignment_eval import numbers_in
from attnkit.tasks.magnitudes import Magnitude, Miss, magnitude_table
from attnkit.tasks.translate import TranslateSettings, Translator, train_translator
from attnkit.training import TrainConfig

SHOWN = 6  # held-out test numbers printed with their translations


@dataclass
class DemoSummary:
    steps: int
    minutes: float
    scores: dict[str, float]
    magnitudes: list[Magnitude]
    misses: list[Miss]
    translations: list[tuple[str, str, str]]  # (German, model's English, reference)
    heatmap: Path


def run(
    out: Path, *, minutes: float = 2.5, max_steps: int | None = None, resume: bool = False
) -> DemoSummary:
    """Train into ``out/demo-run`` (fresh, or continuing its last checkpoint with ``resume``),
    score the test split overall and by number length, translate the examples and draw the
    alignment of one to ``out/demo_alignment.png``."""
    from attnkit.explain import plot_heatmap

    run_dir = out / "demo-run"
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    settings = TranslateSettings()
    training = TrainConfig(
        lr=3e-3,
        warmup_steps=100,
        max_steps=max_steps,
        minutes=minutes,
        eval_every=200,
        log_every=100,
    )
    result, translator = train_translator(settings, training, run_dir, resume=resume)
    splits = load_pairs(settings.data, seed=settings.seed)
    test = splits.test
    scores = translator.evaluate(test)
    held_out = numbers_in([german for german, _ in test], lang=splits.src_lang)
    magnitudes, misses = magnitude_table(translator, held_out, splits.src_lang, splits.tgt_lang)
    # the first held-out numbers of each length class: tens, hundreds, thousands
    shown = sorted(test, key=lambda pair: (len(pair[0]), pair[0]))[:: max(1, len(test) // SHOWN)]
    hypotheses = translator.translate([german for german, _ in shown])
    translations = [(g, h, e) for (g, e), h in zip(shown, hypotheses, strict=True)]
    example = next((g for g, _ in test if "und" in g and "tausend" in g), test[0][0])
    heatmap = draw_alignment(translator, example, out / "demo_alignment.png", plot_heatmap)
    return DemoSummary(
        result.steps, result.seconds / 60, scores, magnitudes, misses, translations, heatmap
    )


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
