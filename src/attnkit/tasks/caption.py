"""Image captioning with soft or hard attention ("Show, Attend and Tell", Xu et al. 2015).

``train_captioner(settings, training, run_dir)`` trains :class:`~attnkit.models.captioner.
ShowAttendTell` on a caption data spec (``digits[:OPTIONS]``: strips of real handwritten
digits; ``folder:PATH``: your images with a ``captions.tsv``) with the one Trainer.
:class:`Captioner` loads a run and captions images or files (greedy or beam search),
evaluates (exact match, BLEU, chrF, WER) and shows where each word looked
(:meth:`Captioner.attend`; drawn by :func:`attnkit.explain.image.plot_image_attention`).

Losses: soft attention minimises the token cross-entropy plus the doubly stochastic
regularisation ``λ Σ_i (1 − Σ_t α_ti)²`` (averaged over the batch); hard attention minimises
the cross-entropy given the sampled cells plus REINFORCE (``HardAttention.reinforce_loss``)
with the caption's log-likelihood as the reward, divided by the mean caption length so that
both terms estimate the gradient of the same per-token objective. As in Xu et al. (§4.1), a
fraction of the hard-attention batches (``expected_fraction``) attends with the expected
context instead of a sample; and since our CNN starts untrained (Xu et al.'s was pretrained),
every batch of the first ``expected_warmup_epochs`` epochs does, so that the annotations and
the attention are informative before REINFORCE starts sampling. Which batches these are is
drawn from the epoch's generator, so a resumed run repeats them.

Shape legend: B batch, H/W image height/width, T caption steps, S grid cells, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.images import (
    CaptionData,
    CaptionedImage,
    ImageBatch,
    collate_images,
    fit_height,
    load_caption_data,
    make_batch,
    read_images,
)
from attnkit.data.tokenizer import Tokenizer
from attnkit.models import beam_search, greedy
from attnkit.models.captioner import (
    ATTENTION_KINDS,
    STRIDE,
    CaptionerConfig,
    ShowAttendTell,
    doubly_stochastic_penalty,
    grid_lengths,
)
from attnkit.tasks._settings import settings_from
from attnkit.tasks.metrics import recognition_scores, translation_scores
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


@dataclass
class CaptionSettings:
    """What to train: data, model shape, regularisation, batching (saved in each checkpoint).

    Raises:
        ValueError: an unknown attention, a non-positive size, a negative weight.
    """

    data: str = "digits"
    attention: str = "soft"
    channels: int = 32
    feature_dim: int = 128
    embed_dim: int = 64
    hidden_dim: int = 256
    attention_dim: int = 64
    dropout: float = 0.1
    doubly_stochastic: float = 0.02
    entropy_weight: float = 0.01
    baseline_decay: float = 0.9
    expected_fraction: float = 0.5
    expected_warmup_epochs: int = 3
    backend: str = "auto"
    batch_size: int = 64
    vocab_size: int = 2000
    max_caption_tokens: int = 50
    eval_examples: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"attention must be one of {list(ATTENTION_KINDS)}, got {self.attention!r}"
            )
        for name in (
            "channels",
            "feature_dim",
            "embed_dim",
            "hidden_dim",
            "attention_dim",
            "batch_size",
            "vocab_size",
            "max_caption_tokens",
            "eval_examples",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        warmup = self.expected_warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"expected_warmup_epochs must be an integer >= 0, got {warmup!r}")
        if not 0.0 <= self.expected_fraction <= 1.0:
            raise ValueError(f"expected_fraction must be in [0, 1], got {self.expected_fraction!r}")
        for name in ("doubly_stochastic", "entropy_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def model_config(self, vocab_size: int) -> CaptionerConfig:
        """The model of this shape for a vocabulary of ``vocab_size`` tokens."""
        return CaptionerConfig(
            vocab_size,
            attention=self.attention,
            channels=self.channels,
            feature_dim=self.feature_dim,
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            attention_dim=self.attention_dim,
            dropout=self.dropout,
            entropy_weight=self.entropy_weight,
            baseline_decay=self.baseline_decay,
            backend=self.backend,
        )


class CaptionTask:
    """The :class:`~attnkit.training.TrainTask` of captioning: fresh training images each epoch
    (for generated strips), the loss of the module doc, greedy exact match on validation."""

    def __init__(self, data: CaptionData, tokenizer: Tokenizer, settings: CaptionSettings) -> None:
        self.data, self.tokenizer, self.settings = data, tokenizer, settings
        self.metric = "exact"
        self.higher_is_better = True
        self.description = f"{data.name}: {data.description}; {len(data.valid):,} validation images"

    def train_batches(
        self, epoch: int, generator: torch.Generator
    ) -> list[tuple[ImageBatch, bool]]:
        """The epoch's batches, each with whether it attends with the expectation (hard
        attention; see the module doc)."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        examples = self.data.train_epoch(seed)
        if not examples:
            return []
        order = torch.randperm(len(examples), generator=generator).tolist()
        examples = [examples[i] for i in order]
        ids = self.tokenizer.encode_batch([e.caption for e in examples])
        size = self.settings.batch_size
        starts = range(0, len(examples), size)
        expected = torch.rand(len(starts), generator=generator) < self.settings.expected_fraction
        if self.settings.attention != "hard":
            expected[:] = False
        elif epoch < self.settings.expected_warmup_epochs:
            expected[:] = True
        return [
            (make_batch(examples[i : i + size], ids[i : i + size]), bool(flag))
            for i, flag in zip(starts, expected.tolist(), strict=True)
        ]

    def loss(self, model: nn.Module, step: tuple[ImageBatch, bool]) -> StepLoss:
        batch, expected = step[0].to(model_device(model)), step[1]
        hard = self.settings.attention == "hard"
        logits, alphas = model.forward_with_attention(  # type: ignore[operator]
            batch.images, batch.widths, batch.tgt_in, expected=expected
        )  # (B, T, V), (B, T, S)
        loss, tokens = sequence_cross_entropy(logits, batch.tgt_out, pad_id=Tokenizer.pad_id)
        steps = batch.tgt_out != Tokenizer.pad_id  # (B, T)
        extra = {"cross_entropy": float(loss.detach())}
        if not hard:
            lengths = grid_lengths(batch.widths, batch.images.shape[1])
            cells = torch.arange(alphas.shape[-1], device=alphas.device) < lengths[:, None]
            penalty = doubly_stochastic_penalty(alphas, steps, cells).mean()
            extra["ds"] = float(penalty.detach())
            return StepLoss(loss + self.settings.doubly_stochastic * penalty, tokens, extra)
        if expected:  # no samples were drawn: plain backpropagation through the expectation
            return StepLoss(loss, tokens, extra)
        nll = F.cross_entropy(
            logits.transpose(1, 2).float(), batch.tgt_out, ignore_index=Tokenizer.pad_id,
            reduction="none",
        )  # (B, T)
        reward = -nll.sum(dim=1).detach()  # (B,): log p(caption | sampled cells)
        reinforce = model.attention.reinforce_loss(reward)  # type: ignore[union-attr,operator]
        return StepLoss(loss + reinforce / steps.sum(dim=1).float().mean(), tokens, extra)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        captioner = Captioner(
            model,
            self.tokenizer,
            self.settings,  # type: ignore[arg-type]
            image_height=self.data.image_height,
        )
        return captioner.evaluate(self.data.valid[: self.settings.eval_examples])

    def checkpoint_extras(self) -> CheckpointExtras:
        held_out = self.data.valid + self.data.test  # drawn like the training images
        config = dataclasses.asdict(self.settings) | {
            "task": "caption",
            "data_name": self.data.name,
            "image_height": self.data.image_height,
            "max_image_width": max(e.image.shape[1] for e in held_out),
            "max_caption_words": max(len(e.caption.split()) for e in held_out),
        }
        return CheckpointExtras(config=config, tokenizer_json=self.tokenizer.to_json())


@dataclass
class CaptionAttention:
    """Where each word of a caption looked.

    Attributes:
        words: the caption's words (``T``), plus ``"<end>"`` for the step that ended it.
        image: ``(H, W)`` the image as the model saw it.
        grid: ``(T + 1, rows, cols)`` the attention weights over the grid cells.
        maps: ``(T + 1, H, W)`` the weights upsampled to the image (bilinear over the cells'
            4×4-pixel blocks), each map summing to 1 over the image's real pixels / 16.
    """

    words: list[str]
    image: np.ndarray
    grid: Tensor
    maps: Tensor


@dataclass
class FileCaption:
    """The caption of one image file, with the image as the model saw it."""

    path: Path
    caption: str
    image: np.ndarray


class Captioner:
    """A trained captioning model with its tokenizer.

    Args:
        model: a :class:`ShowAttendTell`.
        tokenizer: the caption tokenizer.
        settings: the settings it was trained with.
        image_height: the height images are resized to.
        max_image_width, max_caption_words: the widest image (at ``image_height``) and the
            longest caption of the data it was trained on, when known: a file much wider is
            refused by :meth:`caption_files` (the model would caption only part of it).
    """

    WIDTH_SLACK = 1.15  # margins and gaps vary: refuse only what is clearly wider

    def __init__(
        self,
        model: ShowAttendTell,
        tokenizer: Tokenizer,
        settings: CaptionSettings,
        *,
        image_height: int,
        max_image_width: int | None = None,
        max_caption_words: int | None = None,
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.image_height = image_height
        self.max_image_width, self.max_caption_words = max_image_width, max_caption_words

    @classmethod
    def load(cls, run: str | os.PathLike[str]) -> Captioner:
        """Load a run folder (its best checkpoint), a ``best``/``last`` pointer or a checkpoint.

        Raises:
            FileNotFoundError: nothing there.
            CheckpointError: a corrupted checkpoint (the file is named).
            ValueError: a checkpoint that is not a captioning model.
        """
        checkpoint = load_best_checkpoint(run)
        task = checkpoint.task_config
        if task.get("task") != "caption" or checkpoint.tokenizer_json is None:
            raise ValueError(f"{checkpoint.path} is not a captioning checkpoint")
        settings = settings_from(CaptionSettings, task)
        try:
            model = ShowAttendTell(CaptionerConfig(**(checkpoint.model_config or {})))
        except TypeError as error:
            raise ValueError(f"{checkpoint.path}: bad captioner configuration: {error}") from None
        checkpoint.load_into(model)
        tokenizer = Tokenizer.from_json(checkpoint.tokenizer_json)
        return cls(
            model.eval(), tokenizer, settings, image_height=int(task["image_height"]),
            max_image_width=task.get("max_image_width"),
            max_caption_words=task.get("max_caption_words"),
        )

    def prepare(self, image: np.ndarray | Tensor) -> np.ndarray:
        """An array image (bright ink on dark, values in [0, 1]) at the model's height.

        Raises:
            TypeError, ValueError: not a 2-D real array.
        """
        if isinstance(image, Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.number):
            raise TypeError(
                f"image must be a 2-D numeric array or tensor, got {type(image).__name__}"
            )
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"image must be a non-empty 2-D (H, W) array, got {image.shape}")
        return fit_height(image.astype(np.float32), self.image_height, invert="no")

    @torch.no_grad()
    def caption(
        self, images: Sequence[np.ndarray | Tensor], *, beam: int = 1, batch_size: int = 64
    ) -> list[str]:
        """Caption ``images`` (arrays ``(H, W)``, see :meth:`prepare`) greedily or with beams.

        Raises:
            TypeError, ValueError: a bad image (its index named) or ``beam`` < 1.
        """
        if isinstance(images, np.ndarray | Tensor):
            raise TypeError("images must be a sequence of 2-D images, not one array")
        prepared = []
        for i, image in enumerate(images):
            try:
                prepared.append(self.prepare(image))
            except (TypeError, ValueError) as error:
                raise type(error)(f"images[{i}]: {error}") from None
        was_training = self.model.training
        self.model.eval()
        device = model_device(self.model)
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].shape[1])
        out: dict[int, str] = {}
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                pixels, widths = collate_images([prepared[i] for i in chunk])
                pixels, widths = pixels.to(device), widths.to(device)
                max_len = self.settings.max_caption_tokens
                if beam == 1:
                    decoded = greedy(self.model, pixels, widths, max_len=max_len)
                else:
                    decoded = beam_search(
                        self.model, pixels, widths, beam_size=beam, max_len=max_len
                    )
                for i, ids in zip(chunk, decoded.tokens, strict=True):
                    out[i] = self.tokenizer.decode(ids)
        finally:
            self.model.train(was_training)
        return [out[i] for i in range(len(prepared))]

    def caption_files(
        self, paths: Sequence[str | os.PathLike[str]], *, beam: int = 1
    ) -> tuple[list[FileCaption], list[str]]:
        """Caption image files; an unreadable file, or one much wider than anything the model
        was trained on, is reported (it would be captioned only in part), the others are
        captioned.

        Returns:
            ``(captions, problems)``: a :class:`FileCaption` per captioned file, in order, and
            one message per refused file naming it.
        """
        images, problems = read_images(paths, height=self.image_height)
        if self.max_image_width is not None:
            limit = int(self.max_image_width * self.WIDTH_SLACK)
            wide = [(p, im) for p, im in images if im.shape[1] > limit]
            images = [(p, im) for p, im in images if im.shape[1] <= limit]
            longest = (
                f"; its longest caption had {self.max_caption_words} words"
                if self.max_caption_words else ""
            )
            problems += [
                f"{p}: {im.shape[1]} px wide at height {self.image_height}, wider than the "
                f"images this model was trained on (at most {self.max_image_width} px"
                f"{longest}), so it would caption only part of it; cut the picture into "
                f"parts of at most {self.max_image_width} px and caption each"
                for p, im in wide
            ]
        captions = self.caption([image for _, image in images], beam=beam) if images else []
        return [
            FileCaption(p, c, im) for (p, im), c in zip(images, captions, strict=True)
        ], problems

    def evaluate(self, examples: Sequence[CaptionedImage], *, beam: int = 1) -> dict[str, float]:
        """Exact match, BLEU and chrF (sacrebleu), and word error rate (jiwer), each 0..100.

        Raises:
            ValueError: no examples.
        """
        if not examples:
            raise ValueError("evaluate needs at least one example, got none")
        hypotheses = self.caption([e.image for e in examples], beam=beam)
        references = [e.caption for e in examples]
        wer = recognition_scores(hypotheses, references)["wer"]
        return translation_scores(hypotheses, references) | {"wer": wer}

    @torch.no_grad()
    def attention_accuracy(self, examples: Sequence[CaptionedImage], *, batch_size: int = 64
                           ) -> float:
        """How often each word looked at its own object, in percent: reading the reference
        caption, the most attended grid column (attention summed over rows) of word ``t`` must
        have its centre inside ``boxes[t]`` horizontally. Examples without one box per caption
        token are skipped.

        Raises:
            ValueError: no example has one box per caption token.
        """
        hits = total = 0
        device = model_device(self.model)
        for start in range(0, len(examples), batch_size):
            chunk = [e for e in examples[start : start + batch_size]
                     if e.boxes and len(self.tokenizer.encode(e.caption)) == len(e.boxes)]
            if not chunk:
                continue
            images = [CaptionedImage(self.prepare(e.image), e.caption) for e in chunk]
            batch = make_batch(images, self.tokenizer.encode_batch([e.caption for e in chunk]))
            grid = self.model.alignments(
                batch.images.to(device), batch.widths.to(device), batch.tgt_in.to(device)
            )  # (B, T, rows, cols)
            columns = grid.sum(dim=2).argmax(dim=-1).cpu()  # (B, T)
            for i, example in enumerate(chunk):
                for t, (_, left, _, width) in enumerate(example.boxes):
                    centre = STRIDE * int(columns[i, t]) + (STRIDE - 1) / 2
                    hits += left <= centre < left + width
                    total += 1
        if not total:
            raise ValueError("attention_accuracy needs examples with one box per caption word")
        return 100.0 * hits / total

    @torch.no_grad()
    def attend(self, image: np.ndarray | Tensor, caption: str | None = None) -> CaptionAttention:
        """Where each word of ``caption`` (default: the model's own caption) looked.

        Raises:
            TypeError, ValueError: see :meth:`prepare`.
        """
        prepared = self.prepare(image)
        caption = self.caption([prepared])[0] if caption is None else caption
        ids = self.tokenizer.encode(caption)
        words = [t.lstrip("▁") for t in self.tokenizer.tokens(caption)] + ["<end>"]
        device = model_device(self.model)
        pixels, widths = collate_images([prepared])
        tgt_in = torch.tensor([[Tokenizer.bos_id, *ids]], device=device)  # (1, T + 1)
        grid = self.model.alignments(pixels.to(device), widths.to(device), tgt_in)[0]
        height, width = prepared.shape
        maps = F.interpolate(
            grid[None].float(), scale_factor=STRIDE, mode="bilinear", align_corners=False
        )[0, :, :height, :width]  # (T + 1, H, W)
        return CaptionAttention(words, prepared, grid.cpu(), maps.cpu())


def prepare(settings: CaptionSettings) -> tuple[CaptionTask, ShowAttendTell]:
    """Load the data, train the tokenizer on the training captions, build task and model."""
    data = load_caption_data(settings.data, seed=settings.seed)
    tokenizer = Tokenizer.train(data.train_captions(), kind="word", vocab_size=settings.vocab_size)
    torch.manual_seed(settings.seed)
    model = ShowAttendTell(settings.model_config(tokenizer.vocab_size))
    return CaptionTask(data, tokenizer, settings), model


@dataclass
class CaptionRun:
    """What :func:`train_captioner` returns: the Trainer's result, the best model, the data."""

    result: TrainResult
    captioner: Captioner
    data: CaptionData


def train_captioner(
    settings: CaptionSettings,
    training: TrainConfig,
    run_dir: str | os.PathLike[str] | None,
    *,
    resume: bool = False,
) -> CaptionRun:
    """Train as ``settings`` and ``training`` say; return the result, best model and data."""
    task, model = prepare(settings)
    result = Trainer(model, task, training, run_dir=run_dir).fit(resume=resume)
    if run_dir is not None and result.best_checkpoint is not None:
        captioner = Captioner.load(result.best_checkpoint)
    else:
        captioner = Captioner(
            model.eval(), task.tokenizer, settings, image_height=task.data.image_height
        )
    return CaptionRun(result, captioner, task.data)
