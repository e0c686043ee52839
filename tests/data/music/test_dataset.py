"""Splitting by tune, transposition for training only, and windows that cover every event."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.errors import DataError
from attnkit.data.music import ChoraleSet, MusicData, eval_windows, train_windows
from attnkit.data.music.dataset import TRANSPOSITIONS, tune_key
from tests.data.music._tiny import tiny_chorales, two_bar_chorale


def data_with_repeated_tunes() -> MusicData:
    pieces = [two_bar_chorale(f"test/tune-a-{i}", shift=0) for i in range(3)]  # one tune, 3 keys…
    pieces += [two_bar_chorale(f"test/tune-a-up-{i}", shift=2) for i in range(2)]  # …transposed
    pieces += list(tiny_chorales().chorales)
    return MusicData.build(ChoraleSet(pieces), valid=0.2, test=0.2)


def test_settings_of_one_tune_share_a_split() -> None:
    data = data_with_repeated_tunes()
    where = {name: split for split in ("train", "valid", "test") for name, _ in getattr(data, split)}
    assert len({where[n] for n in where if n.startswith("test/tune-a")}) == 1
    assert tune_key(two_bar_chorale(shift=0)) == tune_key(two_bar_chorale(shift=2))
    assert all(getattr(data, s) for s in ("train", "valid", "test"))


@pytest.mark.parametrize("length", [1, 7, 64])
def test_eval_windows_predict_every_event_once(length: int) -> None:
    data = MusicData.build(tiny_chorales())
    windows = eval_windows(data.valid, length=length, batch_size=3)
    assert sum(b.events for b in windows) == sum(len(ids) - 1 for _, ids in data.valid)
    for batch in windows:  # each target is the next input (where the window has one)
        real = (batch.targets[:, :-1] != 0) & (batch.inputs[:, 1:] != 0)
        assert torch.equal(batch.inputs[:, 1:][real], batch.targets[:, :-1][real])
    # and, joined back, the windows of each chorale are the chorale
    joined = torch.cat([b.targets[b.targets != 0] for b in windows])
    assert torch.equal(joined, torch.cat([ids[1:] for _, ids in data.valid]))


def test_training_epoch_has_every_key_and_every_event_once_per_key() -> None:
    data = MusicData.build(tiny_chorales())
    gen = torch.Generator().manual_seed(0)
    windows = train_windows(data, length=50, batch_size=4, generator=gen)
    want = sum(len(ids) - 1 for _, ids in data.train) * len(TRANSPOSITIONS)
    assert sum(b.events for b in windows) == want
    # a window's pitches, undone by each shift, match the untransposed chorale somewhere
    plain = train_windows(data, length=50, batch_size=4, generator=gen, transpose=False)
    assert sum(b.events for b in plain) == want // len(TRANSPOSITIONS)
    pitch = data.vocab.pitch_base
    lowest = min(int(b.inputs[b.inputs >= pitch].min()) for b in windows)
    lowest_plain = min(int(b.inputs[b.inputs >= pitch].min()) for b in plain)
    assert lowest == lowest_plain - 5  # transposed down by 5 semitones too


def test_same_generator_same_batches() -> None:
    data = MusicData.build(tiny_chorales())
    a = train_windows(data, length=40, batch_size=4, generator=torch.Generator().manual_seed(3))
    b = train_windows(data, length=40, batch_size=4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, b, strict=True))


def test_validation_is_not_transposed() -> None:
    data = MusicData.build(tiny_chorales())
    names = {name for name, _ in data.valid}
    for chorale in tiny_chorales().chorales:
        if chorale.name in names:
            ids = dict(data.valid)[chorale.name]
            assert ids.tolist() == data.vocab.encode(chorale)


def test_bad_arguments_raise() -> None:
    with pytest.raises(DataError, match="limit"):
        MusicData.build(tiny_chorales(), limit=2)
    with pytest.raises(DataError, match="valid"):
        MusicData.build(tiny_chorales(), valid=0.7)
    with pytest.raises(ValueError, match="length"):
        eval_windows([], length=0, batch_size=1)
