"""``attnkit.bench``: the measurement tools, the runner's output, the decoder of the KV-cache case."""

from __future__ import annotations

import json

import pytest
import torch

import attnkit
from attnkit import bench
from attnkit.bench import cases, runner
from attnkit.bench.decoder import decoder, generate_cached, generate_full
from attnkit.bench.measure import peak_bytes, time_interleaved

MIB = 1 << 20


def test_peak_bytes_counts_live_tensors_not_the_sum_of_allocations() -> None:
    def sequential() -> None:
        for _ in range(3):
            t = torch.empty(4 * MIB // 4)  # 4 MiB, freed before the next
            del t

    def together() -> list[torch.Tensor]:
        return [torch.empty(4 * MIB // 4) for _ in range(3)]

    assert 4 * MIB <= peak_bytes(sequential) < 5 * MIB
    assert 12 * MIB <= peak_bytes(together) < 13 * MIB
    existing = torch.empty(8 * MIB // 4)
    assert peak_bytes(lambda: existing + 1) < 9 * MIB  # the input itself is not counted


def test_timing_is_interleaved_and_alternates_order() -> None:
    calls: list[str] = []
    times = time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=4
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(times["a"]) == len(times["b"]) == 4
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, repeats=0)


def test_target_is_met_only_when_every_part_is() -> None:
    target = cases.Target(2, min_memory_ratio=10)
    assert target.met(2.5, 1.0, 20.0) is True
    assert target.met(2.5, 1.0, 5.0) is False
    assert target.met(1.5, 1.0, 20.0) is False
    assert target.met(None, 1.0, None) is None
    assert cases.Target(max_peak_mb=64).met(None, 10.0, None) is True
    assert "speedup ≥ 2" in target.describe()


def test_unknown_case_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"matches no benchmark case.*dense-fwd-N1024"):
        runner.select(False, ["no-such-case"])
    assert [c.name for c in runner.select(False, ["local-fwd-*"])] == [
        "local-fwd-N4096", "local-fwd-N16384",
    ]
    assert all(c.quick for c in runner.select(True, None))
    assert runner.main(["--case", "no-such-case"]) == 2


def test_run_writes_one_row_per_case_as_json(tmp_path, monkeypatch) -> None:
    def build():
        q, k, v = (torch.randn(1, 2, 256, 32) for _ in range(3))
        return lambda: attnkit.attention(q, k, v), lambda: cases.naive_attention(q, k, v)[0]

    tiny = cases.Case("tiny", "naive", build, cases.Target(0.0), quick=True)
    monkeypatch.setattr(runner, "CASES", [tiny])
    path = tmp_path / "out" / "bench.json"
    lines: list[str] = []
    rows = bench.run(quick=True, json_path=path, repeats=2, echo=lines.append)
    saved = json.loads(path.read_text())
    assert saved == rows and len(rows) == 1
    row = rows[0]
    for key in ("case", "ours_ms", "baseline", "baseline_ms", "speedup", "ours_peak_mb",
                "baseline_peak_mb"):
        assert key in row
    assert row["speedup"] == pytest.approx(row["baseline_ms"] / row["ours_ms"], rel=0.02)
    assert row["met"] is True and "tiny" in lines[-2]
    assert not list(path.parent.glob(".bench.json.*"))  # no temporary file left behind


def test_naive_baselines_compute_what_attnkit_computes() -> None:
    q, k, v = (torch.randn(1, 2, 33, 8, dtype=torch.float64) for _ in range(3))
    out, weights = cases.naive_attention(q, k, v)
    ref_out, ref_weights = attnkit.attention(q, k, v, return_weights=True, backend="reference")
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
    w_q, w_k, vec = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5)
    score = attnkit.Score("additive", w_q=w_q, w_k=w_k, v=vec)
    torch.testing.assert_close(
        cases.naive_additive(q, k, v, w_q.double(), w_k.double(), vec.double()),
        attnkit.attention(q, k, v, score=score, backend="reference"),
    )


def test_kv_cache_generation_equals_recomputing_the_prefix() -> None:
    torch.manual_seed(0)
    model = decoder(vocab=50, width=32, heads=2, hidden=64, layers=2, max_len=64)
    prompt = torch.tensor([[3, 7], [1, 2]])
    assert torch.equal(generate_cached(model, prompt, 20), generate_full(model, prompt, 20))
    with torch.no_grad():
        tokens = generate_full(model, prompt, 20)
        full = model(tokens)  # (B, T, V)
        state = model.start(tokens.shape[0])
        steps = [model.step(state, tokens[:, t : t + 1]) for t in range(tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_block_kernels_use_memory_linear_in_length() -> None:
    for kwargs in ({"backend": "chunked", "causal": True}, {"window": (64, 64)}):
        peaks = []
        for n in (2048, 8192):
            q, k, v = (torch.randn(1, 1, n, 16) for _ in range(3))
            peaks.append(peak_bytes(lambda q=q, k=k, v=v, kw=kwargs: attnkit.attention(q, k, v, **kw)))
        scores = 8192 * 8192 * 4  # a materialised (Lq, Lk) at n = 8192: 256 MiB
        assert peaks[1] < scores / 8, (kwargs, peaks)
        assert peaks[1] < 6 * peaks[0], (kwargs, peaks)  # 4x the length: linear, not 16x
