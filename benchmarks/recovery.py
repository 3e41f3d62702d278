"""S7: recovery — a process dies with N sagas in flight; a new runtime resumes and finishes them.

Building the store: a child process (``python -m benchmarks.recovery build DB N``) starts N
sagas of ``bench_recovery`` on SQLite; steps 1 and 2 run, step 3's commands are dropped (a
service that has not replied), so every saga is in flight at step 3. Once all N commands have
been dropped the child says so on stdout and is SIGKILLed.

Timed: what ``saga resume`` does — ``Runtime(store)`` (opening the store, registering as owner),
``recover()`` (adopting the sagas of the dead owner, replaying each log, re-sending step 3 with
its idempotency key) and waiting until every saga has ended (seen by an event listener). The
latency of a saga runs from the start of the recovery to its end.

Checked: N adopted, N ``completed``; steps 1 and 2 ran once each (in the dead process) and
never again, steps 3 and 4 ran once each (here); the store's events by type and inbox rows.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors import Command, Fault
from sagas import Runtime
from sagas.events import Event

from ._common import (
    FLOWS,
    WAIT_LIMIT,
    BenchmarkFailed,
    GcTimer,
    Result,
    expect,
    sqlite_counts,
    start_all,
)
from .services import counts

__all__ = ["build", "run_s7"]

FLOW = FLOWS / "bench_recovery.yaml"
SERVICES = {"first": "benchmarks.services:First", "second": "benchmarks.services:Second",
            "third": "benchmarks.services:Third", "fourth": "benchmarks.services:Fourth"}
TERMINAL_EVENTS = {"saga.completed": "completed", "saga.compensated": "compensated",
                   "saga.failed": "failed"}


class _DropThird:
    """A fault injector: drops every action of step ``s3``; sets ``done`` after ``expected``."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self.dropped = 0
        self.expected = expected
        self.done = threading.Event()

    def decide(self, command: Command) -> Fault | None:
        if command.step != "s3" or command.phase != "action":
            return None
        with self._lock:
            self.dropped += 1
            if self.dropped >= self.expected:
                self.done.set()
        return Fault("drop")


def build(path: str, sagas: int) -> int:
    """The store builder (run in a child process): start ``sagas`` sagas, wait until each is
    in flight at step 3, print one JSON line, then wait to be killed."""
    faults = _DropThird(sagas)
    runtime = Runtime(f"sqlite:///{path}", faults=faults)
    flow = runtime.compile(FLOW).flow
    begin = time.perf_counter()
    try:
        start_all(runtime, flow, ((f"r-{n}", {"n": n}) for n in range(sagas)))
    except Exception as exc:
        print(f"starting a saga failed: {exc!r}", file=sys.stderr)
        return 1
    if not faults.done.wait(WAIT_LIMIT):
        print(f"only {faults.dropped} of {sagas} sagas reached step 3", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - begin
    services = {name: counts(runtime.instances(p)) for name, p in SERVICES.items()}
    print(json.dumps({"ready": True, "sagas": sagas, "dropped": faults.dropped,
                      "build_s": round(elapsed, 3), "services": services}), flush=True)
    threading.Event().wait()  # in flight until SIGKILLed
    return 0


def _build_store(path: Path, sagas: int) -> dict[str, Any]:
    """Build the store in a child process and SIGKILL it once its sagas are all in flight."""
    log = path.with_suffix(".builder.log")
    with open(log, "w") as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.recovery", "build", str(path), str(sagas)],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
            stderr=errors, text=True)
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], WAIT_LIMIT)
            line = child.stdout.readline() if ready else ""
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    if not line:
        raise BenchmarkFailed(f"the store builder did not get ready: {log.read_text()[-2000:]}")
    report: dict[str, Any] = json.loads(line)
    return report


def run_s7(sagas: int) -> Result:
    """S7: build a store with ``sagas`` in-flight sagas, kill its process, time the recovery."""
    workdir = Path(tempfile.mkdtemp(prefix="sagactor-bench-"))
    path = workdir / "recovery.db"
    try:
        built = _build_store(path, sagas)
        expect("services' calls in the killed process", built["services"],
               {"first": {"actions": sagas, "rejections": 0, "compensations": 0},
                "second": {"actions": sagas, "rejections": 0, "compensations": 0},
                "third": {"actions": 0, "rejections": 0, "compensations": 0},
                "fourth": {"actions": 0, "rejections": 0, "compensations": 0}})
        before = sqlite_counts(path)
        expect("sagas in flight after the kill", before["sagas"], {"running": sagas})

        lock = threading.Lock()
        ended: dict[str, float] = {}
        statuses: Counter[str] = Counter()
        all_ended = threading.Event()

        def listener(saga_id: str, events: Sequence[Event]) -> None:
            for event in events:
                status = TERMINAL_EVENTS.get(event.type)
                if status is not None:
                    with lock:
                        ended[saga_id] = time.perf_counter()
                        statuses[status] += 1
                        if len(ended) == sagas:
                            all_ended.set()

        gc.collect()
        with GcTimer() as collector:
            begin = time.perf_counter()
            with Runtime(f"sqlite:///{path}", listeners=[listener]) as runtime:
                adopted = runtime.recover()
                recovered = time.perf_counter()
                if not all_ended.wait(WAIT_LIMIT):
                    raise BenchmarkFailed(f"only {len(ended)} of {sagas} resumed sagas ended")
                elapsed = time.perf_counter() - begin
                services = {name: counts(runtime.instances(p)) for name, p in SERVICES.items()}
        after = sqlite_counts(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    expect("sagas adopted", len(adopted), sagas)
    expect("statuses", dict(statuses), {"completed": sagas})
    expect("services' calls in the recovering process", services,
           {"first": {"actions": 0, "rejections": 0, "compensations": 0},
            "second": {"actions": 0, "rejections": 0, "compensations": 0},
            "third": {"actions": sagas, "rejections": 0, "compensations": 0},
            "fourth": {"actions": sagas, "rejections": 0, "compensations": 0}})
    expect("saga rows by status", after["sagas"], {"completed": sagas})
    expect("event rows by type", after["events_by_type"],
           {"saga.started": sagas, "step.started": 4 * sagas, "step.succeeded": 4 * sagas,
            "saga.completed": sagas})
    expect("inbox rows", after["inbox"], 4 * sagas)
    latencies = [ended[saga_id] - begin for saga_id in adopted]
    return Result(sagas, elapsed, latencies,
                  {"killed_process": built["services"], "recovering_process": services,
                   "store": {"sagas": after["sagas"], "events_by_type": after["events_by_type"],
                             "inbox": after["inbox"]}},
                  extra={"gc": collector.report(elapsed), "build_s": built["build_s"],
                         "recover_call_s": round(recovered - begin, 3)})


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "build":
        print("usage: python -m benchmarks.recovery build DB SAGAS", file=sys.stderr)
        return 2
    return build(argv[1], int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
