"""The bench cases of the statistics and of the bounded cache compute what their baselines
compute (the timing itself is ``attnkit bench``'s job)."""

from __future__ import annotations

import torch

from attnkit.bench.cases import CASES, _qkv, naive_attention
from attnkit.bench.cases_cache import generate, rate_at
from attnkit.bench.cases_statistics import heads_mean, key_totals, key_totals_with_sinks, top_k
from attnkit.bench.decoder import decoder
from attnkit.layers import CachePolicy


def test_the_cases_are_registered() -> None:
    names = {case.name for case in CASES}
    assert {"kv-h2o-M256-at-T4096", "stats-key-totals-N4096", "stats-topk8-N4096",
            "stats-heads-mean-N4096", "stats-key-totals-one-head-N65536",
            "stats-key-totals-sinks-N4096"} <= names


def test_statistics_cases_agree_with_their_baselines() -> None:
    ours, base = top_k(64, 8)
    (_, (values, _)), (_, top) = ours(), base()
    torch.testing.assert_close(values, top.values)
    ours, _ = key_totals(64)
    _, totals = ours()
    q, k, v = _qkv(64)  # the builders' inputs are seeded: the same again
    torch.testing.assert_close(totals, naive_attention(q, k, v)[1].sum(dim=2))
    ours, base = heads_mean(64)
    assert ours()[1].shape == base()[1].shape == (1, 64, 64)
    ours, naive = key_totals(64, heads=1)
    torch.testing.assert_close(ours()[1], naive()[1])
    ours, plain = key_totals_with_sinks(64)  # the sinks take a share of every row
    sunk, totals = ours()[1], plain()[1]
    assert sunk.shape == totals.shape and bool((sunk.sum(dim=-1) < totals.sum(dim=-1)).all())


def test_a_roomy_bounded_cache_generates_what_the_full_cache_generates() -> None:
    torch.manual_seed(0)
    model = decoder(vocab=50, width=32, heads=2, hidden=64, layers=2, max_len=64)
    first = torch.tensor([[1]])
    for policy in ("window", "sinks", "h2o"):
        roomy = model.start(1, cache=CachePolicy(max_len=48, policy=policy))
        assert torch.equal(generate(model, roomy, first, 40),
                           generate(model, model.start(1), first, 40))


def test_the_timed_calls_start_from_the_same_state_each_time(monkeypatch) -> None:
    import attnkit.bench.cases_cache as cases_cache

    monkeypatch.setattr(cases_cache, "TIMED", 8)
    monkeypatch.setattr(
        cases_cache, "decoder", lambda max_len: decoder(vocab=50, width=32, heads=2, hidden=64,
                                                        layers=2, max_len=max_len)
    )
    ours, base = rate_at(24)
    assert torch.equal(ours(), ours()) and torch.equal(base(), base())
