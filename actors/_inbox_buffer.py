"""A service instance's window on the inbox: reads go through, writes wait for a commit.

A service actor handles a batch of commands, then commits what they wrote to the inbox in one
go (``InboxStore.write_many``: one transaction for a durable inbox) and only then sends their
replies. So no reply leaves before the definitive reply it reports is stored (write-ahead), and
a durable inbox pays one commit per batch instead of one per command.

Within the batch the buffer answers reads from what is waiting, so a duplicate delivery is
replayed and a compensation's tombstone stops a late action exactly as if each write had been
committed at once. If the commit fails, the writes and the replies are dropped together: the
sagas see no reply, time out and retry, and the handlers run again (delivery is at-least-once,
DESIGN.md §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._inbox import InboxStore
    from ._messages import StoredReply

__all__ = ["InboxBuffer"]


class InboxBuffer:
    """An :class:`~actors.InboxStore` over another, holding writes until :meth:`commit`.

    Not thread-safe: it belongs to one service actor.
    """

    __slots__ = ("_replies", "_tombstones", "inbox")

    def __init__(self, inbox: InboxStore) -> None:
        self.inbox = inbox
        self._replies: dict[str, StoredReply] = {}
        self._tombstones: set[str] = set()

    def get(self, key: str) -> StoredReply | None:
        waiting = self._replies.get(key)
        return waiting if waiting is not None else self.inbox.get(key)

    def put(self, key: str, reply: StoredReply) -> None:
        self._replies[key] = reply

    def tombstone(self, action_key: str) -> None:
        self._tombstones.add(action_key)

    def is_tombstoned(self, action_key: str) -> bool:
        return action_key in self._tombstones or self.inbox.is_tombstoned(action_key)

    @property
    def waiting(self) -> int:
        """Writes not committed yet."""
        return len(self._replies) + len(self._tombstones)

    def commit(self) -> None:
        """Write what waits to the inbox, all at once; on failure nothing is kept here."""
        if not self._replies and not self._tombstones:
            return
        replies, tombstones = list(self._replies.items()), sorted(self._tombstones)
        self.discard()
        write_many = getattr(self.inbox, "write_many", None)
        if write_many is not None:
            write_many(replies, tombstones)
            return
        for action_key in tombstones:  # an inbox without batches: one write at a time
            self.inbox.tombstone(action_key)
        for key, reply in replies:
            self.inbox.put(key, reply)

    def discard(self) -> None:
        """Forget what waits (its replies are not sent either)."""
        self._replies = {}
        self._tombstones = set()

    def __repr__(self) -> str:
        return f"InboxBuffer({self.inbox!r}, {self.waiting} waiting)"
