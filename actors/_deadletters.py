"""Dead letters: messages the runtime could not deliver where they were sent.

Nothing is dropped silently: every undeliverable message is recorded here and logged at WARNING,
whether it was redelivered afterwards (to a restarted actor) or not.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._errors import safe_repr

__all__ = ["DeadLetter", "DeadLetters"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One undeliverable message, where it was going, why it failed, and whether it was retried."""

    message: Any
    target: str
    reason: str
    redelivered: bool = False


class DeadLetters:
    """A thread-safe, bounded record of dead letters (the oldest are forgotten past ``maxlen``).

    ``len()`` is the number held; :attr:`total` counts every letter ever recorded.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        if maxlen < 1:
            raise ValueError(f"DeadLetters(maxlen) needs maxlen >= 1, got {maxlen}")
        self._lock = threading.Lock()
        self._items: deque[DeadLetter] = deque(maxlen=maxlen)
        self._total = 0

    def record(self, message: Any, *, target: str, reason: str, redelivered: bool = False) -> None:
        """Record and log (WARNING) one dead letter. Any thread; never raises for a bad message."""
        letter = DeadLetter(message, target, reason, redelivered)
        with self._lock:
            self._items.append(letter)
            self._total += 1
        logger.warning(
            "dead letter to %s (%s%s): %s",
            target,
            reason,
            "; redelivered" if redelivered else "",
            safe_repr(message),
        )

    def items(self) -> list[DeadLetter]:
        """A snapshot of the letters held, oldest first."""
        with self._lock:
            return list(self._items)

    @property
    def total(self) -> int:
        """Every letter recorded so far, including those no longer held."""
        return self._total

    def clear(self) -> None:
        """Forget the letters held (``total`` keeps counting)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __repr__(self) -> str:
        return f"DeadLetters({len(self)} held, {self._total} total)"
