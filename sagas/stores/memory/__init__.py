"""The in-memory saga store (``memory://``): for tests and throwaway runs.

Everything lives in dicts guarded by one lock, and nothing survives the process. The store keeps
the contract of the durable stores to the letter, JSON round trip included: event data and saga
input are kept as JSON text, so every read returns a fresh copy, later changes to the objects
given to :meth:`MemoryStore.create` / :meth:`MemoryStore.append` do not reach the log, and data
that is not JSON is refused when written (as the SQLite store refuses it).

The store is built so that Python's cyclic garbage collector has next to nothing to do with it,
however many sagas it holds: a full collection visits every tracked container, and every item
of those, each time it runs. So the store keeps plain tuples of strings, numbers and such tuples
(CPython untracks them once a collection has seen them, and visits them no more) and dicts of
strings (never tracked), not lists, sets or instances: a saga is one tuple of its header fields
and of the tuple of its events, replaced whole on each change, and the global log is a list of
frozen chunks of ``_CHUNK`` events each, plus one list filling the next chunk. The price is
that each append to a saga copies its events, a cost quadratic in the length of a saga's log:
nothing for the tens of events a saga usually has, felt from thousands of events on one saga,
which this store (for tests and throwaway runs) does not expect. External events follow the
same rule.

The store is one class made of a mixin per facet of the port, over the lock, the sagas and the
global log they share (``_state``): ``_log`` (:class:`~sagas.stores.EventLog`), ``_reader``
(:class:`~sagas.stores.LogReader`: the global log, and the cursors, a dict from subscriber name
to position), ``_ownership`` (an owner is alive while it is registered on this store object,
until :meth:`MemoryStore.close`; any other owner is dead), ``_leases`` (the partitions' leases,
kept in ``_state`` since the log's fenced writes check them, and the members), ``_requests``
and ``_external`` (external events). The service inbox is an :class:`actors.MemoryInbox`.
"""

from __future__ import annotations

from ._store import MemoryStore

__all__ = ["MemoryStore"]

