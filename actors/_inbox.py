"""The idempotent inbox's storage port, and an in-memory store.

The semantics (what is stored, when a tombstone is written) live in the service actor's dispatcher
(``actors._dispatch``); a store only keeps what it is given. Durable stores implement
:class:`InboxStore` (ideally in the same transaction as the service's own effects).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ._json import dumps_compact, loads_compact
from ._messages import StoredReply

__all__ = ["InboxStore", "MemoryInbox"]


@runtime_checkable
class InboxStore(Protocol):
    """Where a service remembers definitive replies and compensated actions, by idempotency key.

    Called on service actor threads (several instances of a pool share one store), so it must be
    thread-safe. If a method raises, the service actor crashes and is restarted by its pool; the
    command being processed is answered with an ``error`` reply.
    """

    def get(self, key: str) -> StoredReply | None:
        """The definitive reply stored under ``key``, or ``None``."""
        ...

    def put(self, key: str, reply: StoredReply) -> None:
        """Store ``reply`` as the definitive reply for ``key`` (replacing any earlier one)."""
        ...

    def tombstone(self, action_key: str) -> None:
        """Record that the compensation of ``action_key`` has started: the action must not run."""
        ...

    def is_tombstoned(self, action_key: str) -> bool:
        """Whether :meth:`tombstone` was called for ``action_key``."""
        ...

    def write_many(
        self, replies: Sequence[tuple[str, StoredReply]], tombstones: Sequence[str]
    ) -> None:
        """Store each ``(key, reply)`` as :meth:`put` does (in order) and each tombstone as
        :meth:`tombstone` does, all at once: a durable store commits them in one transaction,
        so either all of them are kept or none. A service batching its commands writes its
        replies and tombstones with one call."""
        ...


class MemoryInbox:
    """A thread-safe, in-process :class:`InboxStore` (a dict and a set behind one lock).

    It grows with every key it sees; it is meant for tests and throwaway runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # plain tuples of strings, not StoredReply objects holding dicts: the garbage collector
        # stops tracking them at its next pass (a dict inside would keep each tuple tracked until
        # a costly older-generation pass), and an inbox holds one entry per command ever run.
        # The output is kept as JSON text, so no caller's dict is shared with the inbox.
        self._replies: dict[str, tuple[str, str | None, str | None]] = {}
        self._tombstones: set[str] = set()

    def get(self, key: str) -> StoredReply | None:
        with self._lock:
            found = self._replies.get(key)
        if found is None:
            return None
        outcome, output, error = found
        return StoredReply(outcome, None if output is None else loads_compact(output), error)

    def put(self, key: str, reply: StoredReply) -> None:
        if not isinstance(reply, StoredReply):
            raise TypeError(f"MemoryInbox.put expects a StoredReply, got {type(reply).__name__}")
        with self._lock:
            self._replies[key] = _row(reply)

    def tombstone(self, action_key: str) -> None:
        with self._lock:
            self._tombstones.add(action_key)

    def is_tombstoned(self, action_key: str) -> bool:
        with self._lock:
            return action_key in self._tombstones

    def write_many(
        self, replies: Sequence[tuple[str, StoredReply]], tombstones: Sequence[str]
    ) -> None:
        """``put`` each ``(key, reply)``, in order, and ``tombstone`` each key, atomically.

        ``TypeError`` (nothing stored) for a reply that is not a :class:`StoredReply`, for
        ``replies`` given as a mapping or ``tombstones`` as one string.
        """
        if isinstance(replies, (str, Mapping)):
            raise TypeError("replies is a sequence of (key, reply) pairs")
        if isinstance(tombstones, str):
            raise TypeError("tombstones is a sequence of action keys, not one key")
        pairs = list(replies)
        for _, reply in pairs:
            if not isinstance(reply, StoredReply):
                kind = type(reply).__name__
                raise TypeError(f"MemoryInbox.write_many expects StoredReply objects, got {kind}")
        keys = list(tombstones)
        rows = [(key, _row(reply)) for key, reply in pairs]
        with self._lock:
            self._replies.update(rows)
            self._tombstones.update(keys)

    def __len__(self) -> int:
        """The number of stored replies."""
        with self._lock:
            return len(self._replies)

    def __repr__(self) -> str:
        with self._lock:
            return f"MemoryInbox({len(self._replies)} replies, {len(self._tombstones)} tombstones)"


def _row(reply: StoredReply) -> tuple[str, str | None, str | None]:
    output = reply.output
    text = None if output is None else dumps_compact(output, default=_frozen_as_dict)
    return (reply.outcome, text, reply.error)


def _frozen_as_dict(value: Any) -> Any:
    """Frozen output (:func:`~actors.freeze`: a ``MappingProxyType``) is kept as its dict."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
