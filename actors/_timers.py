"""Timers: deliver a message to a target at an absolute time (Unix seconds of a :class:`Clock`).

At its due time a timer does ``target.tell(message)``; the target handles it on its own thread.
A ``tell`` that fails (a dead actor) is recorded as a dead letter, never raised into the scheduler.
Cancelling is cheap (the entry is dropped lazily when it reaches the top of the heap), but a timer
whose message was already sent cannot be recalled: receivers must tolerate a stale timer message.

- :class:`ThreadScheduler`: real time, one daemon thread sleeping on a condition until the next due
  time (or until an earlier timer is scheduled).
- :class:`VirtualScheduler`: virtual time; timers fire when the :class:`~actors.VirtualClock` is
  advanced, on the thread that advances it, in due order.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from typing import Any, Protocol, runtime_checkable

from ._activity import Activity
from ._clock import Clock, SystemClock, VirtualClock
from ._deadletters import DeadLetters
from ._errors import SchedulerStopped, describe_exception, safe_repr
from ._messages import Teller

__all__ = [
    "Scheduler",
    "ThreadScheduler",
    "TimerHandle",
    "VirtualScheduler",
    "make_scheduler",
]

logger = logging.getLogger(__name__)

_PENDING, _CANCELLED, _FIRED = 0, 1, 2
_STATES = ("pending", "cancelled", "fired")


class TimerHandle:
    """A scheduled timer; pass it to ``cancel()``. ``pending`` until it fires or is cancelled."""

    __slots__ = ("_owner", "_state", "at", "message", "target")

    def __init__(self, owner: object, at: float, target: Teller, message: Any) -> None:
        self._owner = owner
        self._state = _PENDING
        self.at = at
        self.target = target
        self.message = message

    @property
    def pending(self) -> bool:
        """Neither fired nor cancelled yet."""
        return self._state == _PENDING

    @property
    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    @property
    def fired(self) -> bool:
        return self._state == _FIRED

    def __repr__(self) -> str:
        state = _STATES[self._state]
        return f"TimerHandle(at={self.at}, {state}, message={safe_repr(self.message)})"


@runtime_checkable
class Scheduler(Protocol):
    """Delivers ``target.tell(message)`` at time ``at``. All methods are thread-safe."""

    def schedule(self, at: float, target: Teller, message: Any) -> TimerHandle:
        """Arm a timer (a time already past fires as soon as possible); ``SchedulerStopped`` after
        :meth:`stop`."""
        ...

    def cancel(self, handle: TimerHandle) -> bool:
        """Disarm a timer; ``True`` if it was still pending (its message will not be sent)."""
        ...

    def next_due(self) -> float | None:
        """The due time of the earliest pending timer, or ``None``."""
        ...

    def stop(self) -> None:
        """Stop firing; pending timers are discarded (recovery re-arms them from the log)."""
        ...


class _TimerHeap:
    """A heap of timers with lazy deletion. Not thread-safe: its scheduler holds a lock."""

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._dead = 0  # entries of cancelled (or taken) handles still in the heap

    def push(self, at: float, target: Teller, message: Any) -> TimerHandle:
        if not hasattr(target, "tell"):
            raise TypeError(f"a timer target needs a .tell(message) method, got {target!r}")
        handle = TimerHandle(self._owner, float(at), target, message)
        heapq.heappush(self._heap, (handle.at, next(self._seq), handle))
        return handle

    def cancel(self, handle: TimerHandle) -> bool:
        if handle._owner is not self._owner:
            raise ValueError(f"{handle!r} belongs to another scheduler")
        if handle._state != _PENDING:
            return False
        handle._state = _CANCELLED
        self._forget_one()
        return True

    def take(self, handle: TimerHandle) -> bool:
        """Mark ``handle`` fired wherever it is in the heap (the caller delivers it)."""
        if handle._state != _PENDING:
            return False
        handle._state = _FIRED
        self._forget_one()
        return True

    def _forget_one(self) -> None:
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2]._state == _PENDING]
            heapq.heapify(self._heap)
            self._dead = 0

    def peek(self) -> TimerHandle | None:
        heap = self._heap
        while heap and heap[0][2]._state != _PENDING:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][2] if heap else None

    def pop_due(self, limit: float) -> TimerHandle | None:
        head = self.peek()
        if head is None or head.at > limit:
            return None
        heapq.heappop(self._heap)
        head._state = _FIRED
        return head

    def clear(self) -> int:
        pending = 0
        for _, _, handle in self._heap:
            if handle._state == _PENDING:
                handle._state = _CANCELLED
                pending += 1
        self._heap.clear()
        self._dead = 0
        return pending

    def __len__(self) -> int:
        return len(self._heap) - self._dead


def _deliver(handle: TimerHandle, activity: Activity | None, dead_letters: DeadLetters) -> None:
    """Send a due timer's message. Never raises: a refused message becomes a dead letter."""
    if activity is not None:
        activity.begin()
    try:
        handle.target.tell(handle.message)
    except Exception as exc:
        if activity is not None:
            activity.end()
        dead_letters.record(
            handle.message,
            target=safe_repr(handle.target),
            reason=f"timer could not deliver: {describe_exception(exc)}",
        )


class ThreadScheduler:
    """A real-time :class:`Scheduler`: one daemon thread, a heap, a ``threading.Condition``.

    Messages are sent from the scheduler's thread; a target's ``tell`` must not block (a pykka
    ``ActorRef.tell`` does not). ``activity``, if given, counts every message it sends.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        activity: Activity | None = None,
        dead_letters: DeadLetters | None = None,
        name: str = "sagactor-timers",
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.activity = activity
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetters()
        self._cond = threading.Condition(threading.Lock())
        self._timers = _TimerHeap(self)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule(self, at: float, target: Teller, message: Any) -> TimerHandle:
        with self._cond:
            if self._stopped:
                raise SchedulerStopped(f"cannot schedule {safe_repr(message)}: scheduler stopped")
            handle = self._timers.push(at, target, message)
            if self._timers.peek() is handle:
                self._cond.notify()
        return handle

    def cancel(self, handle: TimerHandle) -> bool:
        with self._cond:
            return self._timers.cancel(handle)

    def next_due(self) -> float | None:
        with self._cond:
            head = self._timers.peek()
            return None if head is None else head.at

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waiting up to ``timeout`` s for a ``tell`` in progress) and discard
        pending timers. Idempotent."""
        with self._cond:
            self._stopped = True
            dropped = self._timers.clear()
            self._cond.notify_all()
        if dropped:
            logger.debug("scheduler stopped with %d pending timers discarded", dropped)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __len__(self) -> int:
        """Pending timers."""
        with self._cond:
            return len(self._timers)

    def _run(self) -> None:
        """The scheduler thread: sleep until the next due time, send, repeat. Never raises."""
        try:
            while True:
                with self._cond:
                    due: TimerHandle | None = None
                    while not self._stopped:
                        head = self._timers.peek()
                        if head is None:
                            self._cond.wait()
                            continue
                        delay = head.at - self.clock.now()
                        if delay <= 0:
                            due = self._timers.pop_due(head.at)
                            break
                        self._cond.wait(delay)
                    if due is None:
                        return
                _deliver(due, self.activity, self.dead_letters)
        except Exception:
            logger.exception("the timer thread died; pending timers will not fire")


class VirtualScheduler:
    """A :class:`Scheduler` on a :class:`~actors.VirtualClock`: timers fire when the clock moves.

    Due timers are sent on the thread that advances the clock, in due order. A timer scheduled at
    or before ``clock.now()`` is sent at once, on the thread that schedules it.
    """

    def __init__(
        self,
        clock: VirtualClock,
        *,
        activity: Activity | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        if not isinstance(clock, VirtualClock):
            raise TypeError(
                f"VirtualScheduler needs a VirtualClock, got {type(clock).__name__}: "
                "use ThreadScheduler (or make_scheduler) for real time"
            )
        self.clock = clock
        self.activity = activity
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetters()
        self._lock = threading.Lock()
        self._timers = _TimerHeap(self)
        self._stopped = False
        clock._attach(self)

    def schedule(self, at: float, target: Teller, message: Any) -> TimerHandle:
        with self._lock:
            if self._stopped:
                raise SchedulerStopped(f"cannot schedule {safe_repr(message)}: scheduler stopped")
            handle = self._timers.push(at, target, message)
            now_due = handle.at <= self.clock.now() and self._timers.take(handle)
        if now_due:
            _deliver(handle, self.activity, self.dead_letters)
        return handle

    def cancel(self, handle: TimerHandle) -> bool:
        with self._lock:
            return self._timers.cancel(handle)

    def next_due(self) -> float | None:
        with self._lock:
            head = self._timers.peek()
            return None if head is None else head.at

    def stop(self) -> None:
        """Detach from the clock and discard pending timers. Idempotent."""
        with self._lock:
            self._stopped = True
            self._timers.clear()
        self.clock._detach(self)

    def __len__(self) -> int:
        """Pending timers."""
        with self._lock:
            return len(self._timers)

    def _fire_next(self, limit: float) -> bool:
        """Send the earliest timer due by ``limit``, if any (called by the clock)."""
        with self._lock:
            handle = self._timers.pop_due(limit)
        if handle is None:
            return False
        _deliver(handle, self.activity, self.dead_letters)
        return True


def make_scheduler(
    clock: Clock,
    *,
    activity: Activity | None = None,
    dead_letters: DeadLetters | None = None,
) -> ThreadScheduler | VirtualScheduler:
    """A :class:`VirtualScheduler` for a :class:`~actors.VirtualClock`, else a ThreadScheduler."""
    if isinstance(clock, VirtualClock):
        return VirtualScheduler(clock, activity=activity, dead_letters=dead_letters)
    return ThreadScheduler(clock, activity=activity, dead_letters=dead_letters)
