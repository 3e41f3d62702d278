"""Quiescence tracking: how many messages are enqueued to actors but not yet handled.

With virtual time, "the system is idle" is what a test waits for before advancing the clock. The
contract, for every message the runtime enqueues to an actor:

- the sender calls :meth:`Activity.begin` *before* ``tell`` (and :meth:`Activity.end` if the
  ``tell`` fails);
- the receiving actor calls :meth:`Activity.end` *after* it has handled the message, and after it
  has sent (and so begun) whatever the message caused.

So the count can only reach zero when no message is in flight anywhere. Service pools and the
schedulers do this for the messages they enqueue; a reply is counted when its ``reply_to`` is an
:meth:`Activity.counting` wrapper (the receiving actor then ends it).
"""

from __future__ import annotations

import threading
from typing import Any

from ._messages import Teller

__all__ = ["Activity", "CountingRef"]


class Activity:
    """A thread-safe counter of in-flight messages with an idle wait (one lock + one condition)."""

    __slots__ = ("_cond", "_count")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._count = 0

    @property
    def count(self) -> int:
        """Messages enqueued but not yet handled, right now."""
        return self._count

    def begin(self, n: int = 1) -> None:
        """Count ``n`` messages about to be enqueued. Any thread."""
        if n < 0:
            raise ValueError(f"Activity.begin(n) needs n >= 0, got {n}")
        with self._cond:
            self._count += n

    def end(self, n: int = 1) -> None:
        """Count ``n`` messages as handled. Any thread.

        Raises ``ValueError`` (and leaves the count alone) if that would make the count negative:
        an ``end`` without its ``begin`` is a bug worth failing on.
        """
        if n < 0:
            raise ValueError(f"Activity.end(n) needs n >= 0, got {n}")
        with self._cond:
            if n > self._count:
                raise ValueError(
                    f"Activity.end({n}) with only {self._count} in flight: an end() without begin()"
                )
            self._count -= n
            if self._count == 0:
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no message is in flight; ``False`` if ``timeout`` seconds pass first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)

    def tell(self, target: Teller, message: Any) -> None:
        """``begin()``, then ``target.tell(message)``; if that raises, ``end()`` and re-raise."""
        self.begin()
        try:
            target.tell(message)
        except BaseException:
            self.end()
            raise

    def counting(self, target: Teller) -> CountingRef:
        """Wrap ``target`` so every ``tell`` through it is counted (a :class:`CountingRef`)."""
        return CountingRef(target, self)

    def __repr__(self) -> str:
        return f"Activity(count={self._count})"


class CountingRef:
    """A ``tell``-able wrapper that counts each message it forwards in an :class:`Activity`.

    Pass one as ``reply_to`` so replies count as in flight until the receiving actor, having handled
    one, calls ``activity.end()``. Two wrappers of the same target and activity are equal.
    """

    __slots__ = ("activity", "target")

    def __init__(self, target: Teller, activity: Activity) -> None:
        self.target = target
        self.activity = activity

    def tell(self, message: Any) -> None:
        """Count, then forward; raises what ``target.tell`` raises (after un-counting)."""
        self.activity.tell(self.target, message)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CountingRef):
            return NotImplemented
        return self.target == other.target and self.activity is other.activity

    def __hash__(self) -> int:
        return hash((self.target, id(self.activity)))

    def __repr__(self) -> str:
        return f"CountingRef({self.target!r})"
