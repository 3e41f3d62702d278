"""What every scenario shares: its result, the caller-side driver, memory readings, checks.

A scenario is a function ``run(sagas: int) -> Result`` executed in its own process (see
:mod:`benchmarks.child`). It raises :class:`BenchmarkFailed` when its work cannot be proven
(a side effect missing, a status or a log row count off by one): the child then exits non-zero
and the whole benchmark run fails.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import resource
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONCURRENCY",
    "FLOWS",
    "WAIT_LIMIT",
    "Batch",
    "BenchmarkFailed",
    "GcTimer",
    "Result",
    "drive",
    "expect",
    "mean_in_flight",
    "peak_rss_mib",
    "percentiles",
    "rss_kib",
    "sqlite_counts",
    "start_all",
]

FLOWS = Path(__file__).resolve().parent / "flows"
"""The benchmark flows (YAML)."""

CONCURRENCY = 200
"""Sagas in flight at most (the caller-side window), as in the issue's targets."""

WAIT_LIMIT = 600.0
"""Seconds a batch may take before the driver gives up and the benchmark fails."""


class BenchmarkFailed(Exception):
    """A benchmark could not prove it did its work (or did not finish it)."""


def expect(what: str, actual: Any, expected: Any) -> None:
    """Fail loudly unless ``actual == expected``."""
    if actual != expected:
        raise BenchmarkFailed(f"{what}: expected {expected!r}, got {actual!r}")


@dataclass
class Result:
    """One scenario's figures, as the child hands them to the parent (JSON)."""

    sagas: int
    elapsed_s: float
    latencies_s: list[float] = field(repr=False)
    verified: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        p50, p99 = percentiles(self.latencies_s, (0.50, 0.99))
        return {
            "sagas": self.sagas,
            "elapsed_s": round(self.elapsed_s, 4),
            "sagas_per_s": round(self.sagas / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
            "latency_ms": {"p50": round(p50 * 1000, 6), "p99": round(p99 * 1000, 6)},
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "in_flight": self.in_flight,
            "verified": self.verified,
            "extra": self.extra,
        }


def percentiles(values: list[float], qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank percentiles of ``values`` (0.0 for none), as ``saga run --count`` does."""
    ordered = sorted(values)
    if not ordered:
        return [0.0 for _ in qs]
    n = len(ordered)
    return [ordered[min(n - 1, max(0, round(q * n + 0.5) - 1))] for q in qs]


def _status_kib(field_name: str) -> int | None:
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def rss_kib() -> int:
    """This process's resident set size now, after a full garbage collection."""
    gc.collect()
    kib = _status_kib("VmRSS")
    if kib is None:
        raise BenchmarkFailed("no /proc/self/status: cannot read the resident set size")
    return kib


class GcTimer:
    """Time spent in the cyclic garbage collector while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.seconds += pause
            self.longest = max(self.longest, pause)
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)

    def report(self, elapsed_s: float) -> dict[str, Any]:
        """Seconds in the collector, their share of ``elapsed_s``, the longest pause (ms) and
        the collections per generation."""
        return {"seconds": round(self.seconds, 3),
                "share": round(self.seconds / elapsed_s, 3) if elapsed_s > 0 else 0.0,
                "longest_ms": round(self.longest * 1000, 1),
                "collections": list(self.collections)}


@dataclass
class Batch:
    """What :func:`drive` measured."""

    sagas: int
    elapsed_s: float
    latencies_s: list[float]
    statuses: Counter[str]
    max_in_flight: int
    gc: dict[str, Any] = field(default_factory=dict)

    @property
    def sagas_per_s(self) -> float:
        return self.sagas / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def in_flight(self) -> dict[str, float]:
        """The window, the most in flight seen, and the mean (Little's law)."""
        return {"limit": CONCURRENCY, "max": self.max_in_flight,
                "mean": mean_in_flight(self.sagas, self.elapsed_s, self.latencies_s)}


def mean_in_flight(sagas: int, elapsed_s: float, latencies_s: list[float]) -> float:
    """Sagas in flight on average, by Little's law: throughput × mean latency."""
    if elapsed_s <= 0 or not latencies_s:
        return 0.0
    return round(sagas / elapsed_s * sum(latencies_s) / len(latencies_s), 1)


def drive(runtime: Any, flow: Any, total: int, *, prefix: str,
          make_input: Callable[[int], Mapping[str, Any]] = lambda n: {"n": n},
          concurrency: int = CONCURRENCY) -> Batch:
    """Run ``total`` sagas of ``flow`` on ``runtime``, at most ``concurrency`` in flight.

    As ``cli.run_batch``: a semaphore bounds the sagas in flight, ``on_end`` callbacks (on the
    shard threads) release it; one feeder thread submits sagas (``Runtime.submit``, which does
    not wait for the start to commit) with ids ``{prefix}-{n}``. The latency of a saga runs
    from just before its ``submit`` to its ``on_end``. Raises :class:`BenchmarkFailed` if a
    start fails or the sagas do not all end in time.
    """
    slots = threading.BoundedSemaphore(concurrency)
    lock = threading.Lock()
    finished = threading.Event()
    begun: dict[str, float] = {}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    state = {"done": 0, "in_flight": 0, "max": 0}
    errors: list[BaseException] = []
    submitted: list[Any] = []

    def on_end(saga_id: str, status: str, reason: str | None) -> None:
        now = time.perf_counter()
        with lock:
            latencies.append(now - begun.pop(saga_id))
            statuses[status] += 1
            state["in_flight"] -= 1
            state["done"] += 1
            if state["done"] == total:
                finished.set()
        slots.release()

    def feeder() -> None:
        try:
            for n in range(total):
                if not slots.acquire(timeout=WAIT_LIMIT) or errors:
                    return
                saga_id = f"{prefix}-{n}"
                with lock:
                    state["in_flight"] += 1
                    state["max"] = max(state["max"], state["in_flight"])
                    begun[saga_id] = time.perf_counter()
                submitted.append(runtime.submit(flow, make_input(n), saga_id, on_end=on_end))
        except BaseException as exc:
            errors.append(exc)
            finished.set()

    thread = threading.Thread(target=feeder, name="bench-feeder", daemon=True)
    gc.collect()  # every timed batch starts from a collected heap
    with GcTimer() as collector:
        begin = time.perf_counter()
        thread.start()
        ended = finished.wait(WAIT_LIMIT) if total else True
        elapsed = time.perf_counter() - begin
    thread.join(1.0)
    for item in submitted:  # a refused start never ends: say why
        refused = item.exception()
        if refused is not None:
            errors.append(refused)
            break
    if errors:
        raise BenchmarkFailed(f"starting a saga failed: {errors[0]!r}") from errors[0]
    if not ended:
        raise BenchmarkFailed(f"only {state['done']} of {total} sagas ended within "
                              f"{WAIT_LIMIT:.0f}s")
    return Batch(total, elapsed, latencies, statuses, state["max"], collector.report(elapsed))


def start_all(runtime: Any, flow: Any, sagas: Iterable[tuple[str, Mapping[str, Any]]],
              window: int = 1000) -> None:
    """Start every ``(saga_id, input)`` with ``Runtime.submit``, keeping at most ``window``
    starts unanswered; raises what a refused start raises."""
    waiting: collections.deque[Any] = collections.deque()
    for saga_id, saga_input in sagas:
        waiting.append(runtime.submit(flow, saga_input, saga_id))
        if len(waiting) >= window:
            waiting.popleft().result(WAIT_LIMIT)
    while waiting:
        waiting.popleft().result(WAIT_LIMIT)


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def sqlite_counts(path: Path) -> dict[str, Any]:
    """Rows of a SQLite saga store, read on a connection of its own: sagas by status, events
    (in all and by type), inbox replies."""
    with _readonly(path) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM sagas GROUP BY status"))
        by_type = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type"))
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        inbox = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
    return {"sagas": statuses, "events": events, "events_by_type": by_type, "inbox": inbox}
