"""``python -m benchmarks [--quick] [--json PATH] [--only S1,S3,...] [--markdown]``

Runs every scenario (or those ``--only`` names, plus the bare-pykka baseline ``B1``), each in
its own subprocess, prints one table — scenario, sagas/s, p50 / p99 latency, peak RSS, ratio to
``B1`` of this same run — then the issue's targets with the figures that meet or miss them, and
writes everything as JSON (default ``benchmarks/results.json``).

Exit status: 0 when every scenario ran and proved its work, 1 when one failed (its error is
shown), 2 on a usage error. No target is asserted: they are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sagas.engine.gc_tuning import THROUGHPUT_THRESHOLDS

from .scenarios import BASELINE, Scenario, select

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, Any]:
    """Where the run happened (the figures only compare within one machine and one run)."""
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pykka": version("pykka"),
        "transitions": version("transitions"),
        "sqlite": sqlite3.sqlite_version,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run_child(scenario: Scenario, quick: bool, timeout: float,
              default_gc: bool = False) -> dict[str, Any]:
    """Run one scenario in a subprocess; its result, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="sagactor-bench-") as tmp:
        out = Path(tmp) / "result.json"
        err = Path(tmp) / "stderr.txt"
        command = [sys.executable, "-m", "benchmarks.child", scenario.id, "--out", str(out)]
        if quick:
            command.append("--quick")
        if default_gc:
            command.append("--default-gc")
        begin = time.perf_counter()
        with open(err, "w") as stderr:
            child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=stderr, start_new_session=True)
            try:
                code = child.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # the child and any process it started
                child.wait()
                code = None
        wall = round(time.perf_counter() - begin, 2)
        tail = err.read_text(errors="replace").strip()[-3000:]
        if code is None:
            return {"id": scenario.id, "title": scenario.title, "error":
                    f"timed out after {timeout:.0f}s", "stderr": tail, "wall_s": wall}
        if code != 0 or not out.exists():
            return {"id": scenario.id, "title": scenario.title,
                    "error": f"exit status {code}", "stderr": tail, "wall_s": wall}
        result: dict[str, Any] = json.loads(out.read_text())
        result["wall_s"] = wall
        return result


# -- targets (issue 6) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    target: str
    needs: tuple[str, ...]
    measure: Callable[[dict[str, dict[str, Any]]], tuple[float, str]]
    met: Callable[[float], bool]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _ran(result: dict[str, Any]) -> bool:
    """Whether a scenario ran and proved its work (neither failed nor skipped)."""
    return "error" not in result and "skipped" not in result


def _sps(results: dict[str, dict[str, Any]], sid: str) -> float:
    return float(results[sid]["sagas_per_s"])


def _ratio(sid: str) -> Callable[[dict[str, dict[str, Any]]], tuple[float, str]]:
    def measure(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
        value = float(results[sid]["ratio"])
        return value, f"{value:.2f}× ({_sps(results, sid):,.0f} sagas/s)"
    return measure


def _s2_vs_s1(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    value = _sps(results, "S2") / _sps(results, "S1")
    return value, f"{value:.0%} of S1"


def _s1_p99(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    s1 = results["S1"]
    value = float(s1["latency_ms"]["p99"])
    return value, f"p99 {value:.1f} ms (mean in flight {s1['in_flight']['mean']:.0f})"


def _s5(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    value = _sps(results, "S5")
    batch = results["S5"]["extra"].get("batch_sagas_per_s", 0)
    return value, f"{value:,.0f} sagas/s (run_batch {batch:,.0f}/s)"


def _s6_memory(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    extra = results["S6"]["extra"]
    value = float(extra["rss_per_saga_kib"])
    return value, f"{value:.2f} KiB per saga ({extra['parked']:,} parked)"


def _s6_waiting(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    extra = results["S6"]["extra"]
    value = float(extra["s1_waiting_ratio"])
    return value, (f"{value:.0%} ({_sps(results, 'S6'):,.0f} vs "
                   f"{extra['s1_alone_sagas_per_s']:,.0f} sagas/s alone)")


def _s7(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    s7 = results["S7"]
    per_10k = float(s7["elapsed_s"]) * 10_000 / int(s7["sagas"])
    return per_10k, f"{s7['sagas']:,} in {s7['elapsed_s']:.2f} s (≈ {per_10k:.1f} s per 10,000)"


def _s10(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    extra = results["S10"]["extra"]
    value = float(extra["with_vs_without"])
    return value, (f"{value:.0%} ({extra['with_sagas_per_s']:,.0f} vs "
                   f"{extra['without_sagas_per_s']:,.0f} sagas/s)")


def _s8(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    value = _sps(results, "S8c") / _sps(results, "S8b")
    return value, f"{value:.2f}× ({_sps(results, 'S8c'):,.0f} vs {_sps(results, 'S8b'):,.0f}/s)"


TARGETS: tuple[Target, ...] = (
    # issue 15 (a lean core) set the throughput, latency and S5 rows; the others are issue 6's
    Target("S1 throughput", "≥ 1.5× baseline", ("S1",), _ratio("S1"), lambda v: v >= 1.5),
    Target("S2 throughput", "≥ 60% of S1", ("S1", "S2"), _s2_vs_s1, lambda v: v >= 0.6),
    Target("S3 throughput", "≥ 1.0× baseline", ("S3",), _ratio("S3"), lambda v: v >= 1.0),
    Target("S4 throughput", "≥ 0.8× baseline", ("S4",), _ratio("S4"), lambda v: v >= 0.8),
    Target("S1 latency", "p99 ≤ 25 ms at 200 in flight", ("S1",), _s1_p99, lambda v: v <= 25),
    Target("S5 throughput", "≥ 25,000 sagas/s", ("S5",), _s5, lambda v: v >= 25_000),
    Target("S6 memory", "≤ 8 KiB RSS per in-flight saga", ("S6",), _s6_memory,
           lambda v: v <= 8),
    Target("S6 throughput", "S1 with them waiting ≥ 70% of S1 alone", ("S6",), _s6_waiting,
           lambda v: v >= 0.7),
    Target("S7 recovery", "10,000 resumed and finished in ≤ 2 s", ("S7",), _s7,
           lambda v: v <= 2),
    Target("S8 blocking handlers", "instances: 8 ≥ 6× instances: 1", ("S8b", "S8c"), _s8,
           lambda v: v >= 6),
    Target("S10 event bus", "a subscriber sleeping 10 ms per event: ≥ 90% of the batch "
           "without it", ("S10",), _s10, lambda v: v >= 0.9),
    # issue 16 (several orchestrators on one PostgreSQL)
    Target("S11 1 member", "≥ 0.2× baseline (S3's workload on PostgreSQL)", ("S11",),
           _ratio("S11"), lambda v: v >= 0.2),
    # issue 17 (services in workers over Redis Streams)
    Target("S12 remote on SQLite", "≥ 0.15× baseline (S3's workload, every service in 2 "
           "workers)", ("S12",), _ratio("S12"), lambda v: v >= 0.15),
)


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target whose scenarios ran successfully: the figure, and whether it is met."""
    rows = []
    for target in TARGETS:
        needs = (*target.needs, BASELINE) if "baseline" in target.target else target.needs
        if not all(sid in results and _ran(results[sid]) for sid in needs):
            continue
        value, text = target.measure(results)
        rows.append({"name": target.name, "target": target.target, "value": round(value, 4),
                     "measured": text, "met": bool(target.met(value))})
    return rows


# -- the table ---------------------------------------------------------------------------------
def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _notes(result: dict[str, Any]) -> str:
    extra = result.get("extra") or {}
    notes = []
    if result["id"] == "S5":
        notes.append(f"run_batch of {extra['batch_size']}: {extra['batch_sagas_per_s']:,.0f}/s")
    if result["id"] == "S6":
        notes.append(f"{extra['parked']:,} parked at {extra['rss_per_saga_kib']:.2f} KiB each "
                     f"(started at {extra['park_rate_per_s']:,.0f}/s); S1 alone "
                     f"{extra['s1_alone_sagas_per_s']:,.0f}/s, waiting "
                     f"{extra['s1_waiting_ratio']:.0%} of it")
    if result["id"] == "S7":
        notes.append(f"recover() returned after {extra['recover_call_s']:.2f} s; store built "
                     f"in {extra['build_s']:.1f} s")
    if result["id"] == "S10":
        notes.append(f"without the subscriber {extra['without_sagas_per_s']:,.0f}/s: "
                     f"{extra['with_vs_without']:.0%} of it; the subscriber had "
                     f"{extra['delivered_by_end']:,} of {extra['events']:,} events by the end")
    if result["id"] == "S11" and "members" in extra:
        notes.append(_s11_notes(result))
    if result["id"] == "S12" and "variants" in extra:
        notes.append(_s12_notes(result))
    collector = extra.get("gc")
    if collector:
        notes.append(f"GC {collector['share']:.0%} of the time, longest pause "
                     f"{collector['longest_ms']:.0f} ms")
    in_flight = result.get("in_flight")
    if in_flight:
        notes.append(f"in flight ≈ {in_flight['mean']:.0f} (max {in_flight['max']:.0f} "
                     f"of {in_flight['limit']:.0f})")
    return "; ".join(notes)


def _s11_notes(result: dict[str, Any]) -> str:
    """2 members against 1, and where the CPU of each run went (µs per saga, per process)."""
    extra = result["extra"]
    one, two = extra["members"]["1"], extra["members"]["2"]
    ratio = result.get("ratio")
    two_ratio = "" if ratio is None else (
        f", {ratio * two['sagas_per_s'] / one['sagas_per_s']:.2f}× B1")

    def cpu(run: dict[str, Any]) -> str:
        members = " + ".join(f"{us:,.0f}" for us in run["member_cpu_us_per_saga"])
        return f"member {members}, PostgreSQL {run['postgres_cpu_us_per_saga']:,.0f}"

    runs = extra["rounds"]
    return (f"2 members {two['sagas_per_s']:,.0f}/s{two_ratio} ({extra['two_vs_one']:.2f}× 1 "
            f"member); median of {runs} run{'s' if runs != 1 else ''} each; CPU µs/saga: "
            f"1 member: {cpu(one)}; 2 members: {cpu(two)}")


def _s12_notes(result: dict[str, Any]) -> str:
    """PostgreSQL against SQLite, and where the CPU of each went (µs per saga, per process)."""
    extra = result["extra"]
    sqlite, pg = extra["variants"]["sqlite"], extra["variants"].get("postgres")
    ratio = result.get("ratio")

    def cpu(run: dict[str, Any]) -> str:
        us = run["cpu_us_per_saga"]
        parts = [f"orchestrator {' + '.join(f'{x:,.0f}' for x in us['orchestrators'])}",
                 f"workers {' + '.join(f'{x:,.0f}' for x in us['workers'])}",
                 f"redis {us['redis']:,.0f}"]
        if "postgres" in us:
            parts.append(f"PostgreSQL {us['postgres']:,.0f}")
        return ", ".join(parts)

    runs = extra["rounds"]
    if pg is None:
        postgres = f"PostgreSQL skipped: {extra['postgres']['skipped']}"
    else:
        postgres = f"PostgreSQL, 2 members: {pg['sagas_per_s']:,.0f}/s" + (
            "" if ratio is None else
            f", {ratio * pg['sagas_per_s'] / sqlite['sagas_per_s']:.2f}× B1")
    return (f"{postgres}; {extra['workers']} workers (concurrency "
            f"{extra['worker_concurrency']}), redis appendfsync "
            f"{extra['redis']['appendfsync']}; median of {runs} run{'s' if runs != 1 else ''}"
            f" each; CPU µs/saga: SQLite: {cpu(sqlite)}"
            + ("" if pg is None else f"; PostgreSQL: {cpu(pg)}"))


HEADER = ("id", "scenario", "sagas", "sagas/s", "p50 ms", "p99 ms", "peak RSS MiB", "× pykka",
          "notes")


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row of text cells per scenario."""
    rows: list[tuple[str, ...]] = []
    for r in results:
        if "error" in r:
            rows.append((r["id"], r["title"], "-", "FAILED", "-", "-", "-", "-", r["error"]))
            continue
        if "skipped" in r:
            rows.append((r["id"], r["title"], "-", "skipped", "-", "-", "-", "-", r["skipped"]))
            continue
        ratio = r.get("ratio")
        rows.append((r["id"], r["title"], f"{r['sagas']:,}", f"{r['sagas_per_s']:,.0f}",
                     _ms(r["latency_ms"]["p50"]), _ms(r["latency_ms"]["p99"]),
                     f"{r['peak_rss_mib']:.0f}", "-" if ratio is None else f"{ratio:.2f}",
                     _notes(r)))
    return rows


NUMERIC = frozenset({2, 3, 4, 5, 6, 7})
"""Columns of :data:`HEADER` aligned to the right."""


def render_text(rows: list[tuple[str, ...]], header: tuple[str, ...],
                right: frozenset[int] = frozenset()) -> str:
    """A plain-text table; the columns in ``right`` aligned to the right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)),
                      *(line(row) for row in rows)])


def render_markdown(rows: list[tuple[str, ...]], header: tuple[str, ...],
                    right: frozenset[int] = frozenset()) -> str:
    """A Markdown table; the columns in ``right`` aligned to the right."""
    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    rule = tuple("---:" if i in right else "---" for i in range(len(header)))
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)])


def target_rows(targets: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row of text cells per target."""
    return [(t["name"], t["target"], t["measured"], "met" if t["met"] else "MISSED")
            for t in targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="sagactor's benchmarks: each scenario in its own process; a table of "
                    "sagas/s, p50/p99 latency, peak RSS and the ratio to bare pykka.")
    parser.add_argument("--quick", action="store_true",
                        help="far fewer sagas per scenario (about half a minute in all)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help=f"write the results here (default: {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--only", metavar="IDS",
                        help="comma-separated scenario ids (e.g. S1,S3,S8); B1 always runs")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds a scenario may take (default 120 with --quick, else 900)")
    parser.add_argument("--default-gc", action="store_true",
                        help="run with CPython's collector thresholds instead of those the saga "
                             "CLI sets (sagas.engine.gc_tuning)")
    args = parser.parse_args(argv)
    try:
        scenarios = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    timeout = args.timeout or (120.0 if args.quick else 900.0)

    info = machine()
    print(f"sagactor benchmarks{' (--quick)' if args.quick else ''}: {len(scenarios)} "
          f"scenarios on {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}, "
          f"load average {info['load_average'][0]}", file=sys.stderr)
    begin = time.perf_counter()
    results: list[dict[str, Any]] = []
    for n, scenario in enumerate(scenarios, 1):
        print(f"[{n:>2}/{len(scenarios)}] {scenario.id:<4} {scenario.title} "
              f"({scenario.sagas(args.quick):,} sagas) ...", end="", file=sys.stderr, flush=True)
        missing = None if _in_ci() else scenario.unavailable()
        if missing is not None:  # under CI=true it runs, and fails saying what is missing
            results.append({"id": scenario.id, "title": scenario.title, "skipped": missing})
            print(f" skipped: {missing}", file=sys.stderr, flush=True)
            continue
        result = run_child(scenario, args.quick, timeout, args.default_gc)
        results.append(result)
        if "error" in result:
            print(f" FAILED ({result['error']}, {result['wall_s']:.1f} s)\n{result['stderr']}",
                  file=sys.stderr, flush=True)
        else:
            print(f" {result['sagas_per_s']:,.0f} sagas/s ({result['wall_s']:.1f} s)",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - begin

    by_id = {r["id"]: r for r in results}
    baseline = by_id.get(BASELINE)
    base_sps = baseline["sagas_per_s"] if baseline and "error" not in baseline else None
    for r in results:
        if _ran(r):
            r["ratio"] = round(r["sagas_per_s"] / base_sps, 4) if base_sps else None
    targets = evaluate(by_id)
    failed = [r["id"] for r in results if "error" in r]
    skipped = [r["id"] for r in results if "skipped" in r]

    render = render_markdown if args.markdown else render_text
    print(render(table_rows(results), HEADER, NUMERIC))
    if targets:
        print()
        print(render(target_rows(targets), ("target", "wanted", "measured", "")))
    print(f"\n{len(results)} scenarios in {elapsed:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else "")
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))

    document = {
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None
                                                         else sys.argv[1:])]),
        "machine": info,
        "gc_thresholds": "cpython-default" if args.default_gc else list(THROUGHPUT_THRESHOLDS),
        "baseline": {"id": BASELINE, "sagas_per_s": base_sps},
        "elapsed_s": round(elapsed, 1),
        "ok": not failed,
        "scenarios": results,
        "targets": targets,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"results written to {args.json}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
