"""Captioning end to end on tiny data: soft attention learns, hard attention trains with
REINFORCE, checkpoints reload and resume exactly, files are captioned (bad ones named), and the
attention picture is drawn."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data.images import CaptionedImage
from attnkit.explain.image import plot_image_attention
from attnkit.tasks.caption import (
    Captioner,
    CaptionSettings,
    prepare,
    train_captioner,
)
from attnkit.training import CheckpointExtras, TrainConfig, load_checkpoint, save_checkpoint

DATA = "digits:min=2,max=2,gap=1,jitter=0,noise=0,augment=0,train=1024,valid=100,test=50"


def settings(**kw) -> CaptionSettings:
    base = dict(data=DATA, channels=8, feature_dim=32, embed_dim=16, hidden_dim=32,
                attention_dim=16, batch_size=32, dropout=0.0, eval_examples=100)
    return CaptionSettings(**(base | kw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("caption") / "run"
    s = settings(doubly_stochastic=0.0)
    config = TrainConfig(lr=3e-3, max_steps=400, log_every=25, warmup_steps=10, min_lr_ratio=1.0)
    return train_captioner(s, config, run_dir), run_dir


def test_tiny_soft_attention_captioner_learns_and_beats_the_trivial_baseline(trained) -> None:
    run, _ = trained
    losses = [h["loss"] for h in run.result.history if "loss" in h]
    assert losses[-1] < 0.6 * losses[0], losses
    common = Counter(s.caption for s in run.data.train_epoch(0)).most_common(1)[0][0]
    baseline = 100 * np.mean([s.caption == common for s in run.data.valid])
    scores = run.captioner.evaluate(run.data.valid)
    assert scores["wer"] < 75 and scores["exact"] > baseline + 5, (scores, baseline)


def test_the_best_checkpoint_reloads_and_captions_the_same(trained) -> None:
    run, run_dir = trained
    loaded = Captioner.load(run_dir)
    checkpoint = load_checkpoint(run_dir / "best")
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, checkpoint.state_dict()[name]), name
    images = [s.image for s in run.data.test[:10]]
    assert loaded.caption(images) == run.captioner.caption(images)
    assert loaded.caption(images, beam=3)[0].count(" ") <= 4
    assert loaded.image_height == 8 and loaded.settings.data == DATA


def test_a_checkpoint_of_another_task_is_refused(tmp_path) -> None:
    save_checkpoint(tmp_path / "other", torch.nn.Linear(2, 2), extras=CheckpointExtras({"x": 1}))
    with pytest.raises(ValueError, match="not a captioning checkpoint"):
        Captioner.load(tmp_path / "other")


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_resume_continues_exactly_like_a_straight_run(tmp_path, attention: str) -> None:
    s = settings(data="digits:min=2,max=3,train=64,valid=8,test=8", eval_examples=8,
                 attention=attention)
    schedule = {"lr": 3e-3, "decay_steps": 8, "log_every": 4}
    train_captioner(s, TrainConfig(max_steps=3, **schedule), tmp_path / "run")
    resumed = train_captioner(s, TrainConfig(max_steps=6, **schedule), tmp_path / "run",
                              resume=True)
    assert resumed.result.resumed_from is not None and resumed.result.steps == 6
    train_captioner(s, TrainConfig(max_steps=6, **schedule), tmp_path / "straight")
    a = load_checkpoint(tmp_path / "run" / "last").state_dict()
    b = load_checkpoint(tmp_path / "straight" / "last").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_which_hard_batches_attend_with_the_expectation() -> None:
    def flags(attention: str, epoch: int, seed: int = 0) -> list[bool]:
        task, _ = prepare(settings(attention=attention, expected_fraction=0.5,
                                   expected_warmup_epochs=2, batch_size=8))
        return [e for _, e in task.train_batches(epoch, torch.Generator().manual_seed(seed))]

    assert not any(flags("soft", 5))
    assert all(flags("hard", 0)) and all(flags("hard", 1))
    mixed = flags("hard", 2)
    assert len(mixed) == 128 and 0.3 < np.mean(mixed) < 0.7
    assert flags("hard", 2) == mixed and flags("hard", 2, seed=1) != mixed


def test_hard_attention_trains_with_reinforce() -> None:
    s = settings(attention="hard", entropy_weight=0.01, expected_fraction=0.0,
                 expected_warmup_epochs=0)
    task, model = prepare(s)
    batches = task.train_batches(0, torch.Generator().manual_seed(0))
    scorer = model.attention.scorer
    v_before = scorer.v.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for batch in batches[:30]:
        optimizer.zero_grad()
        step = task.loss(model, batch)
        step.loss.backward()
        optimizer.step()
        losses.append(step.extra["cross_entropy"])
        assert np.isfinite(step.loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert float(model.attention.baseline) < 0  # the moving average of log-likelihoods
    assert not torch.equal(scorer.v, v_before)  # REINFORCE moved the attention's score
    assert not model.attention._log_probs  # every sample was used and cleared


def test_attention_of_each_word_and_its_picture(trained, tmp_path) -> None:
    run, _ = trained
    strip = run.data.test[0]
    attention = run.captioner.attend(strip.image, strip.caption)
    words = strip.caption.split(" ")
    assert attention.words == [*words, "<end>"]
    rows, cols = -(-8 // 4), -(-strip.image.shape[1] // 4)
    assert attention.grid.shape == (len(words) + 1, rows, cols)
    torch.testing.assert_close(attention.grid.sum((1, 2)), torch.ones(len(words) + 1))
    assert attention.maps.shape == (len(words) + 1, *strip.image.shape)
    row = plot_image_attention(attention.image, attention.words, attention.maps, tmp_path / "row.png")
    grid = plot_image_attention(
        attention.image, attention.words, attention.maps, tmp_path / "grid.png", columns=2
    )
    with Image.open(row) as a, Image.open(grid) as b:
        assert a.format == "PNG" and a.width > 2 * a.height  # image + 3 panels in one row
        assert b.height > a.height  # two rows
    # A long caption wraps into rows of at most 16 inches rather than one very wide picture.
    long_words = [*words * 4, "<end>"]
    maps = attention.maps[:1].expand(len(long_words), -1, -1)
    long = plot_image_attention(attention.image, long_words, maps, tmp_path / "long.png")
    with Image.open(long) as c:
        assert c.width <= 16 * 120 and c.height > 1.5 * a.height  # rows, not one long row
    with pytest.raises(ValueError, match=r"must end in '\.png'"):
        plot_image_attention(attention.image, attention.words, attention.maps, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match=r"maps must be"):
        plot_image_attention(attention.image, attention.words[:-1], attention.maps, tmp_path / "y.png")


def test_files_are_captioned_and_unreadable_ones_named(trained, tmp_path) -> None:
    run, _ = trained
    strip = run.data.test[1]
    ink_on_paper = ((1.0 - strip.image) * 255).round().astype(np.uint8)  # dark on light
    Image.fromarray(ink_on_paper).save(tmp_path / "strip.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    results, problems = run.captioner.caption_files(
        [tmp_path / "broken.png", tmp_path / "strip.png", tmp_path / "gone.png"]
    )
    assert [r.path.name for r in results] == ["strip.png"]
    assert results[0].caption == run.captioner.caption([strip.image])[0]
    assert len(problems) == 2 and "broken.png" in problems[0] and "gone.png" in problems[1]


def test_a_strip_wider_than_any_trained_one_is_refused_not_cut(trained, tmp_path) -> None:
    run, run_dir = trained
    captioner = Captioner.load(run_dir)  # the limit comes from the checkpoint
    widest = max(e.image.shape[1] for e in run.data.valid + run.data.test)
    assert captioner.max_image_width == widest
    assert captioner.max_caption_words == max(len(e.caption.split()) for e in run.data.test)
    three = np.concatenate([e.image for e in run.data.test[:3]], axis=1)  # 9+ digits
    Image.fromarray(((1.0 - three) * 255).round().astype(np.uint8)).save(tmp_path / "long.png")
    results, problems = captioner.caption_files([tmp_path / "long.png"])
    assert results == []
    [problem] = problems
    assert problem.startswith(f"{tmp_path / 'long.png'}: {three.shape[1]} px wide")
    assert f"at most {widest} px" in problem and "cut the picture into parts" in problem


def test_bad_settings_and_images_are_named(trained) -> None:
    run, _ = trained
    with pytest.raises(ValueError, match="attention must be one of"):
        CaptionSettings(attention="glance")
    with pytest.raises(ValueError, match="doubly_stochastic must be"):
        CaptionSettings(doubly_stochastic=-1.0)
    with pytest.raises(ValueError, match=r"images\[1\]: image must be a non-empty 2-D"):
        run.captioner.caption([np.zeros((8, 8)), np.zeros((2, 8, 8))])
    with pytest.raises(TypeError, match="sequence of 2-D images"):
        run.captioner.caption(np.zeros((8, 8)))


def test_attention_accuracy_checks_each_word_against_its_box(trained, monkeypatch) -> None:
    run, _ = trained
    captioner = run.captioner
    strips = run.data.test[:4]

    def looking(at_own_box: bool):
        def alignments(images, widths, tgt_in):
            b, t = tgt_in.shape
            grid = torch.zeros(b, t, 2, -(-images.shape[2] // 4))  # (B, T, rows, cols)
            for i, strip in enumerate(strips):
                for k, (_, left, _, width) in enumerate(strip.boxes):
                    target = strip.boxes[1 - k] if not at_own_box else (0, left, 0, width)
                    grid[i, k, 1, (target[1] + target[3] // 2) // 4] = 1.0
            return grid

        return alignments

    monkeypatch.setattr(captioner.model, "alignments", looking(True))
    assert captioner.attention_accuracy(strips) == 100.0
    monkeypatch.setattr(captioner.model, "alignments", looking(False))
    assert captioner.attention_accuracy(strips) == 0.0
    monkeypatch.undo()
    assert 0.0 <= captioner.attention_accuracy(strips) <= 100.0
    with pytest.raises(ValueError, match="one box per caption word"):
        captioner.attention_accuracy([CaptionedImage(strips[0].image, "x y")])
