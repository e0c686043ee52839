"""Padded, length-bucketed batches of translation pairs for teacher-forced training.

Shapes (``B`` pairs, ``S`` longest source, ``T`` longest target + 1)::

    src          (B, S) int64   source ids, padded with <pad> (= 0) on the right
    src_lengths  (B,)   int64   real source lengths (>= 1)
    tgt_in       (B, T) int64   <bos> y_1 .. y_n, padded
    tgt_out      (B, T) int64   y_1 .. y_n <eos>, padded (the labels; <pad> = ignore_index)
    tgt_lengths  (B,)   int64   n + 1
    index        (B,)   int64   position of each pair in the encoded list

Batches are deterministic for a seed: a ``torch.Generator`` shuffles the examples, each pool
of ``pool_batches`` batches' worth is sorted by length (so a batch holds similar lengths and
little padding), cut into batches under a size or token budget, and the batch order is
shuffled again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from attnkit.data.tokenizer import Tokenizer

__all__ = ["Batch", "BucketBatcher", "Example", "collate", "encode_pairs", "make_batches"]

Example = tuple[list[int], list[int]]  # (source ids, target ids), no <bos>/<eos>


@dataclass(frozen=True)
class Batch:
    """One padded batch; see the module docstring for shapes."""

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_lengths: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        return Batch(*(t.to(device) for t in (self.src, self.src_lengths, self.tgt_in,
                                             self.tgt_out, self.tgt_lengths, self.index)))

    @property
    def size(self) -> int:
        """Number of pairs ``B``."""
        return int(self.src.shape[0])

    @property
    def num_target_tokens(self) -> int:
        """Real (non-pad) label positions in ``tgt_out``: what a loss averages over."""
        return int(self.tgt_lengths.sum())


def encode_pairs(pairs: Sequence[tuple[str, str]], src_tokenizer: Tokenizer,
                 tgt_tokenizer: Tokenizer, *, max_src_len: int | None = None,
                 max_tgt_len: int | None = None) -> list[Example]:
    """Token ids of each ``(source, target)`` pair.

    Args:
        pairs: ``(source, target)`` strings.
        src_tokenizer, tgt_tokenizer: trained :class:`Tokenizer`.
        max_src_len, max_tgt_len: truncate longer sequences to this many tokens (the target
            limit excludes the ``<eos>``/``<bos>`` that batching adds).

    Raises:
        ValueError: a pair encodes to an empty source or target (the pair is named), or a
            limit < 1.
    """
    for name, limit in (("max_src_len", max_src_len), ("max_tgt_len", max_tgt_len)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}")
    srcs = src_tokenizer.encode_batch([p[0] for p in pairs])
    tgts = tgt_tokenizer.encode_batch([p[1] for p in pairs])
    out = []
    for i, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
        if not s or not t:
            raise ValueError(f"pair {i} {pairs[i]!r} encodes to an empty "
                             f"{'source' if not s else 'target'}")
        out.append((s[:max_src_len], t[:max_tgt_len]))
    return out


def collate(examples: Sequence[Example], *, indices: Sequence[int] | None = None,
            pad_id: int = Tokenizer.pad_id, bos_id: int = Tokenizer.bos_id,
            eos_id: int = Tokenizer.eos_id) -> Batch:
    """Pad ``examples`` into one :class:`Batch`.

    Args:
        examples: ``(source ids, target ids)`` without special tokens.
        indices: the examples' positions in the full list (default ``0..B-1``).
        pad_id, bos_id, eos_id: special ids (the :class:`Tokenizer` ones by default).

    Raises:
        ValueError: no examples, or an empty source/target (its index is named).
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    idx = list(range(len(examples))) if indices is None else list(indices)
    if len(idx) != len(examples):
        raise ValueError(f"indices has {len(idx)} entries for {len(examples)} examples")
    for i, (s, t) in zip(idx, examples, strict=True):
        if not s or not t:
            raise ValueError(f"example {i} has an empty {'source' if not s else 'target'}")
    b = len(examples)
    s_len = max(len(s) for s, _ in examples)
    t_len = max(len(t) for _, t in examples) + 1
    src = torch.full((b, s_len), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((b, t_len), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((b, t_len), pad_id, dtype=torch.long)  # (B, T)
    for row, (s, t) in enumerate(examples):
        src[row, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[row, :len(t) + 1] = torch.tensor([bos_id, *t], dtype=torch.long)
        tgt_out[row, :len(t) + 1] = torch.tensor([*t, eos_id], dtype=torch.long)
    return Batch(
        src=src,
        src_lengths=torch.tensor([len(s) for s, _ in examples], dtype=torch.long),  # (B,)
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        tgt_lengths=torch.tensor([len(t) + 1 for _, t in examples], dtype=torch.long),  # (B,)
        index=torch.tensor(idx, dtype=torch.long),  # (B,)
    )


def _check_budget(batch_size: int | None, max_tokens: int | None) -> None:
    if (batch_size is None) == (max_tokens is None):
        raise ValueError("give exactly one of batch_size or max_tokens, got "
                         f"batch_size={batch_size}, max_tokens={max_tokens}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")


def _cost(example: Example) -> int:
    return max(len(example[0]), len(example[1]) + 1)


def make_batches(examples: Sequence[Example], *, batch_size: int | None = None,
                 max_tokens: int | None = None, shuffle: bool = True, seed: int = 0,
                 epoch: int = 0, pool_batches: int = 50) -> list[Batch]:
    """Cut ``examples`` into padded batches (see the module docstring).

    Args:
        examples: from :func:`encode_pairs`.
        batch_size: at most this many pairs per batch; or
        max_tokens: at most this many padded positions per batch,
            ``B * max(S, T) <= max_tokens`` (one over-long pair still gets its own batch).
        shuffle: shuffle and bucket (training); ``False`` keeps the given order
            (evaluation), batches are then consecutive slices.
        seed, epoch: the shuffle is a function of both, so each epoch differs and a run
            can be repeated exactly.
        pool_batches: how many batches' worth of examples are sorted by length together.

    Raises:
        ValueError: not exactly one of ``batch_size`` / ``max_tokens``, a budget < 1, no
            examples, or an empty sequence.
    """
    _check_budget(batch_size, max_tokens)
    if not examples:
        raise ValueError("cannot batch an empty list of examples")
    if pool_batches < 1:
        raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
    n = len(examples)
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen).tolist()
        typical = batch_size or max(1, max_tokens // max(1, _median_cost(examples)))
        pool = max(1, typical * pool_batches)
        bucketed = []
        for start in range(0, n, pool):
            chunk = order[start:start + pool]
            bucketed.extend(sorted(chunk, key=lambda i: (_cost(examples[i]),
                                                         len(examples[i][0]))))
        order = bucketed
    else:
        gen = None
        order = list(range(n))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        cost = _cost(examples[i])
        if batch_size is not None:
            full = len(current) == batch_size
        else:
            full = bool(current) and (len(current) + 1) * max(longest, cost) > max_tokens
        if full:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, cost)
    groups.append(current)
    if gen is not None:
        groups = [groups[j] for j in torch.randperm(len(groups), generator=gen).tolist()]
    return [collate([examples[i] for i in g], indices=g) for g in groups]


def _median_cost(examples: Sequence[Example]) -> int:
    costs = sorted(_cost(e) for e in examples)
    return costs[len(costs) // 2]


class BucketBatcher:
    """An iterable of batches that reshuffles every pass (epoch), like a DataLoader.

    ``for batch in batcher`` yields the batches of :meth:`epoch_batches` for the current
    epoch, then advances the epoch; :meth:`set_epoch` jumps to an epoch (for resuming).
    ``len(batcher)`` is the number of batches of the current epoch.

    Raises (at construction): ``ValueError`` as :func:`make_batches`.
    """

    def __init__(self, examples: Sequence[Example], *, batch_size: int | None = None,
                 max_tokens: int | None = None, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50) -> None:
        _check_budget(batch_size, max_tokens)
        if not examples:
            raise ValueError("cannot batch an empty list of examples")
        self.examples = list(examples)
        self._kwargs = dict(batch_size=batch_size, max_tokens=max_tokens, shuffle=shuffle,
                            seed=seed, pool_batches=pool_batches)
        self.epoch = 0
        self._cache: tuple[int, list[Batch]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass produce the batches of ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[Batch]:
        """The batches of one epoch (deterministic for the seed)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, make_batches(self.examples, epoch=epoch, **self._kwargs))
        return self._cache[1]

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch))

    def __iter__(self) -> Iterator[Batch]:
        batches = self.epoch_batches(self.epoch)
        self.epoch += 1
        return iter(batches)
