"""attnkit.explain.record: capturing per-head weights from attnkit attention layers.

The weights are checked against softmax(q kᵀ / √d) written out here from the layer's own
projections (Vaswani et al. 2017), not against attnkit's kernels.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

import attnkit
from attnkit.explain import Recording, record, rollout
from attnkit.layers.base import AttentionLayer


class TinyAttention(AttentionLayer):
    """A minimal attnkit attention layer: project, reshape, attnkit.attention, report."""

    def __init__(self, dim: int = 8, heads: int = 2, *, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.weight_requests = 0  # how often the kernel was asked for weights

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        return x.view(b, length, self.heads, dim // self.heads).transpose(1, 2)  # (B, H, L, D)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        memory = x if memory is None else memory
        q = self.split(self.q(x))  # (B, H, Lq, D)
        k, v = (self.split(t) for t in self.kv(memory).chunk(2, dim=-1))  # (B, H, Lk, D)
        want = self.recording
        self.weight_requests += int(want)
        result = attnkit.attention(q, k, v, causal=self.causal, return_weights=want)
        out, weights = result if want else (result, None)
        self.report(weights)
        return out.transpose(1, 2).reshape(x.shape)  # (B, Lq, dim)


class ExpectedWeights:
    """softmax(q kᵀ/√d) with a causal mask aligned bottom-right, written from the formula."""

    @staticmethod
    def of(layer: TinyAttention, x: torch.Tensor, memory: torch.Tensor | None = None):
        memory = x if memory is None else memory
        with torch.no_grad():
            q = layer.split(layer.q(x)).double()
            k = layer.split(layer.kv(memory)[..., : x.shape[-1]]).double()
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
            if layer.causal:
                lq, lk = scores.shape[-2:]
                for i in range(lq):
                    scores[..., i, lk - lq + i + 1 :] = -math.inf
            return torch.softmax(scores, dim=-1).float()


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.encoder = nn.ModuleList([TinyAttention(), TinyAttention()])
        self.cross = TinyAttention(heads=4)
        self.head = nn.Linear(8, 3)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        h = self.embed(src)
        for layer in self.encoder:
            h = h + layer(h)
        return self.head(self.cross(tgt, h))


@pytest.fixture
def model() -> Model:
    torch.manual_seed(0)
    return Model().eval()


def inputs(b: int = 2, ls: int = 5, lt: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, ls, 8, generator=g), torch.randn(b, lt, 8, generator=g)


def test_records_every_layer_by_name_with_the_published_weights(model: Model) -> None:
    src, tgt = inputs()
    with record(model) as rec:
        model(src, tgt)
    assert rec.names() == ["encoder.0", "encoder.1", "cross"]
    assert len(rec) == 3 and "cross" in rec and list(rec) == rec.names()
    h = model.embed(src)
    for name in ("encoder.0", "encoder.1"):
        layer = model.get_submodule(name)
        torch.testing.assert_close(
            rec.single(name), ExpectedWeights.of(layer, h), atol=1e-5, rtol=0
        )
        h = h + layer(h)
    cross = rec.single("cross")
    assert cross.shape == (2, 4, 3, 5)  # (B, H, Lt, Ls)
    torch.testing.assert_close(cross, ExpectedWeights.of(model.cross, tgt, h), atol=1e-5, rtol=0)
    assert not cross.requires_grad
    assert "cross" in repr(rec)


def test_recording_does_not_change_the_output_and_stops_outside_the_block(model: Model) -> None:
    src, tgt = inputs()
    before = model(src, tgt)
    assert all(
        m.attention_recorder is None for m in model.modules() if isinstance(m, AttentionLayer)
    )
    q = torch.randn(1, 2, 4, 4)
    # outside a recording the fast kernel serves the layers; inside, one that returns weights
    assert attnkit.explain_dispatch(q, q, q).kernel == "sdpa"
    with record(model) as rec:
        assert all(m.recording for m in model.modules() if isinstance(m, AttentionLayer))
        inside = model(src, tgt)
    after = model(src, tgt)
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, before)
    assert all(
        m.attention_recorder is None for m in model.modules() if isinstance(m, AttentionLayer)
    )
    assert [len(rec[n]) for n in rec.names()] == [1, 1, 1]  # the call after the block: unseen
    assert model.cross.weight_requests == 1  # no weights computed outside the block


def test_recorder_is_removed_when_the_forward_pass_raises(model: Model) -> None:
    src, _ = inputs()
    bad = torch.randn(2, 3, 5)  # wrong feature size
    with pytest.raises(RuntimeError), record(model):
        model(src, bad)
    assert all(
        m.attention_recorder is None for m in model.modules() if isinstance(m, AttentionLayer)
    )


def test_a_layer_called_per_decoding_step_gives_a_list_and_concat_gives_the_full_pass() -> None:
    torch.manual_seed(2)
    layer = TinyAttention(causal=True).eval()
    x = torch.randn(1, 6, 8)
    with record(layer) as rec:
        for t in range(6):  # one new query per step, keys 0..t (what a KV cache sees)
            layer(x[:, t : t + 1], x[:, : t + 1])
    assert rec.names() == [""]  # the root module is named "" as in named_modules()
    steps = rec[""]
    assert [tuple(w.shape) for w in steps] == [(1, 2, 1, t + 1) for t in range(6)]
    full = ExpectedWeights.of(layer, x)  # (1, 2, 6, 6), causal
    torch.testing.assert_close(rec.concat(""), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="ran 6 times"):
        rec.single("")
    with pytest.raises(ValueError, match="pass call="):
        rec.stack()
    torch.testing.assert_close(rec.stack(call=-1)[0], steps[-1])
    with pytest.raises(ValueError, match="out of range"):
        rec.stack(call=6)


def test_stack_selects_layers_of_one_kind(model: Model) -> None:
    src, tgt = inputs()
    with record(model) as rec:
        model(src, tgt)
    stacked = rec.stack("encoder.*")
    assert stacked.shape == (2, 2, 2, 5, 5)  # (N, B, H, L, L)
    torch.testing.assert_close(stacked[1], rec.single("encoder.1"))
    assert rec.stack(layer_type=TinyAttention, pattern="cross").shape == (1, 2, 4, 3, 5)
    with pytest.raises(ValueError, match="different shapes"):
        rec.stack()  # encoder self-attention and cross-attention differ
    with pytest.raises(ValueError, match="no recorded layer matches"):
        rec.stack("decoder.*")
    with pytest.raises(KeyError, match="decoder"):
        rec["decoder"]
    assert rollout(rec.stack("encoder.*")).shape == (2, 5, 5)  # (B, L, L)


def test_include_records_only_the_matching_layers(model: Model) -> None:
    src, tgt = inputs()
    with record(model, include="encoder.*", device="cpu") as rec:
        assert model.cross.attention_recorder is None
        model(src, tgt)
    assert rec.names() == ["encoder.0", "encoder.1"]
    assert model.cross.weight_requests == 0
    assert list(rec.layers()) == ["encoder.0", "encoder.1"]


def test_nested_blocks_both_record_and_restore_in_turn(model: Model) -> None:
    src, tgt = inputs()
    with record(model) as outer:
        model(src, tgt)
        with record(model.encoder) as inner:  # names are relative to the module given
            model(src, tgt)
        model(src, tgt)
    assert inner.names() == ["0", "1"]
    assert [len(inner[n]) for n in inner.names()] == [1, 1]
    assert [len(outer[n]) for n in outer.names()] == [3, 3, 3]
    torch.testing.assert_close(inner.single("0"), outer["encoder.0"][1])
    assert all(
        m.attention_recorder is None for m in model.modules() if isinstance(m, AttentionLayer)
    )


def test_blocks_exited_out_of_order_leave_no_recorder_behind(model: Model) -> None:
    src, tgt = inputs()
    first, second = record(model), record(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    model(src, tgt)  # only the second still records
    second.__exit__(None, None, None)
    assert len(first) == 0 and [len(second[n]) for n in second.names()] == [1, 1, 1]
    assert all(
        m.attention_recorder is None for m in model.modules() if isinstance(m, AttentionLayer)
    )


def test_bad_input_raises_clear_errors(model: Model) -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        record("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="holds 0 attnkit attention layer"):
        record(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="none matching include"):
        record(model, include="decoder.*")
    with pytest.raises(TypeError, match="include"):
        record(model, include=[1])  # type: ignore[list-item]
    rec = record(model)
    assert isinstance(rec, Recording)
    with rec, pytest.raises(RuntimeError, match="only once"), rec:
        pass
    with contextlib.ExitStack() as stack:
        rec2 = stack.enter_context(record(model))
        with pytest.raises(ValueError, match=r"expected \(B, H, Lq, Lk\)"):
            model.cross.report(torch.zeros(3, 5))
    assert len(rec2) == 0
