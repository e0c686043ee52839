"""Each task's ``shard``: the rows of the ranks put back together are the batch."""

from __future__ import annotations

import torch

from attnkit.data.batching import collate
from attnkit.data.music.dataset import MusicWindows
from attnkit.data.speech.dataset import SpeechBatch
from attnkit.tasks.music import MusicTask
from attnkit.tasks.speech import SpeechTask
from attnkit.tasks.translate import TranslationTask

EXAMPLES = [([5, 6, 7, 8, 9], [4]), ([5], [6, 7, 8]), ([7, 7], [9, 9, 9, 9, 9]), ([6], [5])]


def test_translation_shard_is_what_collate_gives_for_those_rows() -> None:
    batch = collate(EXAMPLES)
    for rank, rows in ((0, slice(0, 2)), (1, slice(2, 4))):
        part = TranslationTask.shard(None, batch, rank, 2)  # type: ignore[arg-type]
        want = collate(EXAMPLES[rows], indices=range(rows.start, rows.stop))
        for name in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths", "index"):
            assert torch.equal(getattr(part, name), getattr(want, name)), (rank, name)


def test_music_and_speech_shards_split_rows() -> None:
    windows = MusicWindows(torch.arange(15).reshape(5, 3), torch.arange(15).reshape(5, 3) + 1)
    parts = [MusicTask.shard(None, windows, r, 2) for r in range(2)]  # type: ignore[arg-type]
    assert [p.inputs.shape[0] for p in parts] == [3, 2]
    assert torch.equal(torch.cat([p.targets for p in parts]), windows.targets)
    speech = SpeechBatch(torch.randn(3, 7, 4), torch.tensor([7, 5, 2]), torch.ones(3, 2),
                         torch.ones(3, 2), torch.arange(3))
    part = SpeechTask.shard(None, speech, 1, 2)  # type: ignore[arg-type]
    assert torch.equal(part.features, speech.features[2:]) and part.index.tolist() == [2]
