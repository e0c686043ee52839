"""How often ``attnkit transcribe`` marks speech as unsure: the test split (in the vocabulary)
against 30 sentences of other words, said by the test split's unheard voices.

    python scripts/speech_oov.py RUN OUT_DIR     # RUN: a folder of 'attnkit train speech'

The floor is recomputed from the run's validation utterances (as training does), so runs made
before the floor was saved can be measured too. Results: docs/experiments.md.
"""
import sys
from pathlib import Path

import torch

from attnkit.data.speech import load_features, load_speech
from attnkit.data.speech.synth import draw_voices, synthesize
from attnkit.tasks.speech import Transcriber

OOV = [
    "hello world", "please call me tomorrow", "the weather is nice today",
    "where is the nearest hospital", "i would like a cup of coffee", "turn off the lights",
    "what time does the train leave", "my computer is broken again", "happy birthday to you",
    "the quick brown fox jumps over the lazy dog", "can you help me", "open the pod bay doors",
    "it is raining in london", "we need more bread and butter", "good morning everybody",
    "the meeting starts at noon", "she plays the violin beautifully", "where are my keys",
    "thank you very much", "the museum opens on sunday", "a penguin cannot fly",
    "send me the report by friday", "the soup is too hot", "music makes people happy",
    "bananas are yellow", "the river flows to the ocean", "he forgot his umbrella",
    "the kids are playing football", "read this book before bed", "elephants never forget",
]


def percent(flags: torch.Tensor) -> float:
    return 100.0 * float(flags.float().mean())


def main(run_dir: str, out: Path) -> None:
    run = Transcriber.load(run_dir)
    splits = load_speech(run.settings.data, progress=False)
    valid = load_features(splits.valid[:200], run.features, progress=False)
    test = load_features(splits.test, run.features, progress=False)
    out.mkdir(exist_ok=True, parents=True)
    voices = draw_voices("test", len(OOV), 0)
    paths = [
        synthesize(text, voice, out / f"oov{i}.wav")
        for i, (text, voice) in enumerate(zip(OOV, voices, strict=True))
    ]
    heard_valid = run.transcribe_scored(valid.features)
    floor = float(torch.quantile(torch.tensor([c for _, c in heard_valid]), 0.01))
    tested = torch.tensor([c for _, c in run.transcribe_scored(test.features)])
    other = run.transcribe_files(paths)
    others = torch.tensor([r.confidence for r in other])
    print(f"floor (1st percentile of {len(valid.features)} validation utterances): {floor:.3f}")
    print(f"test, in the vocabulary ({len(tested)}): unsure {percent(tested < floor):.1f} %, "
          f"median {float(tested.median()):.3f}")
    print(f"other words ({len(others)}): unsure {percent(others < floor):.1f} %, "
          f"median {float(others.median()):.3f}")
    for text, result in zip(OOV, other, strict=True):
        mark = "UNSURE" if result.confidence < floor else "      "
        print(f"  {result.confidence:7.3f} {mark} {text!r} -> {result.text!r}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
