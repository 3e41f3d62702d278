"""A store, or a runtime on one, for the length of one command.

Only the commands that write sagas or events (``run``, ``serve``, ``resume``, ``send``) create
a store that does not exist; the others, on a missing store, say ``no saga store at PATH``
(``StoreMissing``) and create nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from actors import Faults

from ..engine.runtime import Runtime
from ..stores import SagaStore, open_store

__all__ = ["CLOSE_TIMEOUT", "runtime_session", "store_session"]

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


@contextlib.contextmanager
def runtime_session(store_url: str, fail: Sequence[str] = (), *,
                    create: bool = True) -> Iterator[Runtime]:
    """A runtime on the store at ``store_url`` while the block runs, then closed with a short
    wait for services (:data:`CLOSE_TIMEOUT`). ``fail``: steps whose every action attempt is
    rejected (``saga run --fail STEP``)."""
    faults = None
    if fail:
        faults = Faults()
        for step in fail:
            faults.add(step=step, phase="action", kind="reject",
                       message=f"injected by --fail {step}")
    with store_session(store_url, create=create) as store:
        runtime = Runtime(store, faults=faults)
        try:
            yield runtime
        finally:
            runtime.close(timeout=CLOSE_TIMEOUT)
