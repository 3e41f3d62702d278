"""S5: the deterministic harness of :mod:`sagas.testing` — the pure core on virtual time, the
services called in-line through the idempotent inbox, no actor threads.

The timed figure is :func:`sagas.testing.run_schedule` run once per saga (what a property test
does for each example), so the latency is the wall time of one whole saga. As a second figure
(``extra.batch_sagas_per_s``), :func:`sagas.testing.run_batch` interleaves batches of 200 sagas on
shared services (up to 20,000 sagas in all). Every run is checked: its status, its log, and the
calls the services counted.
"""

from __future__ import annotations

import gc
import time
from collections import Counter

from sagas.testing import Schedule, load_flow, run_batch, run_schedule

from ._common import FLOWS, GcTimer, Result, expect
from .services import First, Fourth, Second, Third, counts

__all__ = ["run_s5"]

BATCH = 200
"""Sagas per ``run_batch`` call (the harness caps a batch's log at 10,000 events)."""

BATCHED = 20_000
"""At most this many sagas go through ``run_batch`` (the second figure)."""


def run_s5(sagas: int) -> Result:
    """S5: ``run_schedule`` per saga (timed), then ``run_batch`` in batches of 200."""
    flow = load_flow(FLOWS / "bench_trivial.yaml")
    services = {"first": First(), "second": Second(), "third": Third(), "fourth": Fourth()}
    warm = run_schedule(flow, {"n": 0}, services=services, saga_id="warm")
    expect("warm-up status", warm.status, "completed")
    events_per_saga = len(warm.events)

    latencies = [0.0] * sagas
    statuses: Counter[str] = Counter()
    events = 0
    clock = time.perf_counter
    gc.collect()
    with GcTimer() as collector:
        begin = clock()
        for n in range(sagas):
            started = clock()
            run = run_schedule(flow, {"n": n}, services=services, saga_id=f"s-{n}")
            latencies[n] = clock() - started
            statuses[run.status] += 1
            events += len(run.events)
        elapsed = clock() - begin
    expect("statuses", dict(statuses), {"completed": sagas})
    expect("events", events, sagas * events_per_saga)

    batched = min(sagas, BATCHED)
    batch_sagas = 0
    batch_begin = clock()
    while batch_sagas < batched:
        size = min(BATCH, batched - batch_sagas)
        ids = [f"b-{batch_sagas + i}" for i in range(size)]
        batch = run_batch(flow, [({"n": batch_sagas + i}, Schedule()) for i in range(size)],
                          services=services, ids=ids)
        expect("batch statuses", Counter(r.status for r in batch.runs), {"completed": size})
        batch_sagas += size
    batch_elapsed = clock() - batch_begin

    total = 1 + sagas + batched
    calls = {name: counts([service]) for name, service in services.items()}
    for name, got in calls.items():
        expect(f"calls to {name}", got, {"actions": total, "rejections": 0, "compensations": 0})
    return Result(sagas, elapsed, latencies,
                  {"statuses": dict(statuses), "events_per_saga": events_per_saga,
                   "services": calls},
                  extra={"gc": collector.report(elapsed), "batch_size": BATCH,
                         "batch_sagas": batched,
                         "batch_sagas_per_s": round(batched / batch_elapsed, 1)})
