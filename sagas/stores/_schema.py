"""What both SQL backends (SQLite, PostgreSQL) check of a store's schema when they open it,
with the same words: whether it is a sagactor store at all, its version, its tables and its
number of partitions. Each backend reads what is checked with its own SQL (and keeps its
version history, its tables and its migrations); the checks here only judge what it read.

Each check raises :class:`~sagas.errors.StoreUnavailable` with one line naming the store (its
file's path, or its URL with the password masked: whatever the caller passes as ``store``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sagas.errors import StoreUnavailable

from ._port import MAX_PARTITIONS

__all__ = ["check_tables", "not_a_store", "partition_count", "schema_version"]


def not_a_store(store: object, holder: str, tables: Collection[str]) -> StoreUnavailable:
    """The error for a database that is no sagactor store: ``holder`` says where its
    ``tables`` are (``"a SQLite database with"``, ``"schema sagactor has"``), the first five
    of them listed."""
    listed = f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}"
    return StoreUnavailable(
        f"saga store {store} is not a sagactor store ({holder} tables {listed})"
    )


def schema_version(store: object, value: object, versions: Collection[int], current: int, *,
                   newer: str = "") -> int:
    """The schema version recorded as ``value``, if it is one of ``versions`` (those this code
    knows) and not above ``current`` (the one it writes); else ``StoreUnavailable``, for a
    newer one with ``newer`` at the end of its message (what to do about it)."""
    try:
        version = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError) as err:
        raise StoreUnavailable(
            f"saga store {store} has an unreadable schema version {value!r}"
        ) from err
    if version > current:
        raise StoreUnavailable(
            f"saga store {store}: schema version {version} is newer than this sagactor "
            f"supports ({current}){newer}"
        )
    if version not in versions:
        raise StoreUnavailable(f"saga store {store} has unknown schema version {version}")
    return version


def check_tables(store: object, tables: Collection[str], expected: Collection[str]) -> None:
    """``StoreUnavailable`` if a table of ``expected`` (those of the store's schema version)
    is not among ``tables``."""
    missing = set(expected) - set(tables)
    if missing:
        raise StoreUnavailable(
            f"saga store {store} is damaged: table(s) {', '.join(sorted(missing))} missing"
        )


def partition_count(store: object, row: Sequence[Any] | None, wanted: int | None) -> int:
    """The store's number of partitions, as recorded in ``row`` (its first value; ``None``
    if there is none); ``StoreUnavailable`` if it is unreadable or out of range, or not
    ``wanted`` (the number its opener asked for, if one)."""
    try:
        count = int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= MAX_PARTITIONS:
        raise StoreUnavailable(f"saga store {store} is damaged: its number of "
                               f"partitions is {row[0] if row else 'missing'!r}")
    if wanted is not None and wanted != count:
        raise StoreUnavailable(
            f"saga store {store} has {count} partitions, not {wanted}: a store's "
            "partitions are fixed when it is created"
        )
    return count
