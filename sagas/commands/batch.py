"""Running a batch of sagas with a bounded number in flight (``saga run --count N``).

Starts are submitted without waiting for each to commit (the shards commit them in groups);
a start the store refuses never ends, so the submissions are checked as the batch goes. The
summary is the batch shape of the README's JSON shapes: counts, elapsed time, throughput and
latency percentiles.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..language.model import Flow

__all__ = ["BatchProgress", "run_batch"]

TICK = 0.1  # seconds between progress reports and checks of refused starts


class BatchProgress:
    """How far a batch got: sagas submitted and ended (also read after an interruption)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.ended = 0
        self.last: str | None = None  # the saga id submitted last


class _Tally:
    """Ends and latencies, updated from the shards' threads."""

    def __init__(self, total: int, concurrency: int, progress: BatchProgress) -> None:
        self.total = total
        self.slots = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.started_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.counts = {"completed": 0, "compensated": 0, "failed": 0}
        self.progress = progress

    def begin(self, saga_id: str) -> None:
        with self.lock:
            self.started_at[saga_id] = time.perf_counter()

    def end(self, saga_id: str, status: str, reason: str | None) -> None:
        now = time.perf_counter()
        with self.lock:
            self.latencies.append(now - self.started_at.pop(saga_id, now))
            self.counts[status] = self.counts.get(status, 0) + 1
            self.progress.ended += 1
            if self.progress.ended == self.total:
                self.finished.set()
        self.slots.release()

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
        return round(ordered[index] * 1000, 3)


def run_batch(runtime: Any, flow: Flow, inputs: Sequence[Any], total: int, concurrency: int, *,
              on_progress: Callable[[int], None] | None = None,
              progress: BatchProgress | None = None,
              on_tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``total`` sagas of ``flow`` on ``runtime`` (taking ``inputs`` in turn), at most
    ``concurrency`` in flight; return the batch summary. ``on_progress(ended)`` is called
    about every 0.1 s; ``progress`` is kept up to date as sagas are submitted and end. A start
    the store refuses is raised. ``on_tick()`` is called about every 0.1 s while the batch
    waits for sagas to end (a client's :class:`~.run.Takeover` check)."""
    progress = progress if progress is not None else BatchProgress()
    tally = _Tally(total, concurrency, progress)
    submitted: collections.deque[Any] = collections.deque()

    def check_starts() -> None:
        if on_tick is not None:
            on_tick()
        while submitted and submitted[0].done():
            refused = submitted.popleft().exception()
            if refused is not None:
                raise refused

    def report() -> None:
        if on_progress is not None:
            on_progress(progress.ended)

    begin = last_report = time.perf_counter()
    try:
        for n in range(total):
            while not tally.slots.acquire(timeout=TICK):
                check_starts()
            saga_id = runtime.new_id()
            tally.begin(saga_id)
            submitted.append(runtime.submit(flow, inputs[n % len(inputs)], saga_id,
                                            on_end=tally.end))
            progress.submitted += 1
            progress.last = saga_id
            if len(submitted) > concurrency:
                check_starts()
            if time.perf_counter() - last_report > TICK:
                last_report = time.perf_counter()
                report()
        while not tally.finished.wait(TICK):
            check_starts()
            report()
    finally:
        report()
    elapsed = time.perf_counter() - begin
    return {
        "count": total,
        "completed": tally.counts.get("completed", 0),
        "compensated": tally.counts.get("compensated", 0),
        "failed": tally.counts.get("failed", 0),
        "elapsed_s": round(elapsed, 3),
        "sagas_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": tally.percentile(0.50), "p95": tally.percentile(0.95),
                       "p99": tally.percentile(0.99)},
    }
