"""S1–S4 and S8: the actor runtime (``sagas.Runtime``) running batches of the 4-step flow.

Each scenario opens a runtime on its store, runs one saga and a small batch to warm up (imports,
threads, the compiled flow), then times a batch driven from the caller side (see
:func:`benchmarks._common.drive`) and proves the work: every saga ended with the expected
status, every service counted exactly the calls the flow implies, and the store holds exactly
the sagas, events (and, for SQLite, inbox replies) they imply.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagas import Runtime
from sagas.stores import MemoryStore

from ._common import FLOWS, BenchmarkFailed, Result, drive, expect, sqlite_counts
from .services import counts

__all__ = ["FlowRun", "run_s1", "run_s2", "run_s3", "run_s4", "run_s8_cpu", "run_s8_io1",
           "run_s8_io8"]

WARM_UP = 200
"""Sagas run before the timed batch (not timed, but verified with the rest)."""

STEPS = ("first", "second", "third", "fourth")

# What one saga does to each service: (actions, rejections, compensations).
HAPPY = {name: (1, 0, 0) for name in STEPS}
FAIL_AT_THIRD = {"first": (1, 0, 1), "second": (1, 0, 1), "third": (0, 1, 0),
                 "fourth": (0, 0, 0)}


class FlowRun:
    """One runtime, one flow: warm up, time batches, and check every batch's work."""

    def __init__(self, runtime: Runtime, flow_file: str, *, fail: str | None = None):
        self.runtime = runtime
        self.flow = runtime.compile(FLOWS / flow_file).flow
        self.fail = fail
        self.status = "compensated" if fail else "completed"
        self.per_saga = FAIL_AT_THIRD if fail == "s3" else HAPPY
        if fail not in (None, "s3"):
            raise ValueError("the benchmarks fail at s3 or not at all")
        self.events_per_saga = 0
        self.sagas = 0  # sagas run so far (warm-up included)

    def saga_input(self, n: int) -> dict[str, Any]:
        return {"n": n} if self.fail is None else {"n": n, "fail": self.fail}

    def paths(self) -> dict[str, str]:
        return {name: self.flow.services[name].import_path for name in STEPS}

    def service_counts(self) -> dict[str, dict[str, int]]:
        return {name: counts(self.runtime.instances(path)) for name, path in self.paths().items()}

    def warm_up(self, prefix: str) -> None:
        """One saga (whose history gives the events per saga), then a small batch."""
        result = self.runtime.run(self.flow, self.saga_input(0), f"{prefix}-first", timeout=60)
        expect(f"warm-up saga {result.saga_id} status", result.status, self.status)
        types = Counter(event.type for event in result.history)
        succeeded = sum(1 for counts_ in self.per_saga.values() if counts_[0])
        expect("step.succeeded events of one saga", types["step.succeeded"], succeeded)
        expect("compensation.succeeded events of one saga", types["compensation.succeeded"],
               sum(c[2] for c in self.per_saga.values()))
        self.events_per_saga = len(result.history)
        self.sagas += 1
        self.timed(WARM_UP, f"{prefix}-warm")

    def timed(self, total: int, prefix: str) -> Any:
        """Run a batch and check its statuses and side effects; the :class:`Batch`."""
        before = self.service_counts()
        batch = drive(self.runtime, self.flow, total, prefix=prefix, make_input=self.saga_input)
        expect(f"statuses of {prefix}", dict(batch.statuses), {self.status: total})
        after = self.service_counts()
        for name, (actions, rejections, compensations) in self.per_saga.items():
            delta = {key: after[name][key] - before[name][key] for key in after[name]}
            expect(f"calls to service {name!r} in {prefix}", delta,
                   {"actions": actions * total, "rejections": rejections * total,
                    "compensations": compensations * total})
        self.sagas += total
        return batch

    def inbox_rows(self) -> int:
        """Definitive replies the inbox holds for the sagas run: one per action that succeeded
        or was rejected, one per compensation that succeeded."""
        return sum(sum(c) for c in self.per_saga.values()) * self.sagas

    def check_memory_store(self) -> dict[str, Any]:
        """Every saga in the (memory) store: status and log length."""
        store = self.runtime.store
        if not isinstance(store, MemoryStore):
            raise BenchmarkFailed(f"expected a memory store, got {store!r}")
        headers = [h for h in store.list(flow=self.flow.name)]
        statuses = Counter(h.status for h in headers)
        events = sum(h.last_seq for h in headers)
        expect("sagas in the store by status", dict(statuses), {self.status: self.sagas})
        expect("events in the store", events, self.sagas * self.events_per_saga)
        return {"sagas": dict(statuses), "events": events}

    def check_sqlite_store(self, path: Path) -> dict[str, Any]:
        """Rows of the (closed) SQLite store: sagas by status, events, inbox replies."""
        rows = sqlite_counts(path)
        expect("saga rows by status", rows["sagas"], {self.status: self.sagas})
        expect("event rows", rows["events"], self.sagas * self.events_per_saga)
        expect("inbox rows", rows["inbox"], self.inbox_rows())
        return {"sagas": rows["sagas"], "events": rows["events"], "inbox": rows["inbox"]}

    def verified(self, store: Mapping[str, Any],
                 services: Mapping[str, Any]) -> dict[str, Any]:
        """What was checked, for the JSON report."""
        return {"statuses": {self.status: self.sagas}, "events_per_saga": self.events_per_saga,
                "services": dict(services), "store": dict(store)}


def _memory(flow_file: str, sagas: int, fail: str | None = None) -> Result:
    with Runtime("memory://") as runtime:
        run = FlowRun(runtime, flow_file, fail=fail)
        run.warm_up("warm")
        batch = run.timed(sagas, "s")
        verified = run.verified(run.check_memory_store(), run.service_counts())
    return Result(sagas, batch.elapsed_s, batch.latencies_s, verified, extra={"gc": batch.gc},
                  in_flight=batch.in_flight)


def _sqlite(synchronous: str, sagas: int) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="sagactor-bench-"))
    path = workdir / "sagas.db"
    try:
        with Runtime(f"sqlite:///{path}?synchronous={synchronous}") as runtime:
            run = FlowRun(runtime, "bench_trivial.yaml")
            run.warm_up("warm")
            batch = run.timed(sagas, "s")
            services = run.service_counts()
        verified = run.verified(run.check_sqlite_store(path), services)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Result(sagas, batch.elapsed_s, batch.latencies_s, verified,
                  extra={"synchronous": synchronous, "gc": batch.gc}, in_flight=batch.in_flight)


def run_s1(sagas: int) -> Result:
    """S1: memory://, happy path."""
    return _memory("bench_trivial.yaml", sagas)


def run_s2(sagas: int) -> Result:
    """S2: memory://, the third step rejected, the first two compensated."""
    return _memory("bench_trivial.yaml", sagas, fail="s3")


def run_s3(sagas: int) -> Result:
    """S3: SQLite, ``synchronous=normal``."""
    return _sqlite("normal", sagas)


def run_s4(sagas: int) -> Result:
    """S4: SQLite, ``synchronous=full``."""
    return _sqlite("full", sagas)


def run_s8_cpu(sagas: int) -> Result:
    """S8a: memory://, every handler burns 10 µs of CPU."""
    return _memory("bench_cpu.yaml", sagas)


def run_s8_io1(sagas: int) -> Result:
    """S8b: memory://, every handler blocks 1 ms; one instance per service."""
    return _memory("bench_io1.yaml", sagas)


def run_s8_io8(sagas: int) -> Result:
    """S8c: memory://, every handler blocks 1 ms; eight instances per service."""
    return _memory("bench_io8.yaml", sagas)
