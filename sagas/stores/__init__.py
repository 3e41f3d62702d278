"""Saga stores, chosen by URL.

=================================  =====================================================
URL                                store
=================================  =====================================================
``memory://``                      a fresh, empty :class:`MemoryStore` (lost on exit)
``sqlite:///relative/path.db``     :class:`SqliteStore`, path relative to the working
                                   directory (three slashes, then the path)
``sqlite:////absolute/path.db``    :class:`SqliteStore` at ``/absolute/path.db``
                                   (four slashes: three, then the absolute path)
``...?synchronous=normal|full``    SQLite durability: ``normal`` (the default) survives
                                   a process crash, ``full`` also a power loss
=================================  =====================================================

The SQLite forms follow SQLAlchemy's convention. The path is taken as written (no percent
decoding), so it cannot contain ``?``.

``open_store(url)`` creates a SQLite store that does not exist yet (its directories too, all
private); ``open_store(url, create=False)`` opens only an existing one and raises
:class:`~sagas.errors.StoreMissing` (``no saga store at PATH``, exit code 5) otherwise, having
created nothing: what commands that only read or act on existing sagas use.

The port a backend implements, :class:`SagaStore`, is made of small facets, each documented
in one place: :class:`EventLog` (sagas and their logs), :class:`LogReader` (the global log,
with :class:`Cursors`), :class:`Ownership`, :class:`Requests`, :class:`ExternalEvents` and
:class:`ServiceInbox`; a component names the facets it uses. Every backend passes the contract
suite :mod:`sagas.stores.contract` (a pytest suite, with the ``test`` extra).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from sagas.errors import BadStoreUrl
from sagas.stores._checks import check_subscriber
from sagas.stores._port import (
    TERMINAL,
    Append,
    Cursors,
    EventLog,
    ExternalEvent,
    ExternalEvents,
    LogEntry,
    LogReader,
    NewSaga,
    Ownership,
    Request,
    Requests,
    SagaHeader,
    SagaRecord,
    SagaStore,
    ServiceInbox,
    StoredEvent,
    StoreFacet,
)
from sagas.stores.memory import MemoryStore
from sagas.stores.sqlite import SYNCHRONOUS, SqliteStore

__all__ = [
    "TERMINAL",
    "Append",
    "Cursors",
    "EventLog",
    "ExternalEvent",
    "ExternalEvents",
    "LogEntry",
    "LogReader",
    "MemoryStore",
    "NewSaga",
    "Ownership",
    "Request",
    "Requests",
    "SagaHeader",
    "SagaRecord",
    "SagaStore",
    "ServiceInbox",
    "SqliteStore",
    "StoreFacet",
    "StoredEvent",
    "check_subscriber",
    "open_store",
]

_SUPPORTED = (
    "memory://, sqlite:///relative/path.db or sqlite:////absolute/path.db "
    "(optionally ?synchronous=normal|full)"
)


def open_store(url: str, *, create: bool = True) -> SagaStore:
    """Open the store a URL names (see the module docstring for the forms), creating it if
    it does not exist, or, with ``create=False``, only if it exists (``memory://`` is always
    a new, empty store).

    Raises ``BadStoreUrl`` for an unknown scheme or a malformed URL (the message lists the
    supported forms), ``StoreMissing`` with ``create=False`` when there is no store (nothing
    is created), and ``StoreUnavailable`` if the store exists but cannot be used.
    """
    if not isinstance(url, str):
        raise BadStoreUrl(f"a store URL must be a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise BadStoreUrl(f"bad store URL {url!r}: expected {_SUPPORTED}")
    if scheme == "memory":
        if rest:
            raise BadStoreUrl(f"bad store URL {url!r}: memory:// takes no path or options")
        return MemoryStore()
    if scheme == "sqlite":
        path, options = _sqlite_parts(url, rest)
        return SqliteStore(path, **options, create=create)
    raise BadStoreUrl(f"unsupported store URL {url!r}: expected {_SUPPORTED}")


def _sqlite_parts(url: str, rest: str) -> tuple[str, dict[str, str]]:
    """``(path, options)`` of a ``sqlite://`` URL, ``rest`` being what follows ``://``."""
    if not rest.startswith("/"):
        raise BadStoreUrl(
            f"bad store URL {url!r}: a sqlite URL has no host; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path, _, query = rest[1:].partition("?")
    if not path or path.endswith("/"):
        raise BadStoreUrl(f"bad store URL {url!r}: no database file named")
    if path == ":memory:":
        raise BadStoreUrl(f"bad store URL {url!r}: for a store in memory use memory://")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as err:
        raise BadStoreUrl(f"bad store URL {url!r}: malformed options ({err})") from err
    options: dict[str, str] = {}
    for key, value in pairs:
        if key != "synchronous":
            raise BadStoreUrl(f"bad store URL {url!r}: unknown option {key!r} (known: synchronous)")
        if key in options:
            raise BadStoreUrl(f"bad store URL {url!r}: option {key!r} given twice")
        if value.lower() not in SYNCHRONOUS:
            raise BadStoreUrl(
                f"bad store URL {url!r}: synchronous must be one of {', '.join(SYNCHRONOUS)}, "
                f"got {value!r}"
            )
        options[key] = value.lower()
    return path, options
