"""Membership: an orchestrator process's share of a shared store's partitions (DESIGN.md §7).

A runtime on a store shared by several processes (PostgreSQL) is a *member*. It announces
itself (``heartbeat``), holds the leases of a fair share of the store's partitions, renews
them, and drives the sagas of those partitions only; every commit it makes is fenced with the
epochs of its leases, so a member that was paused or cut off past its lease writes nothing
once another may have taken over (the store refuses, :class:`~sagas.errors.LeaseLost`).

One thread per member does the bookkeeping, every :attr:`Membership.tick` seconds (a quarter
of the lease):

- renew the leases held; a lease not renewed, or whose local deadline passed, is *lost*: the
  fence forgets it at once and the shards drop its sagas;
- count the live members (seen within one lease length) and take free partitions up to
  ``ceil(partitions / live members)``; the least loaded live member also takes any partition
  left free beyond that, so none stays undriven;
- give back partitions above the fair share while another live member has fewer (a member
  that joins gets its share within a few ticks);
- give back a partition whose sagas this member cannot run (a flow whose services it cannot
  import) when another live member says it runs that flow, and avoid taking it again for a
  while.

Taking over a partition means claiming its in-flight sagas in the store (their owner becomes
this member, :meth:`~sagas.stores.Leases.claim`) and putting them back in motion from their
logs exactly as ``saga resume`` does. A store that cannot be reached is retried every tick
(one log line when it goes, one when it comes back); leases whose deadline passes meanwhile
are dropped, and taken anew (with new epochs) once the store answers.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..stores import Fence, Lease, partition_of

__all__ = ["DEFAULT_LEASE_TTL", "Membership", "ranges"]

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 2.0
"""Seconds a lease lasts unless renewed. Renewed every quarter of it, so a member survives a
stall of three quarters of a lease; a dead member's partitions are free at most this long after
its last renewal, and taken within a tick after that."""

AVOID_FOR = 10.0
"""Seconds (in lease lengths) a member leaves alone a partition it gave back because it could
not run some of its sagas."""

SWEEP_EVERY = 4
"""Every this many ticks a member claims the in-flight sagas of all its partitions again and
loads those it does not drive yet: a saga whose start reached no holder (the partition changed
hands as a client wrote it) is driven within a second or two."""

MAX_REPORTED = 50
"""Undriven sagas a member lists in what it says of itself (the count is always exact)."""


class Membership:
    """One member's leases, renewed on a thread of its own.

    ``on_gained(partitions)`` is called (on the membership thread) with partitions just taken,
    after :attr:`fence` includes them; it claims and loads their sagas. ``on_lost(partitions)``
    is called with partitions no longer held (lost, expired or given back), after the fence
    has dropped them; it must not return before the shards have forgotten their sagas.
    ``describe()`` returns what the member says of itself in each heartbeat (a JSON object).
    """

    def __init__(self, store: Any, member: str, *, ttl: float = DEFAULT_LEASE_TTL,
                 on_gained: Callable[[list[int]], None],
                 on_lost: Callable[[list[int]], None],
                 describe: Callable[[], dict[str, Any]] = dict) -> None:
        if not (isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"a lease length is a number of seconds > 0, got {ttl!r}")
        self.store = store
        self.member = member
        self.ttl = float(ttl)
        self.tick = self.ttl / 4
        self.partitions: int = store.partitions()
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._describe = describe
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}
        self.fence: Fence | None = None
        """The fence of the leases held now (``None`` while none is): replaced, never
        changed in place, so a shard reads it without a lock."""
        self._deadlines: dict[int, float] = {}
        self._avoid: dict[int, float] = {}  # partition -> monotonic time until which to avoid
        self._undriven: dict[str, tuple[str, int]] = {}  # saga id -> (flow, partition)
        self._runs: set[str] = set()  # flows whose services this member has started
        self._stop = threading.Event()
        self._reachable = True
        self._rounds = 0
        self._free_seen: dict[int, int] = {}  # partition -> rounds in a row it was seen free
        self._strays: set[int] = set()  # taken beyond the share because nobody took them
        self._thread: threading.Thread | None = None
        self.host = socket.gethostname()
        self.pid = os.getpid()

    # -- what the shards ask -------------------------------------------------------------------
    def partition_of(self, saga_id: str) -> int:
        return partition_of(saga_id, self.partitions)

    def holds(self, partition: int) -> bool:
        """Whether ``partition``'s lease is held and has not run out on the local clock."""
        deadline = self._deadlines.get(partition)
        return deadline is not None and time.monotonic() < deadline

    def may_send(self, saga_id: str) -> bool:
        """Whether commands of the saga may still be sent: its partition is held and its
        local deadline has not passed (else a successor may hold it by now)."""
        deadline = self._deadlines.get(partition_of(saga_id, self.partitions))
        return deadline is not None and time.monotonic() < deadline

    def held(self) -> list[int]:
        return sorted(self._deadlines)

    def runs(self, flow: str) -> None:
        """Note that this member can run ``flow`` (its services started)."""
        self._runs.add(flow)

    def is_undriven(self, saga_id: str) -> bool:
        return saga_id in self._undriven

    def undriven(self, saga_id: str, flow: str) -> None:
        """Note a saga of a held partition that this member cannot run (its flow's services
        do not import here): left in flight for a member that can."""
        with self._lock:
            self._undriven[saga_id] = (flow, partition_of(saga_id, self.partitions))

    def driven_elsewhere(self, saga_ids: Iterable[str]) -> None:
        with self._lock:
            for saga_id in saga_ids:
                self._undriven.pop(saga_id, None)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Announce this member and take its first share (before returning, so that a runtime
        that starts sagas at once finds its partitions held), then keep it on a thread."""
        try:
            self._round()
        except Exception as exc:  # the store is down: the thread keeps trying
            self._unreachable(exc)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"sagactor-member-{self.member}")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop renewing (a clean stop gives every lease back: call :meth:`leave` once the
        shards have committed what they hold)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def leave(self) -> None:
        """Give every lease back and forget this member in the store: the others take its
        partitions at their next tick. The fence is emptied first."""
        with self._lock:
            self._leases.clear()
            self._deadlines = {}
            self.fence = None
        try:
            self.store.leave(self.member)
        except Exception as exc:  # its leases expire on their own
            log.warning("member %s: could not give its leases back (%s); they expire within "
                        "%.1fs", self.member, exc, self.ttl)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self._round()
                if not self._reachable:
                    self._reachable = True
                    log.warning("member %s: the store answers again; taking partitions anew",
                                self.member)
            except Exception as exc:
                self._unreachable(exc)
                self._expire()

    def _unreachable(self, exc: BaseException) -> None:
        if self._reachable:
            self._reachable = False
            log.warning("member %s: the store cannot be reached (%s); retrying every %.2fs",
                        self.member, exc, self.tick)

    # -- one round -----------------------------------------------------------------------------
    def _round(self) -> None:
        self.store.heartbeat(self.member, self._info())
        self._renew()
        if self._stop.is_set():
            return
        infos = self.store.leases()
        alive = {m.member for m in self.store.members() if m.seen_ago < self.ttl}
        alive.add(self.member)
        counts = {member: 0 for member in alive}
        for info in infos:
            if info.held and info.member in counts:
                counts[info.member] += 1
        mine = len(self._deadlines)
        target = math.ceil(self.partitions / len(alive))
        now = time.monotonic()
        self._free_seen = {info.partition: self._free_seen.get(info.partition, 0) + 1
                           for info in infos if not info.held}
        free = [p for p in self._free_seen if self._avoid.get(p, 0.0) <= now]
        random.shuffle(free)
        wanted = free[:max(0, target - mine)]
        others = {m: n for m, n in counts.items() if m != self.member}
        least = min(counts.items(), key=lambda item: (item[1], item[0]))[0]
        if least == self.member or all(n >= target for n in others.values()):
            wanted = free  # nothing stays free: the least loaded takes the rest
        else:  # nor for long: one that others left free two rounds in a row is taken here
            strays = [p for p in free if self._free_seen[p] >= 2 and p not in wanted]
            self._strays.update(strays)
            wanted += strays
        if wanted:
            self._acquire(wanted)
        self._hand_over(others, target)
        self._rounds += 1
        if self._rounds % SWEEP_EVERY == 0 and self._deadlines:
            self._on_gained(self.held())

    def _info(self) -> dict[str, Any]:
        with self._lock:
            undriven = sorted(self._undriven.items())
        info = dict(self._describe())
        info.update({
            "host": self.host, "pid": self.pid, "lease_ttl": self.ttl,
            "runs": sorted(self._runs),
            "undriven": len(undriven),
            "undriven_sagas": [{"saga_id": saga_id, "flow": flow}
                               for saga_id, (flow, _) in undriven[:MAX_REPORTED]],
        })
        return info

    def _renew(self) -> None:
        with self._lock:
            held = list(self._leases.values())
        if not held:
            return
        renewed = self.store.renew(self.member, held, self.ttl)
        kept = {lease.partition for lease in renewed}
        with self._lock:
            for lease in renewed:
                if lease.partition in self._leases:
                    self._leases[lease.partition] = lease
            self._refresh()
        lost = [lease.partition for lease in held if lease.partition not in kept]
        if lost:
            log.warning("member %s: lost partitions %s (taken over, or expired)", self.member,
                        ranges(lost))
            self.drop(lost)

    def _expire(self) -> None:
        """Drop the leases whose local deadline has passed (the store could not renew them)."""
        now = time.monotonic()
        with self._lock:
            gone = [p for p, lease in self._leases.items() if lease.deadline <= now]
        if gone:
            log.warning("member %s: the leases of partitions %s ran out while the store could "
                        "not be reached; their sagas are left to whoever holds them next",
                        self.member, ranges(gone))
            self.drop(gone)

    def _acquire(self, partitions: Sequence[int]) -> None:
        taken = self.store.acquire(self.member, sorted(partitions), self.ttl)
        new = []
        with self._lock:
            for lease in taken:
                if lease.partition not in self._leases:
                    new.append(lease.partition)
                self._leases[lease.partition] = lease
            self._refresh()
        if new:
            log.info("member %s: took partitions %s", self.member, ranges(new))
            try:
                self._on_gained(new)
            except Exception:  # the sagas wait in the store: give the partitions back
                log.exception("member %s: could not load the sagas of partitions %s",
                              self.member, ranges(new))
                self.drop(new, release=True)

    def _hand_over(self, others: dict[str, int], target: int) -> None:
        """Give back partitions above the fair share while another member has fewer, and those
        holding sagas this member cannot run when another member runs their flow."""
        release: set[int] = set()
        if others and len(self._deadlines) > target and min(others.values()) < target - 1:
            # partitions taken as strays may hold sagas their other members cannot run
            spare = [p for p in sorted(self._deadlines) if p not in self._strays]
            release.update(spare[:len(self._deadlines) - target])
        with self._lock:
            undriven = dict(self._undriven)
        if undriven and others:
            runners = self._runners()
            for _, (flow, partition) in undriven.items():
                if partition in self._deadlines and runners.get(flow):
                    release.add(partition)
        if release:
            now = time.monotonic()
            for partition in release:
                if any(p == partition for _, p in undriven.values()):
                    self._avoid[partition] = now + AVOID_FOR * self.ttl
            log.info("member %s: gives back partitions %s", self.member, ranges(release))
            self.drop(sorted(release), release=True)

    def _runners(self) -> dict[str, list[str]]:
        """Flow name -> live members (other than this one) that say they run it."""
        runners: dict[str, list[str]] = {}
        for member in self.store.members():
            if member.member == self.member or member.seen_ago >= self.ttl:
                continue
            for flow in member.info.get("runs", ()):
                runners.setdefault(flow, []).append(member.member)
        return runners

    def drop(self, partitions: Sequence[int], *, release: bool = False) -> None:
        """Stop driving ``partitions``: out of the fence first, then the shards forget their
        sagas; with ``release``, the leases are given back after that."""
        gone = set(partitions)
        with self._lock:
            present = [p for p in gone if p in self._leases]
            for partition in present:
                del self._leases[partition]
                self._strays.discard(partition)
            self._refresh()
            for saga_id in [s for s, (_, p) in self._undriven.items() if p in gone]:
                del self._undriven[saga_id]
        if not present:
            return
        try:
            self._on_lost(sorted(present))
        finally:
            if release:
                try:
                    self.store.release(self.member, sorted(present))
                except Exception as exc:
                    log.warning("member %s: could not give back partitions %s (%s); they "
                                "expire within %.1fs", self.member, ranges(present), exc,
                                self.ttl)

    def lost(self, partition: int) -> None:
        """A commit for ``partition`` was refused (:class:`~sagas.errors.LeaseLost`): drop it
        now rather than at the next renewal (called from a shard's thread)."""
        if partition in self._leases:
            log.warning("member %s: a commit for partition %d was refused: lease lost",
                        self.member, partition)
            threading.Thread(target=self.drop, args=([partition],), daemon=True,
                             name=f"sagactor-drop-{partition}").start()

    def _refresh(self) -> None:
        """Rebuild the fence and the deadlines from the leases (under ``_lock``)."""
        leases = list(self._leases.values())
        self._deadlines = {lease.partition: lease.deadline for lease in leases}
        self.fence = Fence.of(self.member, leases) if leases else None


def ranges(partitions: Iterable[int]) -> str:
    """``0-3,7,9-10``: partitions as ranges, for log lines."""
    ordered = sorted(set(partitions))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
