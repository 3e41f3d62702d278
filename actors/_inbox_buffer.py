"""A service instance's window on the inbox: reads go through, writes wait for a commit.

A service actor handles a batch of commands, then commits what they wrote to the inbox in one
go (``InboxStore.write_many``: one transaction for a durable inbox) and only then sends their
replies. So no reply leaves before the definitive reply it reports is stored (write-ahead), and
a durable inbox pays one commit per batch instead of one per command.

Within the batch the buffer answers reads from what is waiting, so a duplicate delivery is
replayed and a compensation's tombstone stops a late action exactly as if each write had been
committed at once. An inbox that offers ``read_many(keys, action_keys)`` (the SQLite one) is
read once per batch too: :meth:`InboxBuffer.prefetch` looks up every key the batch's commands
will ask about in one go. If the commit fails, the writes and the replies are dropped together: the
sagas see no reply, time out and retry, and the handlers run again (delivery is at-least-once,
DESIGN.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._inbox import InboxStore
    from ._messages import Command, StoredReply

__all__ = ["InboxBuffer"]


class InboxBuffer:
    """An :class:`~actors.InboxStore` over another, holding writes until :meth:`commit`.

    Not thread-safe: it belongs to one service actor.
    """

    __slots__ = ("_known", "_known_tombstones", "_read_many", "_replies", "_tombstones", "inbox")

    def __init__(self, inbox: InboxStore) -> None:
        self.inbox = inbox
        self._replies: dict[str, StoredReply] = {}
        self._tombstones: set[str] = set()
        self._read_many = getattr(inbox, "read_many", None)
        # what a prefetch found: key -> stored reply or None; action key -> tombstoned
        self._known: dict[str, StoredReply | None] = {}
        self._known_tombstones: dict[str, bool] = {}

    def prefetch(self, commands: Sequence[Command]) -> None:
        """Look up, in one read, what the inbox holds for the keys ``commands`` will use
        (if the inbox can: ``read_many``); a no-op otherwise, or for a single command."""
        if self._read_many is None or len(commands) < 2:
            return
        keys = [command.key for command in commands]
        actions = [command.key for command in commands if command.phase == "action"]
        replies, tombstoned = self._read_many(keys, actions)
        for key in keys:
            self._known[key] = replies.get(key)
        for key in actions:
            self._known_tombstones[key] = key in tombstoned

    def get(self, key: str) -> StoredReply | None:
        waiting = self._replies.get(key)
        if waiting is not None:
            return waiting
        if key in self._known:
            return self._known[key]
        return self.inbox.get(key)

    def put(self, key: str, reply: StoredReply) -> None:
        self._replies[key] = reply

    def tombstone(self, action_key: str) -> None:
        self._tombstones.add(action_key)

    def is_tombstoned(self, action_key: str) -> bool:
        if action_key in self._tombstones:
            return True
        known = self._known_tombstones.get(action_key)
        return known if known is not None else self.inbox.is_tombstoned(action_key)

    @property
    def waiting(self) -> int:
        """Writes not committed yet."""
        return len(self._replies) + len(self._tombstones)

    def commit(self) -> None:
        """Write what waits to the inbox, all at once; on failure nothing is kept here."""
        if not self._replies and not self._tombstones:
            self._known, self._known_tombstones = {}, {}
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
        """Forget what waits (its replies are not sent either) and what was prefetched."""
        self._replies = {}
        self._tombstones = set()
        self._known = {}
        self._known_tombstones = {}

    def __repr__(self) -> str:
        return f"InboxBuffer({self.inbox!r}, {self.waiting} waiting)"
