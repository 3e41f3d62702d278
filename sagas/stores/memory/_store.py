"""The memory store, made of its facets (one module each) over their shared state."""

from __future__ import annotations

from actors import MemoryInbox
from sagas.stores._checks import check_partition_count
from sagas.stores._port import DEFAULT_PARTITIONS

from ._external import _ExternalEvents
from ._leases import _Leases
from ._log import _EventLog
from ._ownership import _Ownership
from ._reader import _LogReader
from ._requests import _Requests

__all__ = ["MemoryStore"]


class MemoryStore(_EventLog, _LogReader, _Ownership, _Leases, _Requests, _ExternalEvents):
    """A :class:`~sagas.stores.SagaStore` in dicts; each instance is a fresh, empty store of
    ``partitions`` partitions (default 64).

    Thread-safe: one lock serialises every operation, so each one is atomic. Positions and
    request ids count from 1 with no gaps. Closing drops everything, owner registrations
    included; the inbox, an :class:`actors.MemoryInbox`, keeps working after it.
    """

    url = "memory://"

    def __init__(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        count = check_partition_count(partitions)
        super().__init__()
        self._partition_count = count
        self._inbox = MemoryInbox()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._sagas)} sagas, {self._last_position} events)"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def inbox(self) -> MemoryInbox:
        """This store's service inbox: an :class:`actors.MemoryInbox` (always the same one)."""
        return self._inbox
