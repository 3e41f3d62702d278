"""S10: the event bus must not slow the sagas (issue 7: a subscriber sleeping 10 ms per event
costs a 1,000-saga batch at most 10% of its throughput).

The batch is S3's (the 4-step flow on SQLite, ``synchronous=normal``), timed twice in each
round, on a fresh store each time: without any subscriber, then with one subscribed to every
topic (``*``) whose handler sleeps 10 ms per event. The rounds alternate the two so the
machine's drift falls on both; the reported ratio is the best "with" batch over the best
"without" one. The row's figures are the "with" batches'.

Proven per batch: what :class:`~benchmarks.actor_runtime.FlowRun` checks (statuses, service
calls, store rows); and, with the subscriber, that what it got by the end of the batch is the
start of the log, in order, with no gap (it is far behind: 10 ms × ~12 events per saga), and
that its durable cursor was saved where it stopped when the runtime closed.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sagas import Delivery, Runtime
from sagas.stores import SqliteStore

from ._common import BenchmarkFailed, Result, expect
from .actor_runtime import FlowRun

__all__ = ["run_s10"]

ROUNDS = 2
"""Batches timed per variant (alternating)."""

SLEEP_S = 0.010
"""What the subscriber's handler sleeps per event."""


class _Sleeper:
    """The slow subscriber: remembers the positions it got, sleeping 10 ms on each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.positions: list[int] = []

    def __call__(self, delivery: Delivery) -> None:
        time.sleep(SLEEP_S)
        with self.lock:
            self.positions.append(delivery.position)


def _batch(sagas: int, subscribed: bool, prefix: str) -> tuple[Any, dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="sagactor-bench-bus-"))
    path = workdir / "sagas.db"
    sleeper = _Sleeper()
    try:
        with Runtime(f"sqlite:///{path}?synchronous=normal") as runtime:
            if subscribed:
                runtime.subscribe("bench-sleeper", ["*"], sleeper)
            run = FlowRun(runtime, "bench_trivial.yaml")
            run.warm_up("warm")
            batch = run.timed(sagas, prefix)
            with sleeper.lock:
                got = list(sleeper.positions)
        run.check_sqlite_store(path)
        facts: dict[str, Any] = {}
        if subscribed:
            with SqliteStore(path) as store:
                log = [event.position for _, event in store.read_all(0, len(got))]
                cursor = store.cursor("bench-sleeper")
                total = store.last_position()
            expect("the subscriber's events: the start of the log, in order", got, log)
            if cursor is None or cursor < (got[-1] if got else 0) - 1:
                raise BenchmarkFailed(f"cursor {cursor} not saved where the subscriber "
                                      f"stopped ({got[-1] if got else 0})")
            facts = {"delivered_by_end": len(got), "events": total}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return batch, facts


def run_s10(sagas: int) -> Result:
    """S10: a ``sagas``-saga batch on SQLite with and without a subscriber sleeping 10 ms per
    event; the ratio of the two throughputs."""
    without: list[Any] = []
    with_sub: list[Any] = []
    facts: dict[str, Any] = {}
    for round_ in range(ROUNDS):
        without.append(_batch(sagas, False, f"plain{round_}")[0])
        batch, facts = _batch(sagas, True, f"bus{round_}")
        with_sub.append(batch)
    best_without = min(without, key=lambda b: b.elapsed_s)
    best_with = min(with_sub, key=lambda b: b.elapsed_s)
    ratio = best_without.elapsed_s / best_with.elapsed_s  # with / without, in throughput
    extra = {
        "without_sagas_per_s": round(sagas / best_without.elapsed_s, 1),
        "with_sagas_per_s": round(sagas / best_with.elapsed_s, 1),
        "with_vs_without": round(ratio, 4),
        "rounds": ROUNDS,
        "sleep_ms": SLEEP_S * 1000,
        **facts,
        "gc": best_with.gc,
    }
    return Result(sagas, best_with.elapsed_s, best_with.latencies_s,
                  {"statuses": dict(best_with.statuses), **facts}, extra=extra,
                  in_flight=best_with.in_flight)
