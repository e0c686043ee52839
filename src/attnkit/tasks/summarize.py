"""Summarisation with copy attention: a docstring's body -> its one-line summary.

``train_summarizer(settings, training, run_dir)`` trains a pointer-generator with coverage
(:class:`attnkit.models.pointer_generator.PointerGenerator`, See et al. 2017) with the one
Trainer; the same network with ``copy=False`` is the no-copy baseline. :class:`Summarizer`
loads a run and summarises texts. Metric: ROUGE-1/2/L F1 (``rouge-score``, Porter stemming),
beside the lead-sentence baseline (the body's first sentence).

Data (``settings.data``): ``"docstrings"``, the built-in collection of
:func:`attnkit.data.documents.load_docstrings` (summary held out as the target); or
``"tsv:PATH"``, a ``body<TAB>summary`` file (see ``attnkit.data.translation.load_pairs``).

Shape legend: B batch, S source words, T target words, X extended vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit._validate import check_positive_fields
from attnkit.data.batching import Batch, collate, make_batches
from attnkit.data.documents import (
    WordTokenizer,
    extend_source,
    extend_target,
    load_docstrings,
    split_sentences,
)
from attnkit.models import beam_search, greedy
from attnkit.models.decoding import no_repeats
from attnkit.models.pointer_generator import (
    PointerGenerator,
    PointerGeneratorConfig,
    coverage_loss,
)
from attnkit.tasks._settings import settings_from
from attnkit.training import (
    CheckpointExtras,
    StepLoss,
    TrainConfig,
    Trainer,
    TrainResult,
    load_best_checkpoint,
    model_device,
    sequence_cross_entropy,
)

Pair = tuple[str, str]  # (body, summary)
# Decoding never repeats one of its own trigrams nor a word right after itself: a briefly
# trained model otherwise loops ("Return a given given given the given given."), which the
# reference summaries never do; docs/experiments.md measures the effect.
NO_REPEAT_NGRAM = 3


@dataclass
class SummarizeSettings:
    """What to train (saved in each checkpoint).

    Raises:
        ValueError: a non-positive size, a bad data spec or a negative coverage weight.
    """

    data: str = "docstrings"
    copy: bool = True
    coverage: bool = True
    coverage_weight: float = 1.0
    embed_dim: int = 96
    hidden_dim: int = 128
    vocab_size: int = 10000
    min_frequency: int = 2
    max_source: int = 80
    max_target: int = 30
    batch_size: int = 32
    dropout: float = 0.1
    eval_examples: int = 300
    seed: int = 0
    # One decoder step attends with Lq = 1 over ~80 source words: the materialised reference
    # kernel is ~30 % faster per training step here than the blockwise additive kernel.
    attention_backend: str = "reference"
    init_from: str | None = None  # start from this run's vocabulary and weights

    def __post_init__(self) -> None:
        if self.data != "docstrings" and not self.data.startswith("tsv:"):
            raise ValueError(f"data must be 'docstrings' or 'tsv:PATH', got {self.data!r}")
        check_positive_fields(
            self,
            (
                "embed_dim",
                "hidden_dim",
                "vocab_size",
                "min_frequency",
                "max_source",
                "max_target",
                "batch_size",
                "eval_examples",
            ),
        )
        if not self.coverage_weight >= 0:
            raise ValueError(f"coverage_weight must be ≥ 0, got {self.coverage_weight}")

    def build_model(self, vocab: int) -> PointerGenerator:
        return PointerGenerator(
            PointerGeneratorConfig(
                vocab=vocab,
                embed_dim=self.embed_dim,
                hidden_dim=self.hidden_dim,
                copy=self.copy,
                coverage=self.coverage,
                dropout=self.dropout,
                unk=WordTokenizer.unk_id,
                attention_backend=self.attention_backend,
            )
        )


@dataclass(frozen=True)
class PairSplits:
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]


def load_summary_pairs(data: str, *, seed: int = 0) -> PairSplits:
    """``(body, summary)`` pairs of ``data`` (see the module docstring), split 85/5/10 for the
    docstrings (by name) or as the TSV source splits.

    Raises:
        DataError: bad data (the file or entry is named).
    """
    if data == "docstrings":
        s = load_docstrings(seed=seed)
        pairs = [[(e.body, e.summary) for e in part] for part in (s.train, s.valid, s.test)]
        return PairSplits(*pairs)
    from attnkit.data.translation import load_pairs

    splits = load_pairs(data, seed=seed)
    return PairSplits(list(splits.train), list(splits.valid), list(splits.test))


def lead_sentence(body: str) -> str:
    """The baseline summary: the body's first sentence (empty for an empty body)."""
    sentences = split_sentences(body)
    return sentences[0] if sentences else ""


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (``rouge-score``, Porter stemmer), in 0..100.

    Raises:
        ValueError: different numbers of hypotheses and references, or none.
    """
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references) or not references:
        raise ValueError(
            f"need as many hypotheses as references (at least one), got {len(hypotheses)} "
            f"and {len(references)}"
        )
    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        for name, score in scorer.score(ref, hyp).items():
            totals[name] += score.fmeasure
    return {name: 100.0 * total / len(references) for name, total in totals.items()}


@dataclass
class Encoded:
    """Extended ids of one pair and its source-only words (for decoding copies)."""

    source: list[int]
    target: list[int]
    oovs: list[str]


def encode_pair(
    tokenizer: WordTokenizer, body: str, summary: str, settings: SummarizeSettings
) -> Encoded:
    """Extended ids of ``(body, summary)``, truncated to the settings' lengths. Without copying
    a source-only target word is ``<unk>`` (the model cannot produce it). An empty side
    becomes a single ``<unk>``."""
    words = tokenizer.words(body)[: settings.max_source] or ["<unk>"]
    source, oovs = extend_source(tokenizer, words)
    target = extend_target(tokenizer, tokenizer.words(summary)[: settings.max_target], oovs)
    if not settings.copy:
        target = [WordTokenizer.unk_id if i >= tokenizer.vocab_size else i for i in target]
    return Encoded(source, target or [WordTokenizer.unk_id], oovs)


class SummarizationTask:
    """The :class:`~attnkit.training.TrainTask`: teacher-forced ``-log P(w)`` plus
    ``coverage_weight · Σ_i min(a_i^t, c_i^t)``; ROUGE on (part of) the validation split."""

    metric = "rougeL"
    higher_is_better = True

    def __init__(
        self, splits: PairSplits, tokenizer: WordTokenizer, settings: SummarizeSettings
    ) -> None:
        self.splits, self.tokenizer, self.settings = splits, tokenizer, settings
        self.description = (
            f"{settings.data}: {len(splits.train):,} (body, summary) training pairs, "
            f"{len(splits.valid):,} validation; {settings.vocab_size:,} words"
        )
        encoded = [encode_pair(tokenizer, b, s, settings) for b, s in splits.train]
        self.examples = [(e.source, e.target) for e in encoded]

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[Batch]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return make_batches(
            self.examples, batch_size=self.settings.batch_size, seed=seed, epoch=epoch
        )

    def loss(self, model: nn.Module, batch: Batch) -> StepLoss:
        batch = batch.to(model_device(model))
        details = model.details(batch.src, batch.src_lengths, batch.tgt_in)  # type: ignore[operator]
        nll, tokens = sequence_cross_entropy(
            details.log_probs, batch.tgt_out, pad_id=WordTokenizer.pad_id
        )
        steps = batch.tgt_out != WordTokenizer.pad_id  # (B, T)
        cover = coverage_loss(details.attention, details.coverage, steps)
        weight = self.settings.coverage_weight if self.settings.coverage else 0.0
        extra = {
            "nll": float(nll.detach()),
            "coverage": float(cover.detach()),
            "p_gen": float(details.p_gen.detach()[steps].mean()),
        }
        return StepLoss(nll + weight * cover, tokens, extra)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        pairs = self.splits.valid[: self.settings.eval_examples]
        summarizer = Summarizer(model, self.tokenizer, self.settings)  # type: ignore[arg-type]
        return summarizer.evaluate(pairs)

    def checkpoint_extras(self) -> CheckpointExtras:
        return CheckpointExtras(
            config=dataclasses.asdict(self.settings), tokenizer_json=self.tokenizer.to_json()
        )


class Summarizer:
    """A trained pointer-generator with its tokenizer."""

    def __init__(
        self, model: PointerGenerator, tokenizer: WordTokenizer, settings: SummarizeSettings
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    @classmethod
    def load(cls, run: str | Path) -> Summarizer:
        """Load a run folder (its best checkpoint), a ``best``/``last`` pointer or a checkpoint.

        Raises:
            FileNotFoundError: nothing there.
            ValueError: a checkpoint that is not a summariser.
        """
        checkpoint = load_best_checkpoint(run)
        task = checkpoint.task_config
        if "coverage_weight" not in task or checkpoint.tokenizer_json is None:
            raise ValueError(f"{checkpoint.path} is not a summarisation checkpoint")
        settings = settings_from(SummarizeSettings, task)
        tokenizer = WordTokenizer.from_json(checkpoint.tokenizer_json)
        model = PointerGenerator(PointerGeneratorConfig(**(checkpoint.model_config or {})))
        checkpoint.load_into(model)
        return cls(model.eval(), tokenizer, settings)

    @torch.no_grad()
    def summarize(
        self, texts: Sequence[str], *, beam: int = 1, batch_size: int = 32,
        no_repeat_ngram: int = NO_REPEAT_NGRAM,
    ) -> list[str]:
        """One-line summaries of ``texts`` (greedy, or beam search when ``beam`` > 1) that
        never repeat one of their own ``no_repeat_ngram``-grams nor a word right after itself
        (:func:`~attnkit.models.decoding.no_repeats`; 0: no such rule).

        Raises:
            ValueError: ``texts`` is a bare string, ``beam`` < 1 or ``no_repeat_ngram`` < 0.
        """
        if isinstance(no_repeat_ngram, bool) or not isinstance(no_repeat_ngram, int) or (
            no_repeat_ngram < 0
        ):
            raise ValueError(f"no_repeat_ngram must be an integer >= 0, got {no_repeat_ngram!r}")
        banned = no_repeats(no_repeat_ngram) if no_repeat_ngram else None
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not a single string")
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be a positive integer, got {beam!r}")
        was_training = self.model.training
        self.model.eval()
        encoded = [encode_pair(self.tokenizer, t, "", self.settings) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].source))
        out: dict[int, str] = {}
        max_len = self.settings.max_target + 2
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([(encoded[i].source, [1]) for i in chunk]).to(model_device(self.model))
            if beam == 1:
                decoded = greedy(
                    self.model, batch.src, batch.src_lengths, max_len=max_len, banned=banned
                )
            else:
                decoded = beam_search(
                    self.model, batch.src, batch.src_lengths, beam_size=beam, max_len=max_len,
                    banned=banned,
                )
            for i, ids in zip(chunk, decoded.tokens, strict=True):
                out[i] = self.tokenizer.decode(ids, encoded[i].oovs)
        self.model.train(was_training)
        return [out[i] for i in range(len(texts))]

    def evaluate(
        self, pairs: Sequence[Pair], *, beam: int = 1, no_repeat_ngram: int = NO_REPEAT_NGRAM
    ) -> dict[str, float]:
        """ROUGE-1/2/L F1 of the summaries of ``pairs``' bodies against their summaries,
        ``copied``: the percentage of summaries holding a source word that is outside the
        vocabulary (only the pointer can produce one), and ``repeats``: the percentage that
        repeat a word bigram ("given given ... given given")."""
        bodies = [b for b, _ in pairs]
        hypotheses = self.summarize(bodies, beam=beam, no_repeat_ngram=no_repeat_ngram)
        scores = rouge_scores(hypotheses, [s for _, s in pairs])
        scores["repeats"] = 100.0 * sum(
            repeats_bigram(self.tokenizer.words(h)) for h in hypotheses
        ) / len(pairs)
        copied = 0
        for body, hypothesis in zip(bodies, hypotheses, strict=True):
            oovs = set(encode_pair(self.tokenizer, body, "", self.settings).oovs)
            copied += any(w in oovs for w in self.tokenizer.words(hypothesis))
        scores["copied"] = 100.0 * copied / len(pairs)
        return scores


def repeats_bigram(words: Sequence[str]) -> bool:
    """Whether ``words`` holds some bigram twice."""
    bigrams = list(pairwise(words))
    return len(bigrams) != len(set(bigrams))


def baseline_scores(pairs: Sequence[Pair]) -> dict[str, float]:
    """ROUGE of the lead-sentence baseline on ``pairs``."""
    return rouge_scores([lead_sentence(b) for b, _ in pairs], [s for _, s in pairs])


def prepare(settings: SummarizeSettings) -> tuple[SummarizationTask, PointerGenerator]:
    """Load the data, learn the word vocabulary on the training split (or take the vocabulary
    and weights of ``settings.init_from``), build task and model.

    Raises:
        ValueError: ``init_from`` is a run of another shape (its differing fields named).
    """
    splits = load_summary_pairs(settings.data, seed=settings.seed)
    base = Summarizer.load(settings.init_from) if settings.init_from else None
    if base is not None:
        tokenizer = base.tokenizer
    else:
        tokenizer = WordTokenizer.train(
            [text for pair in splits.train for text in pair],
            vocab_size=settings.vocab_size,
            min_frequency=settings.min_frequency,
        )
    task = SummarizationTask(splits, tokenizer, settings)
    torch.manual_seed(settings.seed)
    model = settings.build_model(tokenizer.vocab_size)
    if base is not None:
        # Continue from another run (See et al. switch coverage on for a short last phase);
        # the coverage flag may differ, every parameter shape must not.
        mine, theirs = dataclasses.asdict(model.config), dataclasses.asdict(base.model.config)
        differ = [
            k
            for k in mine
            if k not in ("coverage", "dropout", "attention_backend") and mine[k] != theirs[k]
        ]
        if differ:
            raise ValueError(
                f"init_from {settings.init_from}: its model differs in "
                + ", ".join(f"{k} ({theirs[k]!r} there, {mine[k]!r} here)" for k in differ)
            )
        model.load_state_dict(base.model.state_dict())
    return task, model


def train_summarizer(
    settings: SummarizeSettings,
    training: TrainConfig,
    run_dir: str | Path | None,
    *,
    resume: bool = False,
) -> tuple[TrainResult, Summarizer]:
    """Train as ``settings`` and ``training`` say; return the result and the best model."""
    task, model = prepare(settings)
    result = Trainer(model, task, training, run_dir=run_dir).fit(resume=resume)
    if run_dir is not None and result.best_checkpoint is not None:
        return result, Summarizer.load(result.best_checkpoint)
    return result, Summarizer(model.eval(), task.tokenizer, settings)


def write_scores(path: Path, scores: dict[str, Any]) -> None:
    """``scores`` as indented JSON, written to a temporary name and renamed."""
    from attnkit.explain._files import write_atomic

    write_atomic(path, (json.dumps(scores, indent=2) + "\n").encode("utf-8"))
