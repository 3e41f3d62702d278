"""The SQLite saga store (``sqlite:///path``): embedded, durable, shareable by several processes.

The database runs in WAL mode with a busy timeout, so several processes (and several
:class:`SqliteStore` objects) can use one file: writers take SQLite's write lock with
``BEGIN IMMEDIATE`` and wait up to the busy timeout for it. Within one object, every write goes
through one connection guarded by a lock, and each thread reads on a connection of its own
(opened on its first read, closed by :meth:`SqliteStore.close` or when the thread ends): in WAL
mode readers do not wait for the writer, and a read sees everything committed before it starts.
A read of one statement runs in autocommit; a read of several (``load``, ``load_many``) runs in
one read transaction, so its statements agree.

``synchronous=normal`` (the default) survives a crash of the process; ``synchronous=full`` also
survives a power loss, at the cost of an fsync per commit.

The schema (version 6, listed in ``_schema``, where it is checked and migrated) has tables
for each facet of the port: ``sagas``, ``events`` and ``definitions`` (the event log), ``cursors``,
``owners``, ``leases`` and ``members``, ``requests``, ``external_events``, ``inbox`` and
``tombstones``; an older file is migrated forward in place when opened (one transaction).
Positions are given out under SQLite's one write lock, so they become visible to readers in
order (``_reader``); a fenced write, and a ``claim``, reads its leases under that lock too,
so no acquirer changes them before it commits (``_fence``).

The store is one class made of a mixin per facet, each in its module, over the connections they
share (``_connection``): ``_log``, ``_reader`` (with the cursors), ``_ownership``, ``_leases``
(with ``_fence``), ``_requests``, ``_external`` and ``_inbox`` (:class:`SqliteInbox`).

Ownership (several processes sharing one file) must never hand a live owner's sagas to
another runtime, and must notice a dead owner however it died. Two records say an owner lives,
and neither alone is trusted when it says "dead":

- *A lock*: :meth:`SqliteStore.register_owner` takes an exclusive ``flock`` on
  ``<db file>.owners/<owner>.lock`` and holds it until :meth:`SqliteStore.close` or the death
  of the process, however it dies (the OS drops the lock). A lock file that is there and
  locked is a live owner; one that is there and unlocked is a stale one (removed when seen).
- *A registration*: in the same call, a row of ``owners`` records the owner's process: its
  pid, its start time (``/proc/<pid>/stat``), the boot id and the pid namespace
  (:mod:`sagas.stores._process`). ``close()`` deletes it; a crash leaves it behind.

An owner is alive if its lock file is locked, or else if it has a registration whose process
still runs (same pid, same start time: a reused pid is another process). A process that exited
(a zombie included), or that ran before the last boot, is gone. Deleting ``<db>.owners/`` or a
lock file therefore takes nothing from a live owner: its registration keeps it alive. Where the
process cannot be seen (another pid namespace, no ``/proc``) the lock file decides: unlocked,
the owner is gone; missing, it is taken as alive (never adopted when unsure). A registration
whose process is gone is deleted by the next ``adopt`` that finds it, or the next
``register_owner``. Registering an id whose owner is alive (its lock held, or its lock file
deleted but its process running) fails. The lock belongs to the open file, so a process that
``fork()`` s without ``exec`` shares it with its child: the owner lives until both are gone.

Files: everything the store creates is private (:mod:`sagas.stores._files`): directories
``0700``, the database file ``0600`` (created empty before SQLite opens it; SQLite then gives
its ``-wal``, ``-shm`` and ``-journal`` files the database file's mode), lock files ``0600``;
a stricter umask is respected, and existing files and directories keep their modes. Opened
with ``create=False`` (the commands that only read or act on existing sagas), a missing store
raises :class:`~sagas.errors.StoreMissing` and nothing is created: no directory, no file.
SQLite itself never creates the file (it is opened with ``mode=rw``).

Every sqlite3 error is translated (in ``_connection``): a file that cannot be used (not a
database, damaged, truncated, another application's database, a newer schema, locked beyond the
busy timeout) raises :class:`~sagas.errors.StoreUnavailable` with one line naming the file.
An existing file is never reset or overwritten; only a new or empty one gets the schema.
"""

from __future__ import annotations

from ._connection import SYNCHRONOUS
from ._inbox import SqliteInbox
from ._schema import SCHEMA_VERSION
from ._store import SqliteStore

__all__ = ["SCHEMA_VERSION", "SYNCHRONOUS", "SqliteInbox", "SqliteStore"]

