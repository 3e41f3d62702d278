"""S6: many sagas in flight at once, parked on a step that has not replied — their memory, and
what they cost the sagas that keep flowing.

One process, two runtimes:

* a SQLite runtime (``synchronous=normal``) starts N sagas of ``bench_parked``, whose one step's
  commands are dropped by a fault injector before the handler runs (a service that has not
  replied yet; the step's timeout is an hour away). Every saga then sits in its shard, with its
  step timer armed, ``running`` in the store.
* a ``memory://`` runtime runs S1's workload (the trivial 4-step flow, 200 in flight) once
  before the parking (**S1 alone**) and once with the N sagas waiting — the figure of the row.

RSS per in-flight saga is the growth of the resident set (after a full collection) across the
parking, divided by N. Checked: every parked saga is ``running`` in the store with its two
events (``saga.started``, ``step.started``), the parked service's handler never ran and every
command reached it; both S1 batches as in S1.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from actors import Command, Fault
from sagas import Runtime
from sagas.language.model import Flow

from ._common import (
    FLOWS,
    WAIT_LIMIT,
    BenchmarkFailed,
    Result,
    expect,
    rss_kib,
    sqlite_counts,
    start_all,
)
from .actor_runtime import FlowRun
from .services import counts

__all__ = ["DropParked", "run_s6"]


class DropParked:
    """A fault injector: drops every command of the step ``wait`` and counts them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.dropped = 0

    def decide(self, command: Command) -> Fault | None:
        if command.step != "wait":
            return None
        with self._changed:
            self.dropped += 1
            self._changed.notify_all()
        return Fault("drop")

    def wait_for(self, dropped: int, timeout: float = WAIT_LIMIT) -> None:
        """Block until ``dropped`` commands have been dropped; ``BenchmarkFailed`` if they are
        not within ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.dropped >= dropped, timeout):
                raise BenchmarkFailed(f"only {self.dropped} of {dropped} parked commands "
                                      "reached their service")


def _park(runtime: Runtime, flow: Flow, total: int, first: int) -> float:
    """Start sagas ``park-{first}`` …; their start rate."""
    begin = time.perf_counter()
    try:
        start_all(runtime, flow, ((f"park-{n}", {"n": n}) for n in range(first, first + total)))
    except Exception as exc:
        raise BenchmarkFailed(f"parking a saga failed: {exc!r}") from exc
    return total / (time.perf_counter() - begin)


def run_s6(parked: int) -> Result:
    """S6: park ``parked`` sagas on SQLite; S1 (a tenth as many sagas, at least 1,000) alone and
    while they wait."""
    s1_sagas = max(1_000, parked // 10)
    workdir = Path(tempfile.mkdtemp(prefix="sagactor-bench-"))
    path = workdir / "parked.db"
    faults = DropParked()
    try:
        with Runtime(f"sqlite:///{path}", faults=faults) as parking, \
                Runtime("memory://") as flowing:
            s1 = FlowRun(flowing, "bench_trivial.yaml")
            s1.warm_up("warm")
            alone = s1.timed(s1_sagas, "alone")

            park_flow = parking.compile(FLOWS / "bench_parked.yaml").flow
            parking.start(park_flow, {"n": 0}, "park-warm")  # imports and starts the service
            faults.wait_for(1)
            before = rss_kib()
            park_rate = _park(parking, park_flow, parked, 1)
            faults.wait_for(parked + 1)
            after = rss_kib()
            per_saga_kib = (after - before) / parked

            waiting = s1.timed(s1_sagas, "waiting")
            s1_store = s1.check_memory_store()
            s1_services = s1.service_counts()
            parked_service = counts(parking.instances("benchmarks.services:Parked"))
            expect("calls run by the parked service", parked_service,
                   {"actions": 0, "rejections": 0, "compensations": 0})
        rows = sqlite_counts(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    expect("parked saga rows by status", rows["sagas"], {"running": parked + 1})
    expect("parked event rows by type", rows["events_by_type"],
           {"saga.started": parked + 1, "step.started": parked + 1})
    ratio = waiting.sagas_per_s / alone.sagas_per_s
    return Result(
        s1_sagas, waiting.elapsed_s, waiting.latencies_s,
        {"parked": {"sagas": rows["sagas"], "events_by_type": rows["events_by_type"],
                    "dropped_commands": faults.dropped, "service_calls": parked_service},
         "s1": {"store": s1_store, "services": s1_services}},
        extra={"parked": parked, "park_rate_per_s": round(park_rate, 1),
               "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
               "rss_per_saga_kib": round(per_saga_kib, 2),
               "s1_alone_sagas_per_s": round(alone.sagas_per_s, 1),
               "s1_waiting_ratio": round(ratio, 3),
               "gc": waiting.gc, "s1_alone_gc": alone.gc},
        in_flight=waiting.in_flight)
