"""The PostgreSQL store's ownership (:class:`~sagas.stores.Ownership`): session advisory locks
and the ``owners`` table (see :mod:`sagas.stores.postgres` for why an owner lives).

An owner's lock is a session-level advisory lock on a 64-bit key made from its id (the first
8 bytes of a sha256), taken with ``pg_try_advisory_lock`` on the store object's write
connection; its row in ``owners`` records the key and the server process of that session
(``pg_backend_pid()``). An owner is alive while a row of it names a session that holds its
lock (``pg_locks``): both conditions, so that another program's advisory lock on the same
key, or a row left behind by a crash, proves nothing.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from sagas.stores._checks import check_owner as _check_owner
from sagas.stores._checks import check_saga_ids as _ids
from sagas.stores._messages import registered_elsewhere

from ._connection import _Connection
from ._log import _TERMINAL

_logger = logging.getLogger("sagas.stores.postgres")

_ADOPT_LOCK = 0x5341_4741_0000_0002
"""The advisory lock adopters hold (for a transaction), so that they adopt one at a time."""

# Whether the owner of the row ``o`` of ``owners`` is alive: its session holds its lock.
# (A bigint advisory lock shows in pg_locks as classid = its high 32 bits, objid = its low
# 32 bits, objsubid = 1.)
_ALIVE = (
    "EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 1 AND l.pid = o.backend_pid "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = ((o.lock_key >> 32) & 4294967295) "
    "AND l.objid::bigint = (o.lock_key & 4294967295))"
)
_OWNER_ALIVE = f"SELECT EXISTS (SELECT 1 FROM owners AS o WHERE o.owner = %s AND {_ALIVE})"
_LOCK_OWNER = "SELECT pg_try_advisory_lock(%s)"
_UNLOCK_OWNER = "SELECT pg_advisory_unlock(%s)"
_REGISTER = (
    "INSERT INTO owners (owner, lock_key, backend_pid, host, pid, registered_at) "
    "VALUES (%s, %s, pg_backend_pid(), %s, %s, %s) "
    "ON CONFLICT (owner) DO UPDATE SET lock_key = excluded.lock_key, "
    "backend_pid = excluded.backend_pid, host = excluded.host, pid = excluded.pid, "
    "registered_at = excluded.registered_at"
)
# Rows of owners that are gone. Correlated, so that a row a registrant replaces meanwhile is
# judged on its new session, not on the old one.
_FORGET_DEAD = f"DELETE FROM owners AS o WHERE NOT {_ALIVE}"
_UNREGISTER = "DELETE FROM owners WHERE owner = ANY(%s) AND backend_pid = pg_backend_pid()"
# Adopting: the live owners are found once (materialized), then every saga not terminal whose
# owner is unset or not one of them is taken, in one statement.
_ADOPT = (
    f"WITH live AS MATERIALIZED (SELECT o.owner FROM owners AS o WHERE {_ALIVE}) "
    "UPDATE sagas SET owner = %(owner)s "
    "WHERE status <> ALL(%(excluded)s) {only} AND (owner IS NULL OR (owner <> %(owner)s "
    "AND owner NOT IN (SELECT owner FROM live))) "
    "RETURNING saga_id, started_at"
)


def _lock_key(owner: str) -> int:
    """The key (a signed 64-bit int) of ``owner``'s advisory lock."""
    digest = hashlib.sha256(f"sagactor owner {owner}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Ownership(_Connection):
    """The owners registered on this store object (``_owners``) hold their locks on its write
    connection; ``close()`` deletes their rows, then closes it, which lets the locks go."""

    _owners: builtins.set[str]

    def register_owner(self, owner: str) -> None:
        """The owner's advisory lock on the write connection, and its row in ``owners``;
        ``StoreUnavailable`` if another session holds the lock (a live runtime registered
        it). Rows of owners found gone are deleted on the way."""
        _check_owner(owner)
        key = _lock_key(owner)
        with self._lock:
            db = self._connection()
            if owner in self._owners:
                return
            try:
                (locked,) = db.execute(_LOCK_OWNER, (key,)).fetchone()  # type: ignore[misc]
                if not locked:
                    raise registered_elsewhere(self.url, owner)
                try:
                    db.execute("BEGIN")
                    db.execute(_REGISTER, (owner, key, socket.gethostname(), os.getpid(),
                                           time.time()))
                    db.execute(_FORGET_DEAD)
                    db.execute("COMMIT")
                except BaseException:
                    if not db.broken:
                        db.execute("ROLLBACK")
                        db.execute(_UNLOCK_OWNER, (key,))
                    raise
            except psycopg.Error as err:
                raise self._translate(err) from err
            self._owners.add(owner)

    def _reopened(self, db: psycopg.Connection[Any]) -> None:
        """The owners registered here take their locks and rows anew on the new session
        (their old session is gone, and its locks with it); ``StoreUnavailable`` if another
        session took one meanwhile (an adopter saw the owner dead: it must not come back)."""
        try:
            for owner in sorted(self._owners):
                key = _lock_key(owner)
                (locked,) = db.execute(_LOCK_OWNER, (key,)).fetchone()  # type: ignore[misc]
                if not locked:
                    raise registered_elsewhere(self.url, owner)
                db.execute(_REGISTER, (owner, key, socket.gethostname(), os.getpid(),
                                       time.time()))
        except psycopg.Error as err:
            raise self._translate(err) from err

    def _unregister(self, db: psycopg.Connection[Any], owners: builtins.list[str]) -> None:
        """Delete the rows of ``owners`` (on close; closing the connection then lets their
        locks go). If that fails the rows stay, and prove nothing once the locks are gone:
        logged, not raised."""
        try:
            db.execute(_UNREGISTER, (owners,))
        except psycopg.Error as err:
            _logger.warning("saga store %s: cannot unregister owners %s (%s)", self.url,
                            ", ".join(owners), self._reason(err))

    def owner_alive(self, owner: str) -> bool:
        """Alive while a row of it names a session that holds its lock."""
        _check_owner(owner)
        return bool(self._fetch(_OWNER_ALIVE, (owner,))[0][0])

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> builtins.list[str]:
        """One transaction holding the adopters' advisory lock (adopters take turns): one
        statement takes the sagas whose owner is unset or holds no lock, then the rows of the
        owners found gone are deleted. A saga being written meanwhile is taken once its
        writer commits, if its owner still qualifies."""
        _check_owner(owner)
        wanted = None if saga_ids is None else _ids(saga_ids)
        excluded = ["completed", "compensated"] if include_failed else _TERMINAL
        only = "" if wanted is None else "AND saga_id = ANY(%(ids)s)"
        statement = _ADOPT.replace("{only}", only)

        def adopt(db: psycopg.Connection[Any]) -> builtins.list[Any]:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_ADOPT_LOCK,))
            rows = db.execute(statement, {"owner": owner, "excluded": excluded,
                                          "ids": wanted}).fetchall()
            db.execute(_FORGET_DEAD)
            return rows

        if wanted == []:
            with self._lock:
                self._connection()  # StoreUnavailable once closed
            return []
        adopted = self._transaction(adopt)
        adopted.sort(key=lambda row: (row[1], row[0]))
        return [saga_id for saga_id, _ in adopted]
