"""Speech data: espeak-ng synthesis, WAV reading, log-mel features and batching.

>>> from attnkit.data.speech import load_speech, load_features, FeatureConfig
>>> splits = load_speech("espeak:mixed")          # or folder:PATH with a transcripts.tsv
>>> train = load_features(splits.train, FeatureConfig())
"""

from attnkit.data.speech.audio import Audio, AudioError, read_wav, resample, trim_silence, write_wav
from attnkit.data.speech.corpus import (
    DEFAULT_SPEECH_SPEC,
    SpeechSplits,
    Utterance,
    describe,
    load_speech,
)
from attnkit.data.speech.dataset import (
    FeatureSet,
    SpeechBatch,
    collate_speech,
    file_features,
    load_features,
    speech_batches,
)
from attnkit.data.speech.features import FeatureConfig, log_mel, mel_filterbank
from attnkit.data.speech.text import normalize_transcript

__all__ = [
    "DEFAULT_SPEECH_SPEC",
    "Audio",
    "AudioError",
    "FeatureConfig",
    "FeatureSet",
    "SpeechBatch",
    "SpeechSplits",
    "Utterance",
    "collate_speech",
    "describe",
    "file_features",
    "load_features",
    "load_speech",
    "log_mel",
    "mel_filterbank",
    "normalize_transcript",
    "read_wav",
    "resample",
    "speech_batches",
    "trim_silence",
    "write_wav",
]
