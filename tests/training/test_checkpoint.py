"""Checkpoints: bit-exact round trip, checksums, config checks, atomic writes, pointers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from torch import nn

from attnkit.training import (
    CheckpointError,
    CheckpointExtras,
    TrainConfig,
    build_optimizer,
    load_checkpoint,
    save_checkpoint,
    store,
)
from tests.training._tiny import MLP, MLPConfig


class Tied(nn.Module):
    """Embedding and output tied, a float64 buffer and a bfloat16 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight
        self.scale16 = nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
        self.register_buffer("table", torch.randn(2, 2, dtype=torch.float64))


def _tokenizer_json() -> str:
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "one": 1, "two": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer.to_str()


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = Tied()
    path = save_checkpoint(tmp_path, model, step=3, extras=CheckpointExtras(
        config={"lang": "en"}, tokenizer_json=_tokenizer_json()))
    other = Tied()
    ckpt = load_checkpoint(tmp_path / "last")
    ckpt.load_into(other)
    for name, tensor in model.state_dict().items():
        loaded = other.state_dict()[name]
        assert loaded.dtype == tensor.dtype
        assert torch.equal(loaded.view(torch.uint8), tensor.view(torch.uint8)), name
    assert other.out.weight is other.embed.weight  # still tied
    # The weights file is plain safetensors, readable without attnkit.
    raw = load_file(path / "model.safetensors")
    assert torch.equal(raw["embed.weight"], model.embed.weight.detach())
    assert ckpt.task_config == {"lang": "en"}
    assert Tokenizer.from_str(ckpt.tokenizer_json).encode("two one").ids == [2, 1]
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "tokenizer.json",
                                      "trainer_state.json"}


def test_training_state_round_trip(tmp_path: Path) -> None:
    model = MLP(MLPConfig())
    optimizer, scheduler = build_optimizer(model, TrainConfig(warmup_steps=2, epochs=1), 10)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    save_checkpoint(tmp_path, model, training_state={
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "python": (1, 2, (3, None))})
    state = load_checkpoint(tmp_path).training_state()
    assert state["python"] == (1, 2, (3, None))
    assert state["scheduler"] == scheduler.state_dict()
    saved, expected = state["optimizer"], optimizer.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys()
    for index, entry in expected["state"].items():
        for key, value in entry.items():
            assert torch.equal(saved["state"][index][key], value), (index, key)


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.json", "config.json"])
def test_corrupted_file_is_named(tmp_path: Path, name: str) -> None:
    path = save_checkpoint(tmp_path, MLP(MLPConfig()))
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} is corrupted"):
        load_checkpoint(tmp_path)


def test_truncated_and_missing_files_are_named(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, MLP(MLPConfig()))
    weights = path / "model.safetensors"
    full = weights.read_bytes()
    weights.write_bytes(full[:100])
    pattern = rf"model\.safetensors is truncated: 100 bytes, the manifest says {len(full)}"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"no manifest\.json"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


def test_config_mismatch_names_the_fields(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, MLP(MLPConfig(hidden=16, dropout=0.2)))
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="hidden: checkpoint 16, model 8") as info:
        ckpt.load_into(MLP(MLPConfig(hidden=8, dropout=0.1)))
    assert "dropout: checkpoint 0.2, model 0.1" in str(info.value)
    assert "inputs" not in str(info.value)


def test_shape_mismatch_without_config_names_the_tensor(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, nn.Linear(3, 2))
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(2, 3\), model \(4, 3\)"):
        ckpt.load_into(nn.Linear(3, 4))
    with pytest.raises(CheckpointError, match=r"not in the model: \['bias'\]"):
        ckpt.load_into(nn.Linear(3, 2, bias=False))
    bigger = nn.Linear(3, 2)
    bigger.scale = nn.Parameter(torch.ones(1))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: \['scale'\]"):
        ckpt.load_into(bigger)


def test_pointers_and_garbage_collection(tmp_path: Path) -> None:
    model = MLP(MLPConfig())
    first = save_checkpoint(tmp_path, model, step=1, best=True)
    second = save_checkpoint(tmp_path, model, step=2)
    third = save_checkpoint(tmp_path, model, step=2)
    assert third.name == "step-00000002-1"
    assert store.RunDir(tmp_path).pointer("best") == first
    assert load_checkpoint(tmp_path).path == third
    assert load_checkpoint(tmp_path / "best").path == first
    assert not second.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name, third.name]


def test_failed_write_leaves_no_partial_checkpoint(tmp_path: Path, monkeypatch) -> None:
    model = MLP(MLPConfig())
    good = save_checkpoint(tmp_path, model, step=1)
    real_write = store._write_file
    calls = []

    def failing_write(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            path.write_bytes(data[: len(data) // 2])
            raise OSError("disk full (simulated)")
        real_write(path, data)

    monkeypatch.setattr(store, "_write_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, step=2)
    monkeypatch.setattr(store, "_write_file", real_write)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]
    assert load_checkpoint(tmp_path).path == good


def test_a_full_disk_names_the_checkpoint_it_could_not_write(tmp_path: Path, monkeypatch) -> None:
    # ENOSPC from write() names no file: the CLI said only "[Errno 28] No space left on device"
    import errno

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_write_file", full)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, MLP(MLPConfig()), step=7)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "checkpoints" / "step-00000007")
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_crash_before_the_pointer_moves_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    model = MLP(MLPConfig())
    good = save_checkpoint(tmp_path, model, step=1)

    def crash(self, which: str, relative: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store.RunDir, "_set_pointer", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, step=2)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "step-00000002").is_dir()  # complete, but not pointed at
    half_written = tmp_path / "checkpoints" / ".tmp-step-00000003-dead"  # a killed process
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\x00" * 10)
    assert load_checkpoint(tmp_path).path == good
    newest = save_checkpoint(tmp_path, model, step=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [newest.name]


def test_unreadable_pointer_stops_garbage_collection(tmp_path: Path) -> None:
    model = MLP(MLPConfig())
    best = save_checkpoint(tmp_path, model, step=1, best=True)
    (tmp_path / "best").write_text("../elsewhere\n")
    save_checkpoint(tmp_path, model, step=2)
    assert best.is_dir()
    with pytest.raises(CheckpointError, match="best is corrupted"):
        load_checkpoint(tmp_path / "best")
