"""Neural machine translation with and without attention: data, model, metric and decoder.

``train_translator(settings, run_dir)`` trains RNNenc, RNNsearch (with any attention of
:data:`attnkit.models.ATTENTIONS`) or a Transformer on a data spec (``num2words:de-en``,
``bible:en-es``, ``gettext:fr``, ``tsv:PATH``) with the one Trainer; :class:`Translator` loads
a run and translates, evaluates (BLEU, chrF, exact match) and shows the source–target
alignment.

Shape legend: B batch, S source tokens, T target tokens, V target vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.data.batching import Batch, collate, encode_pairs, make_batches
from attnkit.data.tokenizer import Tokenizer
from attnkit.data.translation import DEFAULT_SPEC, Splits, load_pairs
from attnkit.models import (
    ATTENTIONS,
    RNNConfig,
    RNNSeq2Seq,
    Seq2Seq,
    Seq2SeqTransformer,
    TransformerConfig,
    beam_search,
    build_model,
    greedy,
)
from attnkit.tasks._settings import settings_from
from attnkit.tasks.metrics import translation_scores
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
from attnkit.training.parallel import shard_rows

MODEL_NAMES = ("rnnsearch", "rnnenc", "transformer")
TOKEN_KINDS = ("auto", "char", "word", "bpe")  # "auto": what the data source suggests
DEFAULT_VOCAB = 8000  # bpe/word vocabulary when neither the user nor the data says


@dataclass
class TranslateSettings:
    """What to train: data, tokenizers, model shape and batching (saved in each checkpoint).

    Raises:
        ValueError: an unknown model or attention, or a non-positive size.
    """

    data: str = DEFAULT_SPEC
    model: str = "rnnsearch"
    attention: str = "bahdanau"
    cell: str = "gru"
    embed_dim: int = 64
    hidden_dim: int = 128
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    source_tokens: str = "auto"
    target_tokens: str = "auto"
    source_vocab: int | None = None  # None: the data's suggestion, else DEFAULT_VOCAB
    target_vocab: int | None = None
    batch_size: int = 64
    label_smoothing: float = 0.1
    max_len: int = 256
    eval_examples: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        for side in ("source_tokens", "target_tokens"):
            if getattr(self, side) not in TOKEN_KINDS:
                raise ValueError(
                    f"{side} must be one of {list(TOKEN_KINDS)}, got {getattr(self, side)!r}"
                )
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {list(MODEL_NAMES)}, got {self.model!r}")
        if self.model == "rnnsearch" and self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {sorted(ATTENTIONS)}, got {self.attention!r}"
            )
        for name in ("source_vocab", "target_vocab"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        for name in (
            "embed_dim",
            "hidden_dim",
            "layers",
            "heads",
            "batch_size",
            "max_len",
            "eval_examples",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def build_model(self, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
        """A fresh model of this shape for the given vocabulary sizes."""
        if self.model == "transformer":
            return Seq2SeqTransformer(
                TransformerConfig(
                    src_vocab,
                    tgt_vocab,
                    width=self.hidden_dim,
                    heads=self.heads,
                    ff_dim=4 * self.hidden_dim,
                    encoder_layers=self.layers,
                    decoder_layers=self.layers,
                    dropout=self.dropout,
                    max_len=self.max_len + 2,
                )
            )
        return RNNSeq2Seq(
            RNNConfig(
                src_vocab,
                tgt_vocab,
                embed_dim=self.embed_dim,
                hidden_dim=self.hidden_dim,
                encoder_layers=self.layers,
                cell=self.cell,
                attention=None if self.model == "rnnenc" else self.attention,
                dropout=self.dropout,
            )
        )


class TranslationTask:
    """The :class:`~attnkit.training.TrainTask` of translation: teacher-forced cross-entropy on
    training batches; greedy-decoded BLEU/chrF/exact match on (part of) the validation split."""

    def __init__(
        self,
        splits: Splits,
        source: Tokenizer,
        target: Tokenizer,
        settings: TranslateSettings,
    ) -> None:
        self.splits, self.source, self.target, self.settings = splits, source, target, settings
        limit = settings.max_len
        self.examples = encode_pairs(
            splits.train, source, target, max_src_len=limit, max_tgt_len=limit
        )
        self.metric = "chrf"  # smooth where exact match and BLEU sit at 0 early in training
        self.higher_is_better = True
        self.description = (
            f"{splits.name}: {len(splits.train):,} training pairs, {len(splits.valid):,} "
            f"validation; {source.kind} source tokens ({source.vocab_size:,}), {target.kind} "
            f"target tokens ({target.vocab_size:,})"
        )

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[Batch]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return make_batches(
            self.examples, batch_size=self.settings.batch_size, seed=seed, epoch=epoch
        )

    def loss(self, model: nn.Module, batch: Batch) -> StepLoss:
        batch = batch.to(model_device(model))
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        loss, tokens = sequence_cross_entropy(
            logits,
            batch.tgt_out,
            pad_id=Tokenizer.pad_id,
            label_smoothing=self.settings.label_smoothing,
        )
        return StepLoss(loss, tokens)

    def shard(self, batch: Batch, rank: int, world: int) -> Batch:
        """Rank ``rank``'s rows of ``batch`` for data-parallel training over ``world``
        processes (contiguous rows, padding trimmed to them).

        Raises:
            ValueError: fewer rows than processes.
        """
        part = shard_rows(batch, rank, world)
        s, t = int(part.src_lengths.max()), int(part.tgt_lengths.max())
        return dataclasses.replace(
            part,
            src=part.src[:, :s],  # (B_r, S_r)
            tgt_in=part.tgt_in[:, :t],  # (B_r, T_r)
            tgt_out=part.tgt_out[:, :t],  # (B_r, T_r)
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        pairs = self.splits.valid[: self.settings.eval_examples]
        translator = Translator(model, self.source, self.target, self.settings)  # type: ignore[arg-type]
        return translator.evaluate(pairs)

    def checkpoint_extras(self) -> CheckpointExtras:
        tokenizers = {"source": self.source.to_json(), "target": self.target.to_json()}
        config = dataclasses.asdict(self.settings) | {"data_name": self.splits.name}
        return CheckpointExtras(config=config, tokenizer_json=json.dumps(tokenizers))


@dataclass
class Alignment:
    """Where each target token looked: ``weights (T, S)`` over the source tokens."""

    source_tokens: list[str]
    target_tokens: list[str]
    weights: Tensor


class Translator:
    """A trained translation model with its tokenizers."""

    def __init__(
        self, model: Seq2Seq, source: Tokenizer, target: Tokenizer, settings: TranslateSettings
    ) -> None:
        self.model, self.source, self.target, self.settings = model, source, target, settings

    @classmethod
    def load(cls, run: str | Path) -> Translator:
        """Load a run folder (its best checkpoint), a ``best``/``last`` pointer or a checkpoint.

        Raises:
            FileNotFoundError: nothing there.
            CheckpointError: a corrupted checkpoint (the file is named).
            ValueError: a checkpoint that is not a translation model.
        """
        checkpoint = load_best_checkpoint(run)
        task = checkpoint.task_config
        if "model" not in task or checkpoint.tokenizer_json is None:
            raise ValueError(f"{checkpoint.path} is not a translation checkpoint")
        settings = settings_from(TranslateSettings, task)
        tokenizers = json.loads(checkpoint.tokenizer_json)
        source = Tokenizer.from_json(tokenizers["source"])
        target = Tokenizer.from_json(tokenizers["target"])
        model = build_model(settings.model, checkpoint.model_config or {})
        checkpoint.load_into(model)
        return cls(model.eval(), source, target, settings)

    def _encode(self, texts: Sequence[str]) -> Batch:
        ids = [self.source.encode(t)[: self.settings.max_len] or [Tokenizer.unk_id] for t in texts]
        return collate([(s, [Tokenizer.eos_id]) for s in ids]).to(model_device(self.model))

    @torch.no_grad()
    def translate(self, texts: Sequence[str], *, beam: int = 1, batch_size: int = 64) -> list[str]:
        """Translate ``texts`` with greedy decoding (``beam=1``) or beam search.

        Raises:
            ValueError: ``texts`` is a bare string or ``beam`` < 1.
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not a single string")
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self._encode([texts[i] for i in chunk])
            max_len = int(batch.src_lengths.max()) * 2 + 10
            if beam == 1:
                decoded = greedy(self.model, batch.src, batch.src_lengths, max_len=max_len)
            else:
                decoded = beam_search(
                    self.model, batch.src, batch.src_lengths, beam_size=beam, max_len=max_len
                )
            for i, ids in zip(chunk, decoded.tokens, strict=True):
                out[i] = self.target.decode(ids)
        self.model.train(was_training)
        return [out[i] for i in range(len(texts))]

    def evaluate(self, pairs: Sequence[tuple[str, str]], *, beam: int = 1) -> dict[str, float]:
        """BLEU, chrF and exact match (0..100) of the translations of ``pairs``' sources."""
        hypotheses = self.translate([s for s, _ in pairs], beam=beam)
        return translation_scores(hypotheses, [t for _, t in pairs])

    @torch.no_grad()
    def cross_attention(self, text: str, translation: str) -> dict[str, Tensor]:
        """Every cross-attention layer's weights ``(1, H, T + 1, S)`` while the model reads
        ``translation`` after ``<bos>`` (row ``t`` is where it looked to write target token
        ``t``, the last row ``</s>``), first layer first.

        Raises:
            ValueError: the model has no attention (RNNenc).
        """
        from attnkit.explain import record

        batch = self._encode([text])
        tgt = [Tokenizer.bos_id, *self.target.encode(translation)]
        tgt_in = torch.tensor([tgt], device=batch.src.device)
        layers = _cross_attention_layers(self.model)
        with record(self.model, include=layers) as rec:
            self.model(batch.src, batch.src_lengths, tgt_in)
        return {name: rec.concat(name) for name in layers}

    def align(self, text: str, translation: str | None = None) -> Alignment:
        """The cross-attention of each target token over the source tokens (last layer, heads
        averaged) while the model reads ``translation`` (default: its own translation)."""
        translation = self.translate([text])[0] if translation is None else translation
        last = list(self.cross_attention(text, translation).values())[-1]
        weights = last[0].mean(0)  # (T + 1, S)
        return Alignment(
            source_tokens=_readable(self.source.tokens(text))[: weights.shape[1]],
            target_tokens=[*_readable(self.target.tokens(translation)), "</s>"],
            weights=weights,
        )


def _readable(tokens: list[str]) -> list[str]:
    """Tokens for people: without the tokenizer's word-start marker."""
    return [t.replace("▁", "") or t for t in tokens]


def _cross_attention_layers(model: nn.Module) -> list[str]:
    if isinstance(model, Seq2SeqTransformer):
        return [f"decoder_layers.{i}.cross_attn" for i in range(len(model.decoder_layers))]
    if isinstance(model, RNNSeq2Seq) and model.attention is not None:
        return ["attention"]
    raise ValueError("this model has no attention to show (RNNenc links only by its summary)")


def prepare(settings: TranslateSettings) -> tuple[TranslationTask, Seq2Seq]:
    """Load the data, train the tokenizers on the training split, build task and model."""
    splits = load_pairs(settings.data, seed=settings.seed)
    source = _tokenizer(
        [s for s, _ in splits.train], settings.source_tokens, settings.source_vocab,
        splits.src_tokenizer_kind, splits.src_vocab_size,
    )
    target = _tokenizer(
        [t for _, t in splits.train], settings.target_tokens, settings.target_vocab,
        splits.tgt_tokenizer_kind, splits.tgt_vocab_size,
    )
    task = TranslationTask(splits, source, target, settings)
    torch.manual_seed(settings.seed)
    model = settings.build_model(source.vocab_size, target.vocab_size)
    return task, model


def _tokenizer(
    texts: list[str], kind: str, vocab: int | None, data_kind: str, data_vocab: int | None
) -> Tokenizer:
    """A tokenizer trained on the distinct ``texts`` (a data set that repeats short examples
    to train them more must not skew the vocabulary towards them): the data's suggested kind
    and size where the settings say ``auto`` / ``None`` (its size only goes with its kind)."""
    if kind == "auto":
        kind, suggested = data_kind, data_vocab
    else:
        suggested = data_vocab if kind == data_kind else None
    size = vocab if vocab is not None else suggested or DEFAULT_VOCAB
    return Tokenizer.train(list(dict.fromkeys(texts)), kind=kind, vocab_size=size)


def train_translator(
    settings: TranslateSettings,
    training: TrainConfig,
    run_dir: str | Path | None,
    *,
    resume: bool = False,
) -> tuple[TrainResult, Translator]:
    """Train as ``settings`` and ``training`` say; return the result and the best model."""
    task, model = prepare(settings)
    result = Trainer(model, task, training, run_dir=run_dir).fit(resume=resume)
    if run_dir is not None and result.best_checkpoint is not None:
        return result, Translator.load(result.best_checkpoint)
    return result, Translator(model.eval(), task.source, task.target, settings)
