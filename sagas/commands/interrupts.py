"""Stopping a process that drives sagas: the first Ctrl-C or SIGTERM stops it gracefully, a
second one at once.

Inside :func:`graceful_stop`, the first SIGINT or SIGTERM raises :class:`Stopped` in the main
thread, so the code that drives sagas unwinds as usual: runtimes close (the decisions taken
are committed, services and shards stopped) and the caller can say what it left in flight. A
second signal exits at once (``128 + signal``): what is in flight stays in the store, and
``saga resume`` finishes it. :func:`stop_reporting` is the same, and has :class:`Stopped`
say what was left in flight.

A process whose work is to run until it is stopped (``saga serve``) uses
:func:`signals_recorded` instead: a signal is only noted, and the process ends its loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Stopped", "graceful_stop", "signals_recorded", "stop_reporting"]


class Stopped(KeyboardInterrupt):
    """The first Ctrl-C or SIGTERM; ``signum`` says which, ``report`` what to tell the user
    (what was left in flight, when the code that stopped knows)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.report = "interrupted"


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as the module's docstring says, while the block runs (in the
    main thread only: elsewhere it changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        hits.append(signum)
        if len(hits) > 1:
            os.write(2, b"interrupted again: exiting now; 'saga resume' finishes what is left\n")
            os._exit(128 + signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_reporting(report: Callable[[], str]) -> Iterator[None]:
    """:func:`graceful_stop` around the block; a :class:`Stopped` that ends it carries
    ``report()`` (called once the block has unwound: its runtimes are closed)."""
    try:
        with graceful_stop():
            yield
    except Stopped as stopped:
        stopped.report = report()
        raise


@contextlib.contextmanager
def signals_recorded() -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM are appended to the list it yields, and do
    nothing else (a handler that only appends takes no lock): the block checks the list."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
