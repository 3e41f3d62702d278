"""Which process this is, and whether a process recorded earlier still runs (Linux ``/proc``).

An owner's registration records its process's :class:`ProcessIdentity`, so that whether the
owner is alive does not rest on its lock file alone (a file anyone can delete). A pid alone
would not do: pids are reused. The identity adds what tells two processes of one pid apart:
the process's start time (in clock ticks since boot, field 22 of ``/proc/<pid>/stat``), the
boot (``/proc/sys/kernel/random/boot_id``) and the pid namespace the pid is counted in
(``/proc/self/ns/pid``).

:func:`process_alive` answers ``True`` / ``False`` only when it can be sure, else ``None``: on
a system without ``/proc``, for a process of another pid namespace (another container), or
when this process's ``/proc`` is not its own namespace's.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

__all__ = ["ProcessIdentity", "process_alive", "this_process"]

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_GONE_STATES = frozenset({"Z", "X", "x"})
"""States of ``/proc/<pid>/stat`` whose process has exited (a zombie waits to be reaped, its
files, and so its locks, are closed already)."""


class ProcessIdentity(NamedTuple):
    """A process, told apart from any other that ever had its pid (``None``: not known)."""

    pid: int
    started: int | None  # clock ticks after boot
    boot: str | None
    pidns: str | None  # e.g. "pid:[4026531836]"


class _Stat(NamedTuple):
    """What ``/proc/<pid>/stat`` says of a process."""

    pid: int
    state: str
    started: int


def this_process() -> ProcessIdentity:
    """The identity of the calling process (computed once per process, anew after a fork)."""
    return _identity_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _identity_of(pid: int) -> ProcessIdentity:
    try:
        own = _stat("self")
    except OSError:
        own = None
    if own is None or own.pid != pid:  # /proc is not this process's namespace's: pids differ
        return ProcessIdentity(pid, None, None, None)
    return ProcessIdentity(pid, own.started, _read_boot_id(), _pid_namespace())


def process_alive(identity: ProcessIdentity) -> bool | None:
    """Whether the process ``identity`` names still runs: ``True`` or ``False`` when that can
    be known from here, ``None`` when it cannot (see the module docstring)."""
    here = this_process()
    if None in (identity.started, identity.boot, identity.pidns, here.boot, here.pidns):
        return None
    if identity.boot != here.boot:
        return False  # recorded before this machine last booted (a store is never shared by
        # two machines: SQLite's WAL mode needs them on one host)
    if identity.pidns != here.pidns:
        return None
    if identity.pid == here.pid:
        return identity.started == here.started
    try:
        stat = _stat(str(identity.pid))
    except OSError:  # there is such a process, but its stat is not ours to read (hidepid)
        return None
    if stat is None:
        return False
    return stat.started == identity.started and stat.state not in _GONE_STATES


def _stat(pid: str) -> _Stat | None:
    """``/proc/<pid>/stat`` read, or ``None`` if there is no such process (or no ``/proc``);
    ``OSError`` if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except FileNotFoundError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'
    head, _, tail = text.rpartition(b")")
    fields = tail.split()
    try:
        return _Stat(int(head.split(b" (", 1)[0]), fields[0].decode(), int(fields[19]))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def _read_boot_id() -> str | None:
    try:
        with open(_BOOT_ID, encoding="ascii") as file:
            return file.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
