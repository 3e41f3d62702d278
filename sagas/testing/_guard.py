"""A wall-clock guard on service code called by the harness: a handler that blocks is found.

The harness runs handlers on one worker thread; the caller's thread waits for the work and
watches the call in progress. When one call has run longer than its timeout the caller stops
waiting and raises :class:`HandlerHung` naming it. The worker thread is abandoned (a daemon, so
the process can still exit: Python cannot stop a thread) and a new one serves the next run.

Per call this costs a tuple store and a clock read; per guarded piece of work, one hand-off
between threads (two plain locks: the worker waits on one for its job, the caller on the other,
with a timeout, for its end). Work guarded from inside a guarded piece of work runs inline.
"""

from __future__ import annotations

import faulthandler
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["DEFAULT_HANDLER_TIMEOUT", "HandlerHung", "Watch", "guarded", "stuck_report_path"]

DEFAULT_HANDLER_TIMEOUT = 5.0
STUCK_GRACE = 10.0  # seconds past the handler timeout before a starved process is ended
T = TypeVar("T")


class HandlerHung(Exception):
    """A call into service code did not return within its wall-clock timeout."""

    def __init__(self, label: str, timeout: float, context: Any = None):
        self.label = label
        self.timeout = timeout
        self.context = context  # what was running (the harness sets its own state here)
        super().__init__(f"{label} did not return within {timeout:g}s")


class Watch:
    """What the worker is calling now: set around each call into service code."""

    def __init__(self) -> None:
        self.current: tuple[str, float, Any] | None = None

    def enter(self, label: str, context: Any = None) -> None:
        self.current = (label, time.monotonic(), context)

    def leave(self) -> None:
        self.current = None


class _Worker(threading.Thread):
    """Runs one piece of work at a time, handed over through :attr:`job` and the lock ``go``;
    releases ``done`` when the work has ended, its outcome in :attr:`outcome`."""

    def __init__(self) -> None:
        super().__init__(name="sagactor-test-worker", daemon=True)
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.job: Callable[[], Any] | None = None
        self.outcome: tuple[bool, Any] = (False, None)
        self.watch = Watch()
        self.stuck = False

    def run(self) -> None:
        _local.worker = self
        go, done = self.go, self.done
        while True:
            go.acquire()
            job, self.job = self.job, None
            try:
                self.outcome = (True, job())  # type: ignore[misc]
            except BaseException as exc:  # handed to the waiting caller
                self.outcome = (False, exc)
            done.release()


class _Local(threading.local):
    worker: _Worker | None = None  # set on a worker's own thread (a default: no AttributeError)


_local = _Local()
_idle: list[_Worker] = []  # (list.pop and list.append are atomic: no lock needed)


def current_watch() -> Watch | None:
    """The watch of the worker running this code, or None outside a guarded piece of work."""
    worker = _local.worker
    return None if worker is None else worker.watch


def guarded(work: Callable[[], T], timeout: float | None, *, exit_if_stuck: bool = False) -> T:
    """Run ``work`` on a worker thread; raise :class:`HandlerHung` if one call into service
    code (marked with :meth:`Watch.enter`) runs longer than ``timeout`` seconds.

    ``timeout=None`` runs it inline, unguarded. So does a call from inside guarded work.

    Service code stuck in C without releasing the interpreter (a regular expression that
    backtracks for ever) starves this thread too, so nothing here can notice it. With
    ``exit_if_stuck`` (``saga test`` sets it), the process then ends with exit status 1 once
    this thread has not run for ``timeout + STUCK_GRACE`` seconds (a C-level watchdog,
    :mod:`faulthandler`); the threads' stacks go to :func:`stuck_report_path`.
    """
    if timeout is None or _local.worker is not None:
        return work()
    try:
        worker = _idle.pop()
    except IndexError:
        worker = _Worker()
        worker.start()
    worker.job = work
    worker.go.release()
    done = worker.done
    tick = min(0.25, timeout / 4)
    report = _arm(timeout) if exit_if_stuck else None
    try:
        while not done.acquire(True, tick):
            if report is not None:
                faulthandler.dump_traceback_later(timeout + STUCK_GRACE, exit=True, file=report)
            current = worker.watch.current
            if current is not None and time.monotonic() - current[1] > timeout:
                worker.stuck = True  # abandoned: it stays blocked in the service's code
                raise HandlerHung(current[0], timeout, current[2])
    finally:
        if report is not None:
            faulthandler.cancel_dump_traceback_later()
            report.close()
    (ok, value), worker.outcome = worker.outcome, (False, None)
    _idle.append(worker)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def stuck_report_path() -> Path:
    """Where the stacks of a process ended as stuck (``exit_if_stuck``) are written."""
    return Path(tempfile.gettempdir()) / f"sagactor-stuck-{os.getpid()}.txt"


def _arm(timeout: float) -> Any:
    report = stuck_report_path().open("w")
    faulthandler.dump_traceback_later(timeout + STUCK_GRACE, exit=True, file=report)
    return report
