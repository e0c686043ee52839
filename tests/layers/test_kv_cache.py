"""Bounded KV caches: every policy equals the full cache while nothing is evicted; storage stays
at ``max_len`` slots; and what each policy keeps, and the outputs it gives, match a slow
reference written here (each policy's rule from FORMULAS.md, run on the full pass of the same
layer with the evicted keys masked out)."""

from __future__ import annotations

import pytest
import torch

from attnkit.layers import CachePolicy, KVCache, MultiHeadAttention, RelativeMultiHeadAttention
from attnkit.models import MusicTransformer, MusicTransformerConfig

E, H, G, B = 16, 4, 2, 2
POLICIES = ("full", "window", "sinks", "h2o")


def _layer(kind: str, backend: str = "reference") -> MultiHeadAttention:
    torch.manual_seed(0)
    if kind == "relative":
        layer = RelativeMultiHeadAttention(
            E, H, num_kv_heads=G, max_distance=6, backend=backend, dtype=torch.float64
        )
    else:
        layer = MultiHeadAttention(
            E, H, num_kv_heads=G, batch_first=True, positions=kind, backend=backend,
            dtype=torch.float64,
        )
    return layer.eval()


def _run(layer, x: torch.Tensor, cache: KVCache, chunks: list[int]) -> torch.Tensor:
    outs, t = [], 0
    with torch.no_grad():
        for n in chunks:
            outs.append(layer(x[:, t : t + n], is_causal=True, cache=cache)[0])
            t += n
    return torch.cat(outs, dim=1)  # (B, L, E)


@pytest.mark.parametrize("kind", ["none", "rope", "alibi", "relative"])
@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_equals_full_when_the_sequence_fits(kind: str, policy: str) -> None:
    layer = _layer(kind)
    x = torch.randn(B, 11, E, dtype=torch.float64)
    chunks = [3, 1, 1, 4, 1, 1]
    full = _run(layer, x, KVCache(), chunks)
    bounded = KVCache(max_len=11, policy=policy, sinks=2)
    assert torch.equal(_run(layer, x, bounded, chunks), full)
    assert len(bounded) == 11 and not bounded.evicted


@pytest.mark.parametrize("positions", ["relative", "learned", "rope"])
@pytest.mark.parametrize("policy", POLICIES)
def test_decoders_take_the_policy_and_equal_full_when_the_sequence_fits(positions, policy) -> None:
    torch.manual_seed(0)
    config = MusicTransformerConfig(
        vocab_size=20, width=16, heads=2, layers=2, ff_dim=32, dropout=0.0,
        positions=positions, max_len=32, backend="reference",
    )
    model = MusicTransformer(config).eval()
    ids = torch.randint(3, 20, (2, 12))
    with torch.no_grad():
        full, bounded = model.start(2), model.start(2, cache=CachePolicy(12, policy, sinks=2))
        expected = torch.cat([model.step(full, ids[:, t : t + 1]) for t in range(12)], dim=1)
        got = torch.cat([model.step(bounded, ids[:, t : t + 1]) for t in range(12)], dim=1)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got, model(ids))


@pytest.mark.parametrize("policy", ["window", "sinks", "h2o"])
def test_storage_stays_at_max_len_slots_however_long_generation_runs(policy: str) -> None:
    torch.manual_seed(0)
    config = MusicTransformerConfig(
        vocab_size=20, width=16, heads=2, layers=2, ff_dim=32, dropout=0.0, max_len=8
    )  # relative positions: no limit on the length
    model = MusicTransformer(config).eval()
    state = model.start(1, cache=CachePolicy(max_len=8, policy=policy, sinks=2))
    token = torch.tensor([[1]])
    with torch.no_grad():
        model.step(state, token)
        storage = [cache.keys.untyped_storage().data_ptr() for cache in state.caches]
        for _ in range(8 * 8):
            token = model.step(state, token)[:, -1:].argmax(-1)
    for cache, pointer in zip(state.caches, storage, strict=True):
        assert (len(cache), cache.capacity, cache.seen) == (8, 8, 65)
        assert cache.keys.untyped_storage().data_ptr() == pointer  # evicted in place
        assert cache.keys.untyped_storage().nbytes() == 8 * 8 * 8  # (1, 2, 8, 8) float32


# ---------------------------------------------------------------------------------------------
# The slow reference: the policies' rules on Python lists of positions per (batch, kv head).


def _evict(kept: list[int], count: int, policy: str, n: int, scores: dict[int, float],
           m: int, sinks: int, recent: float) -> list[int]:
    """The positions ``policy`` evicts from ``kept`` to make room for ``n`` new ones."""
    if policy == "window":
        return sorted(kept)[:count]
    if policy == "sinks":
        return sorted(p for p in kept if p >= sinks)[:count]
    protected = set(sorted(kept)[len(kept) - max(0, round(recent * m) - n):])
    candidates = [p for p in kept if p not in protected]
    return sorted(candidates, key=lambda p: scores[p])[:count]  # the lowest scores


def _reference(layer, x: torch.Tensor, chunks: list[int], policy: str, m: int, sinks: int,
               recent: float) -> tuple[torch.Tensor, list[list[list[int]]]]:
    """Outputs ``(B, L, E)`` of the full pass in which each query sees only the positions the
    policy keeps when it arrives, and the kept positions per (b, g) after every chunk."""
    length = x.shape[1]
    kept = [[[] for _ in range(G)] for _ in range(B)]
    scores = [[dict() for _ in range(G)] for _ in range(B)]
    hidden = torch.ones(B, H, length, length, dtype=torch.bool)  # True = not allowed
    history, t = [], 0
    for n in chunks:
        new = list(range(t, t + n))
        for b in range(B):
            for g in range(G):
                held = kept[b][g]
                count = len(held) + n - m
                if count > 0:
                    out = _evict(held, count, policy, n, scores[b][g], m, sinks, recent)
                    held[:] = [p for p in held if p not in out]
                held += new
                for h in range(g * H // G, (g + 1) * H // G):
                    for i in new:
                        for j in held:
                            hidden[b, h, i, j] = j > i
        with torch.no_grad():
            out, weights = layer(x, attn_mask=hidden.flatten(0, 1), need_weights=True,
                                 average_attn_weights=False, is_causal=kind_causal(layer))
        for b in range(B):
            for g in range(G):
                for j in kept[b][g]:
                    received = weights[b, g * H // G : (g + 1) * H // G, t : t + n, j].sum()
                    scores[b][g][j] = scores[b][g].get(j, 0.0) + float(received)
        history.append([[sorted(kept[b][g]) for g in range(G)] for b in range(B)])
        t += n
    return out, history


def kind_causal(layer) -> bool:
    return isinstance(layer, RelativeMultiHeadAttention)  # the relative layer is always causal


@pytest.mark.parametrize("kind", ["none", "rope", "alibi", "relative"])
@pytest.mark.parametrize("policy", ["window", "sinks", "h2o"])
def test_evictions_and_outputs_match_the_slow_reference(kind: str, policy: str) -> None:
    layer = _layer(kind, backend="auto")
    torch.manual_seed(1)
    chunks = [4] + [1] * 8 + [3, 1, 2] + [1] * 6 + [3, 1, 1]
    x = torch.randn(B, sum(chunks), E, dtype=torch.float64)
    m, sinks, recent = 7, 2, 0.4
    cache = KVCache(max_len=m, policy=policy, sinks=sinks, recent=recent)
    outs, kept, t = [], [], 0
    with torch.no_grad():
        for n in chunks:
            outs.append(layer(x[:, t : t + n], is_causal=True, cache=cache)[0])
            kept.append(cache.positions.sort(dim=-1).values.tolist())
            t += n
    expected, history = _reference(layer, x, chunks, policy, m, sinks, recent)
    assert kept == history
    torch.testing.assert_close(torch.cat(outs, dim=1), expected)
    assert cache.capacity == m


def test_h2o_keeps_what_attention_looks_at() -> None:
    """Keys that every query attends to survive; a window would have dropped them."""
    cache = KVCache(max_len=4, policy="h2o", recent=0.5)
    keys = torch.zeros(1, 1, 1, 2)
    for _ in range(10):
        cache.append(keys, keys)
        totals = torch.full((1, 1, len(cache)), 0.01)
        totals[..., (cache.positions[0, 0] == 1)] = 1.0  # position 1 is a heavy hitter
        cache.observe(totals)
    assert 1 in cache.positions.flatten().tolist()
    assert sorted(cache.positions.flatten().tolist())[-2:] == [8, 9]  # the recent half


def test_reorder_follows_beams() -> None:
    cache = KVCache(max_len=3, policy="h2o")
    for t in range(5):
        cache.append(torch.full((2, 1, 1, 1), float(t)), torch.zeros(2, 1, 1, 1))
        cache.observe(torch.rand(2, 1, len(cache)))
    before = cache.positions.clone()
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.positions, before[[1, 1]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"policy": "lru", "max_len": 4}, "policy must be one of"),
        ({"policy": "h2o"}, "needs max_len"),
        ({"policy": "window", "max_len": 0}, "max_len must be a positive integer"),
        ({"policy": "sinks", "max_len": 4, "sinks": 4}, "max_len must be larger"),
        ({"policy": "h2o", "max_len": 4, "recent": 1.5}, r"recent must be in \[0, 1\]"),
        ({"policy": "window", "max_len": 4, "static": True}, "static KVCache"),
    ],
)
def test_bad_policies_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        KVCache(**kwargs)


def test_overflow_and_masks_are_refused() -> None:
    full = KVCache(max_len=2)
    full.append(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="'full' cache of max_len=2 holds 2"):
        full.append(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
    with pytest.raises(ValueError, match="do not fit max_len=2"):
        KVCache(max_len=2, policy="window").append(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))
    layer = _layer("none")
    cache = KVCache(max_len=2, policy="window")
    x = torch.randn(1, 3, E, dtype=torch.float64)
    with torch.no_grad():
        layer(x[:, :2], cache=cache)
        layer(x[:, 2:], cache=cache)
        with pytest.raises(ValueError, match="cannot be used once KVCache"):
            layer(x[:, 2:], cache=cache, key_padding_mask=torch.zeros(1, 2, dtype=torch.bool))
        layer.window = (1, 0)
        with pytest.raises(ValueError, match="policy='window' keeps a window"):
            layer(x[:, 2:], cache=cache)
