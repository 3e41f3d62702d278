"""The benchmark suite cannot rot: ``python -m benchmarks --quick`` runs every scenario, each
proving its work (side effects, statuses, log rows), and writes a well-formed report.

No figure is asserted against a target here — the CI machine is noisy; BENCHMARKS.md holds a
real run and what it means.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmarks_run_every_scenario_and_report_it(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(report.read_text())

    assert document["ok"] is True
    assert document["quick"] is True
    assert document["baseline"]["id"] == "B1"
    assert document["baseline"]["sagas_per_s"] > 0
    results = {r["id"]: r for r in document["scenarios"]}
    assert set(results) == {s.id for s in SCENARIOS}
    for scenario in SCENARIOS:
        result = results[scenario.id]
        assert "error" not in result, result
        # S6's row times S1's workload; the number it is given is how many sagas it parks
        asked = result["extra"]["parked"] if scenario.id == "S6" else result["sagas"]
        assert asked == scenario.quick
        assert result["elapsed_s"] > 0
        assert result["sagas_per_s"] > 0
        assert result["latency_ms"]["p50"] > 0
        assert result["latency_ms"]["p99"] >= result["latency_ms"]["p50"]
        assert result["peak_rss_mib"] > 0
        assert result["ratio"] > 0
        assert result["verified"], f"{scenario.id} reports no checks"
    assert results["S6"]["extra"]["rss_per_saga_kib"] > 0
    assert results["S6"]["extra"]["s1_alone_sagas_per_s"] > 0
    assert {t["name"] for t in document["targets"]} >= {"S1 throughput", "S7 recovery",
                                                        "S8 blocking handlers"}
    for scenario in SCENARIOS:  # the table names every scenario
        assert f"\n{scenario.id} " in "\n" + done.stdout


def test_a_benchmark_whose_steps_did_not_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks are real: a service that skips its side effect fails the batch loudly."""
    from benchmarks import services
    from benchmarks._common import BenchmarkFailed
    from benchmarks.actor_runtime import FlowRun
    from sagas import Runtime

    monkeypatch.setattr(services.Second, "act", lambda self, command: {"step": command.step})
    with Runtime("memory://") as runtime:
        run = FlowRun(runtime, "bench_trivial.yaml")
        with pytest.raises(BenchmarkFailed, match="calls to service 'second'"):
            run.timed(20, "lazy")


def test_an_unknown_scenario_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "S9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown scenario 'S9'" in done.stderr
