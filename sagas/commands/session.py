"""A store, or a runtime on one, for the length of one command.

Only the commands that write sagas or events (``run``, ``serve``, ``resume``, ``send``) create
a store that does not exist; the others, on a missing store, say ``no saga store at PATH``
(``StoreMissing``) and create nothing.

On a store shared by several processes (PostgreSQL) the sagas are driven by its *members*
(``saga serve``): while one is alive, a command's runtime is a client of theirs (it writes
what it starts, cancels or retries to the store and follows the log); while none is, it is a
temporary member itself, driving every partition until it closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from actors import Faults

from ..engine.membership import DEFAULT_LEASE_TTL
from ..engine.runtime import SHARED_SCHEMES, Runtime
from ..errors import InputError
from ..stores import MemberInfo, SagaStore, open_store
from .placement import runtime_options

__all__ = ["CLOSE_TIMEOUT", "SHARED_SCHEMES", "is_alive", "is_shared", "is_shared_url",
           "live_members", "runtime_session", "store_session"]

CLOSE_TIMEOUT = 3.0
"""Seconds a command's runtime waits for its services when it closes: a handler that blocks
forever must not keep a command from exiting once its sagas are done."""


@contextlib.contextmanager
def store_session(store_url: str, *, create: bool) -> Iterator[SagaStore]:
    """The store at ``store_url`` while the block runs, closed after it."""
    store = open_store(store_url, create=create)
    try:
        yield store
    finally:
        store.close()


def is_shared_url(store_url: str) -> bool:
    """Whether the store at ``store_url`` is one whose sagas members drive (PostgreSQL): where
    a :class:`~sagas.engine.runtime.Runtime` is a member by default."""
    return store_url.lower().startswith(SHARED_SCHEMES)


def is_shared(store: SagaStore) -> bool:
    """:func:`is_shared_url` of an open store."""
    return is_shared_url(store.url)


def is_alive(member: MemberInfo) -> bool:
    """Whether ``member`` was seen within its lease length (what it says of itself in its
    heartbeat, :data:`~sagas.engine.membership.DEFAULT_LEASE_TTL` if it does not)."""
    ttl = member.info.get("lease_ttl", DEFAULT_LEASE_TTL)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        ttl = DEFAULT_LEASE_TTL
    return member.seen_ago < ttl


def live_members(store: SagaStore) -> list[str]:
    """The members of ``store`` that drive its sagas now, by id: alive (:func:`is_alive`) and
    holding at least one partition."""
    holders = {info.member for info in store.leases() if info.held}
    return sorted(m.member for m in store.members() if is_alive(m) and m.member in holders)


def _named(members: list[str]) -> str:
    shown = ", ".join(members[:3])
    return shown + (f" and {len(members) - 3} more" if len(members) > 3 else "")


@contextlib.contextmanager
def runtime_session(store_url: str, fail: Sequence[str] = (), *,
                    create: bool = True) -> Iterator[Runtime]:
    """A runtime on the store at ``store_url`` while the block runs, then closed with a short
    wait for services (:data:`CLOSE_TIMEOUT`). ``fail``: steps whose every action attempt is
    rejected (``saga run --fail STEP``).

    On a shared store with a live member (:func:`live_members`) the runtime is a client
    (``runtime.client``); ``fail`` is refused then (``InputError``): the members' services
    would run the steps, not this process's."""
    faults = None
    if fail:
        faults = Faults()
        for step in fail:
            faults.add(step=step, phase="action", kind="reject",
                       message=f"injected by --fail {step}")
    with store_session(store_url, create=create) as store:
        drivers = live_members(store) if is_shared(store) else []
        if drivers and fail:
            raise InputError(f"--fail needs the services in this process, but member"
                             f"{'s' if len(drivers) > 1 else ''} {_named(drivers)} drive"
                             f"{'' if len(drivers) > 1 else 's'} this store's sagas: stop "
                             "them (saga serve) or use a SQLite store")
        runtime = Runtime(store, faults=faults, client=bool(drivers),
                          **runtime_options(client=bool(drivers)))
        try:
            yield runtime
        finally:
            runtime.close(timeout=CLOSE_TIMEOUT)
