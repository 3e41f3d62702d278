"""Opt-in tuning of Python's cyclic garbage collector for high saga throughput.

A runtime with a few hundred sagas in flight keeps many short-lived objects alive across the
collector's default young-generation window (700 allocations): they survive, are promoted, and
push the collector into full collections that walk the whole heap — about a quarter of the CPU
of a 20,000-saga batch on the benchmark machine, with pauses of 300 ms (BENCHMARKS.md). With a
wider window almost all of them die young and are freed by reference counting, never examined.

The collector's thresholds are process-wide, so the library never changes them on its own: an
application opts in by calling :func:`tune_gc` once (the ``saga`` CLI does).
"""

from __future__ import annotations

import gc

__all__ = ["THROUGHPUT_THRESHOLDS", "tune_gc"]

THROUGHPUT_THRESHOLDS = (50_000, 20, 100)
"""Young-generation allocations before a collection; then how many collections of each
generation before one of the next (CPython's defaults are ``(700, 10, 10)``)."""


def tune_gc(thresholds: tuple[int, int, int] = THROUGHPUT_THRESHOLDS) -> tuple[int, int, int]:
    """Set the collector's thresholds (``gc.set_threshold``); returns the previous ones, so a
    caller can restore them. Cyclic garbage is still collected, only less often."""
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    return previous
