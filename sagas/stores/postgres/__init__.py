"""The PostgreSQL saga store (``postgresql://user[:password]@host[:port]/db``): several
processes, on several hosts, share one database.

Needs psycopg 3 (the ``postgres`` extra: ``pip install 'sagactor[postgres]'``); open it with
:func:`sagas.stores.open_store` (which says so in one line when psycopg is missing) or
:class:`PostgresStore` with libpq's connection parameters.

The store's tables live in the schema ``sagactor`` of the database (version 3, listed in
``_schema``, where it is checked and migrated like SQLite's): opening a database without it
creates it (and the database, if it is missing and the user may), ``create=False`` creates
nothing and raises :class:`~sagas.errors.StoreMissing`, and a newer schema is refused with one
line. Every psycopg error is translated (in ``_connection``) into a store error of one line
naming the store by its URL with the password masked: a password is never shown.

Each store object has one write connection, shared by its threads under a lock (as SQLite's
store has), one more for the service inbox's writes (opened when first used, under a lock of
its own, so that the services' replies and the shards' group commits do not wait for each
other), and up to four read connections lent to one read at a time. A write is one statement
in autocommit, or one transaction (``write``, ``claim_event``, the inbox's ``write_many``...)
retried when the server ends it for a deadlock. Reads of one statement run in autocommit and
see everything committed before they start; those of several (``load``, ``load_many``, the
inbox's ``read_many``) run in one read-only snapshot.

The semantics are SQLite's (the contract suite :mod:`sagas.stores.contract` proves both):
``(saga_id, seq)`` is the events' primary key, the last line of defence of the per-saga seq
check each append makes in its ``UPDATE``; appends of many sagas are group-committed (one
transaction of a few statements whose rows go as arrays in binary format, in two or three
round trips: ``_log``); positions are taken from a counter row, whose lock
makes them visible in order (``_log``, ``_reader``). Leases are judged by the server's clock,
and a fenced write locks the leases it checked (``FOR SHARE``) until it commits, so a member
taking a partition over waits for a write of the previous holder under way (``_leases``).

Ownership. SQLite tells a live owner by a lock file and its process's identity on one host;
PostgreSQL sees the sessions of every host. An owner registers by taking a *session advisory
lock* on a key made from its id, on the store object's write connection, and writing a row of
``owners`` naming that session (``pg_backend_pid()``); it is alive while that session holds
the lock (``pg_locks``), and dead once the session ends: when the store is closed, or when the
server sees its client gone (at once for a process that died on a live host: the kernel closes
its socket; within about 25 s for a host that died, through the TCP keepalives and user timeout
the write connection sets; an owner killed in the middle of a statement is dead once that
statement ends). Nothing a user can delete by hand keeps or takes an owner's life, and an
owner's sagas are never adopted while it holds its lock. Adopters take turns under a
transaction-level advisory lock, and take every saga not terminal whose owner is unset or dead
in one ``UPDATE``. The limits, which the partitions' leases and fenced writes (``_leases``)
are there to lift once the engine uses them (issue 16): an owner whose connection is cut
while its process lives (a network partition, a server restart) is dead to the others, who
may adopt its sagas while it still drives them (the seq check then refuses one of the two
writers, so no log forks, but a command may be sent twice); and session advisory locks need
a direct connection or session pooling, never a transaction-pooling proxy (PgBouncer's
``pool_mode = transaction``).
"""

from __future__ import annotations

from ._inbox import PostgresInbox
from ._schema import SCHEMA, SCHEMA_VERSION
from ._store import PostgresStore

__all__ = ["SCHEMA", "SCHEMA_VERSION", "PostgresInbox", "PostgresStore"]
