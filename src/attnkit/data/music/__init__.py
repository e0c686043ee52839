"""Music data: the Bach chorales of music21's corpus as event sequences.

>>> from attnkit.data.music import MusicData, train_windows
>>> data = MusicData.build(voices="satb")      # parsed once, then cached; split by tune
>>> data.vocab.name(int(data.train[0][1][1]))  # '|' (a barline), 'S:D5', 'd8', '+4', ...
"""

from attnkit.data.music.chorales import (
    STEPS_PER_QUARTER,
    VOICES,
    Chorale,
    ChoraleSet,
    load_chorales,
    parse_chorale,
    parse_chorales,
)
from attnkit.data.music.dataset import (
    TRANSPOSITIONS,
    MusicData,
    MusicWindows,
    eval_windows,
    train_windows,
)
from attnkit.data.music.events import EventVocabulary, Piece
from attnkit.data.music.export import infer_meter, midi_bytes, musicxml_bytes, to_score

__all__ = [
    "STEPS_PER_QUARTER",
    "TRANSPOSITIONS",
    "VOICES",
    "Chorale",
    "ChoraleSet",
    "EventVocabulary",
    "MusicData",
    "MusicWindows",
    "Piece",
    "eval_windows",
    "infer_meter",
    "load_chorales",
    "midi_bytes",
    "musicxml_bytes",
    "parse_chorale",
    "parse_chorales",
    "to_score",
    "train_windows",
]
