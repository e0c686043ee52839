"""The text language model: a tiny one learns (loss falls, beats a uniform guess) and reloads
with its tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.tasks.text_lm import TextData, TextSettings, TextTask, load_text_model, train_text
from attnkit.training import TrainConfig

TINY = {"data": "num2words:de-en:max=999", "side": "target", "vocab": 60, "width": 32,
        "heads": 2, "layers": 1, "ff_dim": 64, "window": 32, "batch_size": 8, "dropout": 0.0}


def test_a_tiny_model_learns_and_reloads(tmp_path) -> None:
    settings = TextSettings(**TINY)
    data = TextData.build(settings)
    torch.manual_seed(settings.seed)
    untrained = TextTask(data, settings).evaluate(settings.build_model(data.tokenizer.vocab_size))
    result = train_text(settings, TrainConfig(max_steps=40, lr=3e-3, warmup_steps=5), tmp_path)
    model, loaded, data = load_text_model(tmp_path)
    assert loaded == settings
    nll = TextTask(data, loaded).evaluate(model)["nll"]
    assert nll == pytest.approx(result.best_metric, rel=1e-5)
    assert nll < untrained["nll"] - 1.0
    assert nll < math.log(data.tokenizer.vocab_size) - 1.0  # far better than a uniform guess


def test_windows_start_with_bos_and_predict_the_next_token() -> None:
    data = TextData.build(TextSettings(**TINY))
    task = TextTask(data, TextSettings(**TINY))
    batch = task.train_batches(0, torch.Generator().manual_seed(0))[0]
    assert bool((batch.inputs[:, 0] == 1).all())
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="side must be one of"):
        TextSettings(side="both")
    with pytest.raises(ValueError, match="positions must be one of"):
        TextSettings(positions="alibi")
