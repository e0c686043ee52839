"""The music models: KV-cached generation equals the full pass, causality, configuration."""

from __future__ import annotations

import pytest
import torch

from attnkit.layers.relative import RelativeMultiHeadAttention
from attnkit.models.music_transformer import (
    MusicLSTM,
    MusicLSTMConfig,
    MusicTransformer,
    MusicTransformerConfig,
    build_music_model,
)

V = 40


def transformer(positions: str, max_len: int = 16) -> MusicTransformer:
    config = MusicTransformerConfig(
        V, width=16, heads=2, layers=2, ff_dim=32, dropout=0.0, positions=positions,
        max_len=max_len,
    )
    return MusicTransformer(config).double().eval()


def stepwise(model, ids: torch.Tensor, first: int) -> torch.Tensor:
    state = model.start(ids.shape[0])
    with torch.no_grad():
        parts = [model.step(state, ids[:, :first])]
        parts += [model.step(state, ids[:, t : t + 1]) for t in range(first, ids.shape[1])]
    assert state.length == ids.shape[1]
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("positions", ["relative", "sinusoidal", "learned", "rope"])
@pytest.mark.parametrize("first", [1, 5])
def test_kv_cached_generation_equals_the_full_pass(positions: str, first: int) -> None:
    model = transformer(positions)
    ids = torch.randint(1, V, (2, 12 if positions == "learned" else 23))  # relative: past max_len
    with torch.no_grad():
        full = model(ids)
    torch.testing.assert_close(stepwise(model, ids, first), full)


def test_lstm_steps_equal_the_full_pass() -> None:
    model = MusicLSTM(MusicLSTMConfig(V, width=16, layers=2, dropout=0.0)).double().eval()
    ids = torch.randint(1, V, (3, 9))
    with torch.no_grad():
        full = model(ids)
    torch.testing.assert_close(stepwise(model, ids, 2), full)


@pytest.mark.parametrize("positions", ["relative", "sinusoidal", "rope"])
def test_the_future_does_not_leak(positions: str) -> None:
    model = transformer(positions)
    ids = torch.randint(1, V, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % V
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])
        assert not torch.allclose(model(ids)[:, 6:], model(changed)[:, 6:])


def test_relative_model_uses_relative_attention_and_no_position_embedding() -> None:
    relative, absolute = transformer("relative"), transformer("sinusoidal")
    assert all(isinstance(b.self_attn, RelativeMultiHeadAttention) for b in relative.blocks)
    assert not any(isinstance(b.self_attn, RelativeMultiHeadAttention) for b in absolute.blocks)
    assert relative.embed.positions == "none" and absolute.embed.positions == "sinusoidal"
    tables = [b.self_attn.relative.shape for b in relative.blocks]
    assert tables == [(2, 16, 8)] * 2  # (heads, max_len distances, head dim) per layer


def test_first_loss_is_near_log_vocabulary() -> None:
    # tied embeddings at PyTorch's default N(0, 1) start near 25 nats here; N(0, 1/E) near
    # log V (plus the tied input token's own affinity)
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig(300, width=64, heads=2, layers=1))
    ids, targets = torch.randint(3, 300, (4, 32)), torch.randint(3, 300, (4, 32))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(ids).reshape(-1, 300), targets.reshape(-1))
    assert float(loss) < torch.log(torch.tensor(300.0)) + 2.5


def test_bad_configuration_and_input_raise() -> None:
    with pytest.raises(ValueError, match="positions"):
        MusicTransformerConfig(V, positions="alibi")
    with pytest.raises(ValueError, match="divide"):
        MusicTransformerConfig(V, width=10, heads=4)
    with pytest.raises(ValueError, match="layers"):
        MusicLSTMConfig(V, layers=0)
    with pytest.raises(ValueError, match="ids must lie"):
        transformer("relative")(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match="ids must be integer"):
        transformer("relative")(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="model must be one of"):
        build_music_model("gru", {})
    with pytest.raises(ValueError, match="bad configuration"):
        build_music_model("lstm", {"vocab_size": V, "heads": 2})
