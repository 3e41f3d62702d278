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
``postgresql://user[:password]``   :class:`~sagas.stores.postgres.PostgresStore` in database
``@host[:port]/db``                ``db`` of a PostgreSQL server (``postgres://`` too), with
                                   the ``postgres`` extra (psycopg 3)
``...?partitions=N``               every form: the number of partitions of a store created
                                   now (1 to 16384, default 64); see below
=================================  =====================================================

The SQLite forms follow SQLAlchemy's convention. The path is taken as written (no percent
decoding), so it cannot contain ``?``.

The PostgreSQL form is libpq's, with a user and a database always named: user, password
and database are percent-decoded; the host is a name, an IPv4 address or ``[IPv6]``; the
port defaults to 5432. Options: ``?sslmode=...``, ``?sslrootcert=PATH``,
``?connect_timeout=SECONDS`` (default 5), ``?application_name=...``, and ``?host=/socket/dir``
with an empty host (``postgresql://user@/db?host=/run/postgresql``) for a unix socket. Without
a password in the URL, libpq's ``PGPASSWORD`` and ``~/.pgpass`` are used. A password is never
shown: :func:`display_url` masks it (``postgresql://user:***@host/db``) wherever a store
shows a URL, in errors, reprs and logs, and a store's ``url`` is the masked one.

``open_store(url)`` creates a SQLite store that does not exist yet (its directories too, all
private), or a PostgreSQL one (its schema, and its database if the user may create one);
``open_store(url, create=False)`` opens only an existing one and raises
:class:`~sagas.errors.StoreMissing` (``no saga store at PATH``, exit code 5) otherwise, having
created nothing: what commands that only read or act on existing sagas use.

Partitions: a store has a fixed number of them, chosen when it is created (``?partitions=N``
in the URL, or ``open_store(url, partitions=N)``; default 64) and kept in it; a saga's
partition is :func:`partition_of` its id. Opening an existing store with an explicit number
it does not have raises ``StoreUnavailable`` (the number cannot change); without one, a store
opens with the number it has. The partitions' leases (:class:`Leases`) let several
orchestrator processes share one store, each writing only to the sagas of the partitions it
holds, its writes fenced (:class:`Fence`, :class:`~sagas.errors.LeaseLost`).

The port a backend implements, :class:`SagaStore`, is made of small facets, each documented
in one place: :class:`EventLog` (sagas and their logs), :class:`LogReader` (the global log,
with :class:`Cursors`), :class:`Ownership`, :class:`Leases`, :class:`Requests`,
:class:`ExternalEvents` and :class:`ServiceInbox`; a component names the facets it uses.
Every backend passes the contract suite :mod:`sagas.stores.contract` (a pytest suite, with the
``test`` extra).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from sagas.errors import BadStoreUrl, StoreUnavailable
from sagas.stores._checks import check_partition_count, check_subscriber
from sagas.stores._port import (
    DEFAULT_PARTITIONS,
    TERMINAL,
    Append,
    Cursors,
    EventLog,
    ExternalEvent,
    ExternalEvents,
    Fence,
    Lease,
    LeaseInfo,
    Leases,
    LogEntry,
    LogReader,
    MemberInfo,
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
    Writer,
    partition_of,
)
from sagas.stores.memory import MemoryStore
from sagas.stores.sqlite import SYNCHRONOUS, SqliteStore

__all__ = [
    "DEFAULT_PARTITIONS",
    "TERMINAL",
    "Append",
    "Cursors",
    "EventLog",
    "ExternalEvent",
    "ExternalEvents",
    "Fence",
    "Lease",
    "LeaseInfo",
    "Leases",
    "LogEntry",
    "LogReader",
    "MemberInfo",
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
    "Writer",
    "check_subscriber",
    "display_url",
    "open_store",
    "partition_of",
]

_SUPPORTED = (
    "memory://, sqlite:///relative/path.db or sqlite:////absolute/path.db "
    "(optionally ?synchronous=normal|full), or postgresql://user[:password]@host[:port]/db"
)
_POSTGRES_OPTIONS = ("application_name", "connect_timeout", "host", "partitions", "sslmode",
                     "sslrootcert")
_MASK = "***"
_PASSWORD_OPTION = re.compile(r"(?i)((?:^|[?&;])password=)[^&;#]*")


def display_url(url: str) -> str:
    """``url`` fit to show: a password in it replaced by ``***``
    (``postgresql://user:***@host/db``), as every store shows a URL, in errors, reprs and
    logs. Any string is taken (a malformed URL too), and what could be a password is masked:
    everything between the first ``:`` of the part before the last ``@`` and that ``@``, and
    the value of a ``password=`` option."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{_MASK}{rest[at:]}"
    rest = _PASSWORD_OPTION.sub(rf"\g<1>{_MASK}", rest)
    return f"{scheme}{sep}{rest}"


def open_store(url: str, *, create: bool = True, partitions: int | None = None) -> SagaStore:
    """Open the store a URL names (see the module docstring for the forms), creating it if
    it does not exist, or, with ``create=False``, only if it exists (``memory://`` is always
    a new, empty store). ``partitions`` (or the URL's ``?partitions=N``) is the number of
    partitions of a store created now, and the number an existing one must have (``None``:
    the default, 64, for a new store, whatever it has for an existing one).

    Raises ``BadStoreUrl`` for an unknown scheme or a malformed URL (the message lists the
    supported forms; a number of partitions that is not one, or given twice with two
    values, too), ``StoreMissing`` with ``create=False`` when there is no store (nothing is
    created), and ``StoreUnavailable`` if the store exists but cannot be used (or has another
    number of partitions than the one asked for).
    """
    if not isinstance(url, str):
        raise BadStoreUrl(f"a store URL must be a string, got {type(url).__name__}")
    shown = display_url(url)
    if partitions is not None:
        try:
            check_partition_count(partitions)
        except (TypeError, ValueError) as err:
            raise BadStoreUrl(f"store {shown!r}: {err}") from None
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise BadStoreUrl(f"bad store URL {shown!r}: expected {_SUPPORTED}")
    if scheme == "memory":
        if rest and not rest.startswith("?"):
            raise BadStoreUrl(f"bad store URL {shown!r}: memory:// takes no path (and one "
                              "option, ?partitions=N)")
        options = _options(shown, rest[1:], ("partitions",))
        count = _partitions(shown, options.pop("partitions", None), partitions)
        return MemoryStore(DEFAULT_PARTITIONS if count is None else count)
    if scheme == "sqlite":
        path, options = _sqlite_parts(shown, rest)
        count = _partitions(shown, options.pop("partitions", None), partitions)
        return SqliteStore(path, **options, create=create, partitions=count)
    if scheme in ("postgresql", "postgres"):
        params = _postgres_parts(shown, rest)
        params["partitions"] = _partitions(shown, params.pop("partitions", None), partitions)
        return _postgres_store(shown, params, create)
    raise BadStoreUrl(f"unsupported store URL {shown!r}: expected {_SUPPORTED}")


def _partitions(url: str, option: str | None, given: int | None) -> int | None:
    """The number of partitions asked for by the URL's ``?partitions=`` (``option``) and the
    ``partitions`` argument (``given``, checked), or ``None``; ``BadStoreUrl`` if the option
    is not a number of partitions or the two differ."""
    if option is None:
        return given
    if not option.isdigit() or option != str(int(option)):
        raise BadStoreUrl(f"bad store URL {url!r}: partitions is a whole number, got {option!r}")
    try:
        count = check_partition_count(int(option))
    except ValueError as err:
        raise BadStoreUrl(f"bad store URL {url!r}: {err}") from None
    if given is not None and given != count:
        raise BadStoreUrl(f"store {url!r}: partitions={given} and the URL's partitions={count} "
                          "disagree")
    return count


def _options(url: str, query: str, known: tuple[str, ...]) -> dict[str, str]:
    """The options of a URL's query, each at most once and each one of ``known``."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:  # its message quotes the field, which may hold a secret: not shown
        raise BadStoreUrl(
            f"bad store URL {url!r}: malformed options (each is name=value, joined by &)"
        ) from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in known:
            raise BadStoreUrl(
                f"bad store URL {url!r}: unknown option {key!r} (known: {', '.join(known)})"
            )
        if key in options:
            raise BadStoreUrl(f"bad store URL {url!r}: option {key!r} given twice")
        options[key] = value
    return options


def _sqlite_parts(url: str, rest: str) -> tuple[str, dict[str, str]]:
    """``(path, options)`` of a ``sqlite://`` URL (``url`` as shown in errors), ``rest``
    being what follows ``://``."""
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
    options = _options(url, query, ("partitions", "synchronous"))
    for key, value in options.items():
        if key == "partitions":
            continue
        if value.lower() not in SYNCHRONOUS:
            raise BadStoreUrl(
                f"bad store URL {url!r}: synchronous must be one of {', '.join(SYNCHRONOUS)}, "
                f"got {value!r}"
            )
        options[key] = value.lower()
    return path, options


def _postgres_parts(url: str, rest: str) -> dict[str, Any]:
    """The connection parameters of a ``postgresql://`` URL (``url`` as shown in errors, its
    password masked), ``rest`` being what follows ``://``: ``user``, ``password`` (or
    ``None``), ``host``, ``port`` (or ``None``), ``dbname`` and the options."""

    def bad(why: str) -> BadStoreUrl:
        return BadStoreUrl(f"bad store URL {url!r}: {why}; expected {_SUPPORTED}")

    if "#" in rest:
        raise bad("a fragment (#...) is not allowed")
    authority, slash, rest = rest.partition("/")
    at = authority.rfind("@")
    if at < 0:
        raise bad("no user named")
    userinfo, hostport = authority[:at], authority[at + 1:]
    user, colon, password = userinfo.partition(":")
    user = _decoded(user, "the user", bad)
    if not user:
        raise bad("no user named")
    database, _, query = rest.partition("?")
    dbname = _decoded(database, "the database name", bad)
    if not slash or not dbname or "/" in dbname:
        raise bad("no database named")
    host, port = _host_port(hostport, bad)
    options: dict[str, Any] = _options(url, query, _POSTGRES_OPTIONS)
    if "host" in options:
        if host:
            raise bad("a host is named twice (before the path and as ?host=)")
        host = options.pop("host")
    if not host:
        raise bad("no host named (for a unix socket: postgresql://user@/db?host=/socket/dir)")
    if "connect_timeout" in options:
        seconds = options["connect_timeout"]
        if not seconds.isdigit() or not 1 <= int(seconds) <= 3600:
            raise bad(f"connect_timeout is a whole number of seconds from 1, got {seconds!r}")
    secret = _decoded(password, "the password", bad) if colon else None
    return {"user": user, "password": secret, "host": host, "port": port, "dbname": dbname,
            **options}


def _decoded(text: str, what: str, bad: Any) -> str:
    """``text`` percent-decoded (as UTF-8); ``bad(...)`` if that is not text."""
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise bad(f"{what} is not percent-encoded UTF-8") from None


def _host_port(hostport: str, bad: Any) -> tuple[str, int | None]:
    """``(host, port)`` of ``host[:port]`` or ``[ipv6][:port]``."""
    if hostport.startswith("["):
        host, bracket, port_text = hostport[1:].partition("]")
        if not bracket or not host or (port_text and not port_text.startswith(":")):
            raise bad(f"malformed host {hostport!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
        host = _decoded(host, "the host", bad)
    if not port_text and not hostport.endswith(":"):
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"the port is a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def _postgres_store(url: str, params: dict[str, Any], create: bool) -> SagaStore:
    """A :class:`~sagas.stores.postgres.PostgresStore` on ``params``; ``StoreUnavailable`` in
    one line naming the ``postgres`` extra when psycopg is missing."""
    try:
        from sagas.stores.postgres import PostgresStore
    except ImportError as err:
        missing = (err.name or "").split(".")[0] == "psycopg"
        if not missing and "libpq" not in str(err) and "pq wrapper" not in str(err):
            raise
        raise StoreUnavailable(
            f"saga store {url} needs psycopg 3, which is not installed here: "
            "pip install 'sagactor[postgres]'"
        ) from None
    return PostgresStore(**params, create=create)
