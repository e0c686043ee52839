"""``attnkit bench`` on the command line, and the hook for the ring case."""

from __future__ import annotations

import json
import types

import torch

import attnkit
from attnkit.bench import cases, runner
from attnkit.cli import run


def _tiny_case() -> cases.Case:
    def build():
        q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
        return lambda: attnkit.attention(q, k, v), lambda: cases.naive_attention(q, k, v)[0]

    return cases.Case("tiny-dense", "naive", build, cases.Target(0.0), quick=True)


def test_help_lists_the_options(capsys) -> None:
    assert run(["bench", "--help"]) == 0
    shown = capsys.readouterr().out
    for option in ("--quick", "--json", "--case"):
        assert option in shown


def test_bench_runs_a_named_case_and_writes_json(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "CASES", [_tiny_case()])
    monkeypatch.setattr(runner, "ring_module", lambda: None)
    path = tmp_path / "bench.json"
    assert run(["bench", "--quick", "--case", "tiny-*", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert [r["case"] for r in rows] == ["tiny-dense"]
    assert rows[0]["speedup"] > 0 and rows[0]["baseline"] == "naive"
    assert "tiny-dense" in capsys.readouterr().out


def test_an_unknown_case_exits_2_naming_the_known_ones(monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "CASES", [_tiny_case()])
    monkeypatch.setattr(runner, "ring_module", lambda: None)
    assert run(["bench", "--case", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "tiny-dense" in err


def test_ring_case_runs_only_when_named_or_in_a_full_run(monkeypatch) -> None:
    calls: list[int] = []

    def ring_rows(*, repeats: int) -> list[dict]:
        calls.append(repeats)
        return [{"case": "ring-fwd", "ours_ms": 1.0, "baseline": "one process",
                 "baseline_ms": 2.0, "speedup": 2.0, "ours_peak_mb": 1.0,
                 "baseline_peak_mb": 2.0, "target": "-", "met": True}]

    fake = types.SimpleNamespace(ring_rows=ring_rows)
    monkeypatch.setattr(runner, "CASES", [])
    monkeypatch.setattr(runner, "ring_module", lambda: fake)
    assert runner.run(quick=True, echo=lambda s: None) == []  # --quick: not the ring
    rows = runner.run(quick=True, cases=["ring"], repeats=2, echo=lambda s: None)
    assert [r["case"] for r in rows] == ["ring-fwd"] and calls == [2]
    assert runner.wants_ring(False, None) and not runner.wants_ring(True, None)
    monkeypatch.setattr(runner, "ring_module", lambda: None)  # module absent: no such case
    assert not runner.wants_ring(False, ["ring"])
    assert run(["bench", "--case", "ring"]) == 2
