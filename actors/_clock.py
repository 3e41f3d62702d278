"""Clocks: where "now" comes from (Unix seconds), real or virtual.

A :class:`VirtualClock` only moves when told to, and firing timers is part of moving it: the
:class:`~actors.VirtualScheduler` s built on it register with it, and :meth:`VirtualClock.advance`
fires their due timers, in due order, on the calling thread.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._errors import SettleTimeout

if TYPE_CHECKING:
    from ._activity import Activity

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of the current time, in Unix seconds. Safe to call from any thread."""

    def now(self) -> float:
        """The current time (Unix seconds)."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``)."""

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class _VirtualTimers(Protocol):
    """What a virtual clock needs of a scheduler registered with it."""

    def next_due(self) -> float | None: ...

    def _fire_next(self, limit: float) -> bool: ...


class VirtualClock:
    """A clock that stands still until :meth:`advance` or :meth:`advance_to` moves it.

    ``now()`` may be read from any thread. Moving the clock fires the due timers of every
    scheduler built on it, synchronously on the calling thread, in due order (ties: in the order
    they were scheduled); while a timer fires, ``now()`` reads its due time. Moves are serialised.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.RLock()
        self._schedulers: list[_VirtualTimers] = []

    def now(self) -> float:
        return self._now

    def advance(
        self,
        seconds: float,
        *,
        settle: Activity | None = None,
        settle_timeout: float = 5.0,
    ) -> int:
        """Move the clock ``seconds`` forward (>= 0), firing due timers; see :meth:`advance_to`."""
        if seconds < 0:
            raise ValueError(f"VirtualClock.advance needs seconds >= 0, got {seconds}")
        with self._lock:
            target = self._now + seconds
            return self.advance_to(target, settle=settle, settle_timeout=settle_timeout)

    def advance_to(
        self,
        t: float,
        *,
        settle: Activity | None = None,
        settle_timeout: float = 5.0,
    ) -> int:
        """Move the clock to ``t`` (not back), firing every timer due by then; returns how many.

        Timers scheduled while the clock moves (by actors reacting to fired timers) fire too if
        they are due by ``t`` and scheduled before the clock gets there, which is a race. For a
        deterministic run pass ``settle=activity``: the clock then waits for the system to go
        idle before it starts and after each timer it fires, so reactions always happen first
        (``SettleTimeout`` if it does not go idle within ``settle_timeout`` seconds).
        """
        with self._lock:
            if t < self._now:
                raise ValueError(f"VirtualClock cannot go back in time: {t} < now {self._now}")
            fired = 0
            self._settle(settle, settle_timeout)
            while True:
                best: _VirtualTimers | None = None
                best_due = t
                for scheduler in list(self._schedulers):
                    due = scheduler.next_due()
                    if due is not None and due <= best_due and (best is None or due < best_due):
                        best, best_due = scheduler, due
                if best is None:
                    break
                self._now = max(self._now, best_due)
                if best._fire_next(t):
                    fired += 1
                    self._settle(settle, settle_timeout)
            self._now = t
            return fired

    @staticmethod
    def _settle(activity: Activity | None, timeout: float) -> None:
        if activity is not None and not activity.wait_idle(timeout):
            raise SettleTimeout(
                f"the system did not go idle within {timeout}s ({activity.count} messages in "
                "flight): a handler may be blocked, or an actor does not end() what it handles"
            )

    def _attach(self, scheduler: _VirtualTimers) -> None:
        with self._lock:
            self._schedulers.append(scheduler)

    def _detach(self, scheduler: _VirtualTimers) -> None:
        with self._lock:
            if scheduler in self._schedulers:
                self._schedulers.remove(scheduler)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now})"
