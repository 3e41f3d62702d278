"""The SQLite store's ownership (:class:`~sagas.stores.Ownership`): lock files and the
``owners`` table (see :mod:`sagas.stores.sqlite` for why an owner lives)."""

from __future__ import annotations

import builtins
import contextlib
import enum
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagas.errors import StoreUnavailable
from sagas.stores._checks import OWNER_ID as _OWNER_ID
from sagas.stores._checks import check_owner as _check_owner
from sagas.stores._checks import check_saga_ids as _ids
from sagas.stores._files import PRIVATE_FILE, make_private_dirs
from sagas.stores._messages import registered_elsewhere
from sagas.stores._port import TERMINAL
from sagas.stores._process import ProcessIdentity, process_alive, this_process

from ._connection import _IDS_PER_QUERY, _Connection, _rollback
from ._log import _TERMINAL

_logger = logging.getLogger("sagas.stores.sqlite")

_OWNER_GRACE = 0.2
"""Seconds ``register_owner`` retries a lock file held by someone checking whether a dead
owner of the same id is alive (the check holds it for microseconds)."""

_SELECT_UNFINISHED = "SELECT saga_id, owner, started_at FROM sagas WHERE status NOT IN ({})".format(
    ", ".join("?" * len(TERMINAL))
)
_SET_OWNER = "UPDATE sagas SET owner = ? WHERE saga_id = ?"
_SELECT_REGISTRATIONS = "SELECT owner, pid, started, boot, pidns FROM owners"
_SELECT_REGISTRATION = f"{_SELECT_REGISTRATIONS} WHERE owner = ?"
_REGISTER = (
    "INSERT OR REPLACE INTO owners (owner, pid, started, boot, pidns, registered_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UNREGISTER = "DELETE FROM owners WHERE owner = ?"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it may have been unlinked)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class _Lock(enum.Enum):
    """What an owner's lock file says of it."""

    HELD = "held"  # there and locked: the owner is alive
    FREE = "free"  # there, unlocked (now removed): nobody holds it
    MISSING = "missing"  # not there (never made, removed on close, or deleted by someone)


def _registration(row: Sequence[Any]) -> ProcessIdentity | None:
    """The process an ``owners`` row (``pid, started, boot, pidns``) records; ``None`` if the
    row is not one this store writes (written by hand: it proves nothing)."""
    pid, started, boot, pidns = row
    if not (isinstance(pid, int) and pid > 0 and isinstance(started, (int, type(None)))
            and isinstance(boot, (str, type(None))) and isinstance(pidns, (str, type(None)))):
        return None
    return ProcessIdentity(pid, started, boot, pidns)


class _Ownership(_Connection):
    """Owners registered on this store object hold their lock file open (``_owner_fds``);
    ``close()`` deletes their registrations, then removes their lock files."""

    _owners_dir: Path  # <db file>.owners/, where the lock files are
    _owner_fds: dict[str, int]  # owners registered here -> their locked file

    def register_owner(self, owner: str) -> None:
        """An exclusive ``flock`` on ``<db file>.owners/<owner>.lock``, and a registration of
        this process in ``owners``. ``StoreUnavailable`` also if the lock file cannot be made."""
        _check_owner(owner)
        with self._lock:
            db = self._connection()
            if owner in self._owner_fds:
                return
            fd = self._lock_owner(owner)
            try:
                self._register(db, owner)
            except BaseException:
                self._unlock_owner(owner, fd)
                raise
            self._owner_fds[owner] = fd

    def _lock_owner(self, owner: str) -> int:
        """Create and lock the owner's lock file; its descriptor, held until ``close()``."""
        path = self._lock_path(owner)
        deadline = time.monotonic() + _OWNER_GRACE
        try:
            make_private_dirs(self._owners_dir)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _same_file(fd, path):
                        return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise self._registered_elsewhere(owner) from None
                    time.sleep(0.001)
                except BaseException:
                    os.close(fd)
                    raise
                # locked by a liveness check of a dead owner, or unlinked by one: try again
                os.close(fd)
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path}: cannot lock owner file {path} ({err.strerror})"
            ) from err

    def _register(self, db: sqlite3.Connection, owner: str) -> None:
        """Record this process as ``owner``'s, unless a live process holds the id already
        (its lock file was deleted), and forget the registrations of processes that are gone."""
        me = this_process()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = []
                for other, *row in db.execute(_SELECT_REGISTRATIONS).fetchall():
                    process = _registration(row)
                    running = None if process is None else process_alive(process)
                    if other == owner and running:
                        raise self._registered_elsewhere(owner)
                    if running is False:
                        gone.append((other,))
                db.executemany(_UNREGISTER, gone)
                db.execute(_REGISTER, (owner, *me, time.time()))
                db.execute("COMMIT")
            finally:
                _rollback(db)
        except sqlite3.Error as err:
            raise self._translate(err) from err

    def _registered_elsewhere(self, owner: str) -> StoreUnavailable:
        return registered_elsewhere(self.path, owner)

    def _unlock_owner(self, owner: str, fd: int) -> None:
        """Remove the owner's lock file if it is still the one ``fd`` holds (removed while
        locked: registrants re-check), then let the lock go."""
        path = self._lock_path(owner)
        try:
            if _same_file(fd, path):
                os.unlink(path)
        except OSError as err:
            _logger.warning("saga store %s: cannot remove %s (%s)", self.path, path, err)
        finally:
            os.close(fd)

    def _unregister(self, db: sqlite3.Connection, owners: builtins.list[str]) -> None:
        """Delete the registrations of ``owners`` (on close). If that fails they stay, and the
        owners count as alive while this process runs: logged, not raised."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_UNREGISTER, [(owner,) for owner in owners])
                db.execute("COMMIT")
            finally:
                _rollback(db)
        except sqlite3.Error as err:
            _logger.warning("saga store %s: cannot unregister owners %s (%s)", self.path,
                         ", ".join(owners), err)

    def _lock_path(self, owner: str) -> Path:
        return self._owners_dir / f"{owner}.lock"

    def owner_alive(self, owner: str) -> bool:
        """Alive if its lock file is locked, or else if its registered process still runs; a dead
        owner's stale lock file is removed. A check racing with another check of the same dead
        owner may see it alive, never the reverse."""
        _check_owner(owner)
        self._connection()
        rows = self._fetch(_SELECT_REGISTRATION, (owner,))
        return self._alive(owner, _registration(rows[0][1:]) if rows else None)

    def _alive(self, owner: str, registered: ProcessIdentity | None) -> bool:
        """Whether ``owner``, whose registration (if any) names the process ``registered``,
        is alive: its lock says so, or else its process does; when neither can tell, it is
        alive unless its lock file is there, unlocked."""
        lock = self._probe_lock(owner)
        if lock is _Lock.HELD:
            return True
        if registered is None:
            return False
        running = process_alive(registered)
        if running is not None:
            return running
        return lock is _Lock.MISSING

    def _probe_lock(self, owner: str) -> _Lock:
        """What ``owner``'s lock file says; a file found unlocked is removed (under the lock
        taken to see it unlocked, so a registrant that opened it re-checks)."""
        path = self._lock_path(owner)
        try:
            while True:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return _Lock.MISSING
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return _Lock.HELD
                    if _same_file(fd, path):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                        return _Lock.FREE
                    # replaced since we opened it (by a registrant): look at the new file
                finally:
                    os.close(fd)
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path}: cannot check owner file {path} ({err.strerror})"
            ) from err

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> builtins.list[str]:
        """One ``BEGIN IMMEDIATE`` transaction: the owners are checked and the sagas taken under
        SQLite's write lock; the registrations of the dead owners found are deleted in it."""
        _check_owner(owner)
        wanted = None if saga_ids is None else _ids(saga_ids)
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    rows = self._unfinished(db, wanted, include_failed)
                    owners = {o for _, o, _ in rows if o is not None and o != owner}
                    dead = self._dead(db, owners)
                    adopted = [row for row in rows if row[1] is None or row[1] in dead]
                    db.executemany(_SET_OWNER, [(owner, saga_id) for saga_id, _, _ in adopted])
                    db.executemany(_UNREGISTER, [(o,) for o in dead])
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        adopted.sort(key=lambda row: (row[2], row[0]))
        return [saga_id for saga_id, _, _ in adopted]

    def _dead(self, db: sqlite3.Connection, owners: builtins.set[str]) -> builtins.set[str]:
        """Which of ``owners`` are dead, their registrations read in the open transaction (an
        id that is not a valid owner id, written by hand, is nobody's: dead)."""
        if not owners:
            return set()
        registered = {o: _registration(row) for o, *row in db.execute(_SELECT_REGISTRATIONS)}
        return {o for o in owners
                if not _OWNER_ID.fullmatch(o) or not self._alive(o, registered.get(o))}

    @staticmethod
    def _unfinished(
        db: sqlite3.Connection, saga_ids: builtins.list[str] | None, include_failed: bool = False
    ) -> builtins.list[tuple[str, str | None, float]]:
        """``(saga_id, owner, started_at)`` of the non-terminal sagas (of ``saga_ids``), and of
        the failed ones too with ``include_failed``."""
        # the statement excludes three statuses: repeating one keeps its placeholders valid
        excluded = ("completed", "compensated", "compensated") if include_failed else _TERMINAL
        if saga_ids is None:
            return db.execute(_SELECT_UNFINISHED, excluded).fetchall()
        rows = []
        for start in range(0, len(saga_ids), _IDS_PER_QUERY):
            chunk = saga_ids[start : start + _IDS_PER_QUERY]
            sql = f"{_SELECT_UNFINISHED} AND saga_id IN ({', '.join('?' * len(chunk))})"
            rows += db.execute(sql, (*excluded, *chunk)).fetchall()
        return rows
