"""The contract every saga store passes: a pytest suite to run against any backend.

A backend author subclasses :class:`StoreContract` in a test module of theirs, gives it the
factory of a fresh, empty store, and runs pytest (installed with the ``test`` extra)::

    # tests/test_my_store.py
    from sagas.stores.contract import StoreContract

    class TestMyStore(StoreContract):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "sagas.db")  # a new, empty store

        def open_again(self, store):  # optional: another store object on the same data
            return MyStore(store.path)

The suite's classes do not start with ``Test``, so pytest collects only the subclasses. Each
test gets a store from the ``store`` fixture (``make_store(tmp_path)``, closed after the test);
override the fixture itself to build stores from other fixtures (a database server...). pytest
shows what a failed assertion compared when it rewrote this module's asserts, which it does for
an installed sagactor; with an editable install outside this repository, put
``pytest.register_assert_rewrite("sagas.stores.contract")`` in your ``conftest.py``.

The hooks besides :meth:`~StoreContract.make_store`:

- :meth:`~StoreContract.open_again`: a second store object on the same data, as another
  process would open it. The tests of two store objects (racing writers, adopters and
  claimers, snapshots of another's writes) run with it; a backend class that does not
  override it does not collect them.
- :meth:`~StoreContract.lose_owner_files`: delete what the store keeps of its owners beside
  its data (lock files...), as someone tidying up by hand might; a live owner must keep its
  sagas all the same. A store that keeps no such files leaves it as it is (a no-op).

The tests of each facet of the port are a class of their own (:class:`EventLogContract`,
:class:`LogReaderContract`, :class:`OwnershipContract`, :class:`LeasesContract`,
:class:`RequestsContract`, :class:`ExternalEventsContract`, :class:`ServiceInboxContract`), all
of which :class:`StoreContract` gathers with the tests of the whole store. They set up their
sagas with the :class:`~sagas.stores.EventLog`, so the store of any of them needs that facet
too. The leases' tests need a store of at least 4 partitions, and wait for short leases to
expire (a few tens of milliseconds, polling the store) rather than sleep.

The helpers are public for a backend's own tests: :func:`new_saga`, :func:`append` and
:func:`event` build records, :func:`snapshot` reads everything a store holds,
:func:`saga_in_partition` finds an id in a partition, :func:`expire` makes a lease expire and
:func:`eventually` waits for a condition, and the race helpers (:func:`race_appends`,
:func:`race_creates`, :func:`race_writes`, :func:`race_adopts`, :func:`race_claims`,
:func:`race_acquires`, :func:`race_fenced_writes_and_a_takeover`,
:func:`race_lease_claims_and_a_takeover`, :func:`snapshots_agree`) take
several store objects, so a backend can run them across connections of its own.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from actors import InboxStore, StoredReply, freeze, thaw
from sagas.errors import LeaseLost, SeqConflict, StoreError, StoreUnavailable, UnknownSaga
from sagas.stores import (
    TERMINAL,
    Append,
    Cursors,
    EventLog,
    ExternalEvent,
    ExternalEvents,
    Fence,
    Lease,
    Leases,
    LogEntry,
    LogReader,
    NewSaga,
    Ownership,
    Request,
    Requests,
    SagaHeader,
    SagaStore,
    ServiceInbox,
    StoredEvent,
    Writer,
    partition_of,
)
from sagas.stores._port import MAX_PARTITIONS

try:
    import pytest
except ImportError as err:  # pragma: no cover - pytest comes with the test extra
    raise ImportError(
        "sagas.stores.contract is a pytest suite: install pytest "
        "(pip install 'sagactor[test]')"
    ) from err

__all__ = [
    "FLOW_SHA",
    "FLOW_TEXT",
    "JOIN_TIMEOUT",
    "RACE_ROUNDS",
    "EventLogContract",
    "ExternalEventsContract",
    "LeasesContract",
    "LogReaderContract",
    "OwnershipContract",
    "RequestsContract",
    "ServiceInboxContract",
    "StoreContract",
    "append",
    "event",
    "eventually",
    "expire",
    "new_saga",
    "race_acquires",
    "race_adopts",
    "race_appends",
    "race_claims",
    "race_creates",
    "race_fenced_writes_and_a_takeover",
    "race_lease_claims_and_a_takeover",
    "race_writes",
    "run_pair",
    "saga_in_partition",
    "snapshot",
    "snapshots_agree",
]

FLOW_TEXT = "name: order\nversion: 1\nsteps: []\n"
FLOW_SHA = "a" * 64
RACE_ROUNDS = 40
JOIN_TIMEOUT = 30.0
_UNSET: Any = object()


def event(
    seq: int,
    type: str = "step.started",
    *,
    saga_id: str = "s",
    step: str | None = "reserve",
    attempt: int | None = 1,
    at: float = 1000.0,
    data: dict[str, Any] | None = None,
    tag: str = "",
) -> StoredEvent:
    """An event whose ``event_id`` names the saga, the seq and ``tag`` (to tell writers apart)."""
    return StoredEvent(
        seq=seq,
        type=type,
        step=step,
        attempt=attempt,
        at=at + seq,
        event_id=f"{saga_id}-{seq}{tag}",
        causation_id=f"{saga_id}-{seq - 1}" if seq > 1 else None,
        data={"seq": seq} if data is None else data,
    )


def new_saga(
    saga_id: str,
    *,
    started_at: float = 1000.0,
    flow: str = "order",
    status: str = "running",
    n_events: int = 1,
    input: Any = _UNSET,
    definition: str = FLOW_SHA,
    definition_text: str = FLOW_TEXT,
    owner: str | None = None,
) -> NewSaga:
    if input is _UNSET:
        input = {"order": saga_id}
    events = [
        event(
            1,
            "saga.started",
            saga_id=saga_id,
            step=None,
            attempt=None,
            at=started_at,
            data={"input": input, "deadline_at": None},
        )
    ]
    events += [event(seq, saga_id=saga_id, at=started_at) for seq in range(2, n_events + 1)]
    return NewSaga(
        saga_id=saga_id,
        flow=flow,
        version=1,
        definition=definition,
        definition_text=definition_text,
        input=input,
        status=status,
        reason=None,
        started_at=started_at,
        events=tuple(events[:n_events]),
        owner=owner,
    )


def append(
    saga_id: str,
    first: int,
    n: int = 1,
    *,
    status: str = "running",
    reason: str | None = None,
    updated_at: float = 2000.0,
    tag: str = "",
) -> Append:
    return Append(
        saga_id=saga_id,
        events=tuple(event(s, saga_id=saga_id, tag=tag) for s in range(first, first + n)),
        status=status,
        reason=reason,
        updated_at=updated_at,
    )


def snapshot(store: SagaStore) -> tuple[list[SagaHeader], list[tuple[str, StoredEvent]]]:
    """Everything a store holds, to compare before and after a refused write."""
    return store.list(), store.read_all(0, 1_000_000)


def run_pair(first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
    """Run both functions at once (released by a barrier); each one's result or exception."""
    barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    results: list[Any] = [None, None]

    def run(index: int, fn: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = fn()
        except Exception as err:  # reported to the test through results
            results[index] = err

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "a racing writer did not finish"
    return results


def race_appends(a: SagaStore, b: SagaStore, rounds: int = RACE_ROUNDS) -> None:
    """Two writers append at the same seq of one saga: exactly one wins, the other conflicts."""
    for n in range(rounds):
        saga_id = f"race-append-{n}"
        a.create(new_saga(saga_id))
        results = run_pair(
            partial(a.append, [append(saga_id, 2, 2, tag="a")]),
            partial(b.append, [append(saga_id, 2, 2, tag="b")]),
        )
        conflicts = [r for r in results if isinstance(r, SeqConflict)]
        wins = [i for i, r in enumerate(results) if r is None]
        assert len(wins) == 1 and len(conflicts) == 1, results
        assert conflicts[0].saga_id == saga_id and conflicts[0].seq == 2
        winner = "ab"[wins[0]]
        record = b.load(saga_id)
        assert [e.seq for e in record.events] == [1, 2, 3]
        assert [e.event_id for e in record.events[1:]] == [
            f"{saga_id}-2{winner}",
            f"{saga_id}-3{winner}",
        ]
        assert record.header.last_seq == 3


def race_creates(a: SagaStore, b: SagaStore, rounds: int = RACE_ROUNDS) -> None:
    """Two writers create one id: exactly one creates, the other gets the winner's header."""
    for n in range(rounds):
        saga_id = f"race-create-{n}"
        results = run_pair(
            partial(a.create, new_saga(saga_id, flow="by-a")),
            partial(b.create, new_saga(saga_id, flow="by-b", n_events=2)),
        )
        assert all(isinstance(r, tuple) for r in results), results
        created = [i for i, (ok, _) in enumerate(results) if ok]
        assert len(created) == 1, results
        winner_flow = ("by-a", "by-b")[created[0]]
        assert {h.flow for _, h in results} == {winner_flow}
        record = a.load(saga_id)
        assert record.header.flow == winner_flow
        assert len(record.events) == (1 if winner_flow == "by-a" else 2)


def race_writes(a: SagaStore, b: SagaStore, rounds: int = RACE_ROUNDS) -> None:
    """Two writers each create one id and append to it in one ``write``: one call succeeds
    whole; the other finds the saga created, so its append conflicts and it writes nothing."""
    for n in range(rounds):
        saga_id = f"race-write-{n}"
        results = run_pair(
            partial(a.write, [new_saga(saga_id, flow="by-a")], [append(saga_id, 2, tag="a")]),
            partial(b.write, [new_saga(saga_id, flow="by-b")], [append(saga_id, 2, tag="b")]),
        )
        wins = [i for i, r in enumerate(results) if isinstance(r, list)]
        assert len(wins) == 1, results
        created, header = results[wins[0]][0]
        loser = results[1 - wins[0]]
        assert isinstance(loser, SeqConflict) and (loser.saga_id, loser.seq) == (saga_id, 2)
        winner = "ab"[wins[0]]
        assert created is True and header.flow == f"by-{winner}" and header.last_seq == 1
        record = b.load(saga_id)
        assert record.header.flow == f"by-{winner}" and record.header.last_seq == 2
        assert record.events[1].event_id == f"{saga_id}-2{winner}"


def snapshots_agree(writer: SagaStore, reader: SagaStore, sagas: int = 1100) -> None:
    """``load_many`` is one snapshot: while ``writer`` appends one event to every saga in each
    ``write`` (more sagas than one query of ids takes), every ``load_many`` on ``reader`` finds
    all the sagas at one length."""
    ids = [f"snap-{i}" for i in range(sagas)]
    writer.write([new_saga(saga_id) for saga_id in ids], [])
    rounds = 15
    done = threading.Event()

    def write() -> None:
        try:
            for seq in range(2, rounds + 2):
                writer.write([], [append(saga_id, seq) for saga_id in ids])
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    lengths: set[int] = set()
    try:
        while True:
            finished = done.is_set()
            records = reader.load_many(ids)
            assert len(records) == sagas
            seen = {len(r.events) for r in records}
            assert len(seen) == 1, sorted(seen)
            assert {r.header.last_seq for r in records} == seen
            lengths |= seen
            if finished:
                break
    finally:
        thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    assert max(lengths) == rounds + 1


def race_adopts(
    a: SagaStore, b: SagaStore, rounds: int = RACE_ROUNDS // 2, sagas: int = 8
) -> None:
    """Two live owners (``a`` registers ``owner-a``, ``b`` ``owner-b``) adopt the same
    unowned sagas at once: each saga goes to exactly one of them."""
    a.register_owner("owner-a")
    b.register_owner("owner-b")
    for n in range(rounds):
        ids = [f"race-adopt-{n}-{i}" for i in range(sagas)]
        for i, saga_id in enumerate(ids):
            a.create(new_saga(saga_id, started_at=float(n * sagas + i), owner=None))
        results = run_pair(partial(a.adopt, "owner-a"), partial(b.adopt, "owner-b"))
        assert all(isinstance(r, list) for r in results), results
        by_a, by_b = results
        assert not set(by_a) & set(by_b), results
        assert sorted(by_a + by_b) == ids, results
        owners = {saga_id: b.header(saga_id).owner for saga_id in ids}
        assert owners == {
            **{saga_id: "owner-a" for saga_id in by_a},
            **{saga_id: "owner-b" for saga_id in by_b},
        }


def race_claims(
    stores: list[SagaStore], threads: int = 8, events: int = 40, type: str = "Paid"
) -> None:
    """``threads`` claimers (on the ``stores`` in turn) take ``events`` events of one (type,
    key), each claim by a saga of its own, until none is left: every event is taken exactly
    once, by the saga the store says consumed it."""
    sent = [
        stores[0].send_event(type, "race", {"n": n}, sent_at=float(n))[0] for n in range(events)
    ]
    stores[0].send_event(type, "other-key", sent_at=0.0)  # never taken by them
    barrier = threading.Barrier(threads, timeout=JOIN_TIMEOUT)
    taken: list[list[tuple[str, ExternalEvent]]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def claim(index: int) -> None:
        store = stores[index % len(stores)]
        try:
            barrier.wait()
            for n in range(events + 1):
                saga_id = f"claimer-{index}-{n}"
                got = store.claim_event(type, "race", saga_id, at=float(n))
                if got is None:
                    return
                taken[index].append((saga_id, got))
        except BaseException as err:  # reported to the test below
            errors.append(err)

    workers = [threading.Thread(target=claim, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT)
        assert not worker.is_alive(), "a claimer did not finish"
    assert errors == []
    claims = [pair for mine in taken for pair in mine]
    assert sorted(e.position for _, e in claims) == [e.position for e in sent]
    assert all(e.consumed_by == saga_id for saga_id, e in claims)
    by_position = {e.position: e for e in stores[-1].events_after(0, 10 * events)}
    for saga_id, event in claims:
        assert by_position[event.position].consumed_by == saga_id
    assert [e.consumed_by for e in by_position.values() if e.key == "other-key"] == [None]
    assert stores[-1].claim_event(type, "race", "late", at=0.0) is None


def saga_in_partition(partition: int, partitions: int, prefix: str = "s") -> str:
    """The first id ``f"{prefix}-{n}"`` (n = 0, 1, ...) in ``partition`` of a store of
    ``partitions`` partitions."""
    for n in range(100 * partitions + 1000):
        saga_id = f"{prefix}-{n}"
        if partition_of(saga_id, partitions) == partition:
            return saga_id
    raise AssertionError(f"no id {prefix}-n in partition {partition} of {partitions}")


def eventually(condition: Callable[[], Any], timeout: float = JOIN_TIMEOUT,
               what: str = "the condition") -> Any:
    """Poll ``condition`` every few milliseconds until it returns something true, and return
    that; fail once ``timeout`` seconds have passed (a lease expiring, another member's
    change)."""
    give_up = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= give_up:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {value!r})")
        time.sleep(0.005)
    return value


def expire(store: SagaStore, lease: Lease) -> Lease:
    """Make ``lease`` (its member's, still held) expire within a few milliseconds, by
    renewing it for that long, and wait until the store says it is no longer held; the
    lease as renewed (its ``deadline`` the holder's last)."""
    (short,) = store.renew(lease.member, [lease], 0.005)
    eventually(lambda: not store.leases()[lease.partition].held,
               what=f"the lease of partition {lease.partition} expiring")
    return short


def race_acquires(a: SagaStore, b: SagaStore, rounds: int = RACE_ROUNDS // 2,
                  partitions: int = 8) -> None:
    """Two members (``member-a`` on ``a``, ``member-b`` on ``b``) acquire the same partitions
    at once, released ones (even rounds) or expired ones (odd rounds, a third member's): each
    partition goes to exactly one of them, at the epoch after the last."""
    wanted = list(range(min(partitions, a.partitions())))
    for n in range(rounds):
        before = {i.partition: i.epoch for i in a.leases()}
        if n % 2:  # taken over once expired: a third member held them last
            held = a.acquire("member-c", wanted, 60.0)
            assert [lease.partition for lease in held] == wanted
            for lease in held:
                expire(a, lease)
            before = {lease.partition: lease.epoch for lease in held}
        results = run_pair(partial(a.acquire, "member-a", wanted, 60.0),
                           partial(b.acquire, "member-b", wanted, 60.0))
        assert all(isinstance(r, list) for r in results), results
        by_a, by_b = results
        assert sorted(lease.partition for lease in by_a + by_b) == wanted, results
        for lease in by_a + by_b:
            assert lease.epoch == before[lease.partition] + 1, (lease, before)
        holders = {i.partition: (i.member, i.epoch) for i in b.leases() if i.partition in wanted}
        assert holders == {lease.partition: (lease.member, lease.epoch)
                           for lease in by_a + by_b}
        a.release("member-a", wanted)
        b.release("member-b", wanted)


def race_fenced_writes_and_a_takeover(a: SagaStore, b: SagaStore) -> None:
    """``member-a`` (on ``a``) appends to a saga, fenced, as fast as it can, while its lease
    expires and ``member-b`` (on ``b``) takes the partition over: once ``b``'s acquire has
    returned, no write of ``member-a`` lands (each one either committed before the takeover
    or was refused), and ``member-b`` writes on at the next epoch."""
    count = a.partitions()
    saga_id = saga_in_partition(0, count, "fenced")
    (lease,) = a.acquire("member-a", [0], 60.0)
    a.create(new_saga(saga_id), fence=Fence.of("member-a", [lease]))
    stop = threading.Event()
    outcome: list[BaseException] = []

    def write() -> None:
        seq = 2
        try:
            while not stop.is_set():
                a.append([append(saga_id, seq, tag="a")], fence=Fence.of("member-a", [lease]))
                seq += 1
        except BaseException as err:  # LeaseLost, as it should: reported below
            outcome.append(err)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        a.renew("member-a", [lease], 0.05)  # it expires soon, while the writer writes
        taken = eventually(lambda: b.acquire("member-b", [0], 60.0), what="the takeover")
        seen = b.writers(saga_id)
        writer.join(JOIN_TIMEOUT)
        assert not writer.is_alive(), "the fenced writer kept writing"
    finally:
        stop.set()
        writer.join(JOIN_TIMEOUT)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
    assert (outcome[0].partition, outcome[0].member, outcome[0].epoch) == (0, "member-a", 1)
    assert b.writers(saga_id) == seen  # nothing of member-a's landed after the takeover
    assert {w.epoch for w in seen} == {1} and {w.member for w in seen} == {"member-a"}
    (new,) = taken
    assert new.epoch == 2
    next_seq = seen[-1].seq + 1
    b.append([append(saga_id, next_seq, tag="b")], fence=Fence.of("member-b", taken))
    assert b.writers(saga_id)[-1] == (next_seq, "member-b", 2)


def race_lease_claims_and_a_takeover(a: SagaStore, b: SagaStore) -> None:
    """``member-a`` (on ``a``) claims the sagas of partition 0 (:meth:`~sagas.stores.Leases.claim`)
    as fast as it can, while its lease expires and ``member-b`` (on ``b``) takes the partition
    over and claims them: once ``b``'s claim has returned, no claim of ``member-a`` lands
    (each one either committed before the takeover or was refused), so every saga stays
    ``member-b``'s."""
    count = a.partitions()
    ids = sorted(saga_in_partition(0, count, f"taken-{n}") for n in range(5))
    for saga_id in ids:
        a.create(new_saga(saga_id, owner="rt-1"))
    (lease,) = a.acquire("member-a", [0], 60.0)
    fence = Fence.of("member-a", [lease])
    assert sorted(a.claim(fence, [0])) == ids
    stop = threading.Event()
    outcome: list[BaseException] = []

    def claim() -> None:
        try:
            while not stop.is_set():
                a.claim(fence, [0])
        except BaseException as err:  # LeaseLost, as it should: reported below
            outcome.append(err)

    claimer = threading.Thread(target=claim)
    claimer.start()
    try:
        a.renew("member-a", [lease], 0.05)  # it expires soon, while the claimer claims
        taken = eventually(lambda: b.acquire("member-b", [0], 60.0), what="the takeover")
        assert sorted(b.claim(Fence.of("member-b", taken), [0])) == ids
        claimer.join(JOIN_TIMEOUT)
        assert not claimer.is_alive(), "the fenced claimer kept claiming"
    finally:
        stop.set()
        claimer.join(JOIN_TIMEOUT)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
    lost = outcome[0]
    assert (lost.partition, lost.member, lost.epoch, lost.saga_id) == (0, "member-a", 1, "")
    assert {saga_id: b.header(saga_id).owner for saga_id in ids} == dict.fromkeys(
        ids, "member-b")


class _Hooks:
    """The hooks a backend gives (:meth:`make_store`; :meth:`open_again` and
    :meth:`lose_owner_files` if it can), and the fixtures the tests take."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A backend class that does not override :meth:`open_again` has no second store
        object on one store: the tests that need one are not collected for it (rather than
        collected and skipped)."""
        super().__init_subclass__(**kwargs)
        if cls.__name__.endswith("Contract") or "open_again" in _defined_below(cls):
            return
        for name in dir(cls):
            test = getattr(cls, name, None)
            code = getattr(test, "__code__", _NO_CODE)
            if name.startswith("test") and "again" in code.co_varnames[:code.co_argcount]:
                setattr(cls, name, None)  # it takes the `again` fixture

    def make_store(self, tmp_path: Path) -> SagaStore:
        """A new, empty store (files, if any, under ``tmp_path``)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_store(tmp_path)")

    def open_again(self, store: SagaStore) -> SagaStore | None:
        """Another store object on the data of ``store`` (another connection, as another
        process would open it), closed by the test. A backend that does not override it has
        no such thing: the tests of two store objects are then not collected for it."""
        return None

    def lose_owner_files(self, store: SagaStore, owner: str | None) -> None:
        """Delete what ``store`` keeps of its owners beside its data, as someone tidying up by
        hand might: every owner's files (``owner=None``) or one owner's. A store that keeps
        no such files does nothing."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SagaStore]:
        store = self.make_store(tmp_path)
        yield store
        store.close()

    @pytest.fixture
    def again(self, store: SagaStore) -> Iterator[SagaStore]:
        """A second store object on ``store``'s data (:meth:`open_again`). (A backend that
        returns ``None`` from an override of it skips the test.)"""
        other = self.open_again(store)
        if other is None:
            pytest.skip(f"{type(self).__name__} opens no second store object on one store "
                        "(open_again)")
        yield other
        other.close()


_NO_CODE = (lambda: None).__code__


def _defined_below(cls: type) -> set[str]:
    """Names defined by ``cls`` or its bases that are not part of this contract."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ != __name__:
            names.update(vars(klass))
    return names


class EventLogContract(_Hooks):
    """The contract of :class:`~sagas.stores.EventLog`: sagas, their headers and logs."""

    # -- shape ----------------------------------------------------------------------------------

    def test_a_new_store_is_empty(self, store: SagaStore) -> None:
        assert store.list() == []
        assert store.in_flight() == []
        assert store.read_all() == []

    # -- create ---------------------------------------------------------------------------------

    def test_create_then_load_round_trips_header_and_events(self, store: SagaStore) -> None:
        saga = new_saga("order-1", started_at=1234.5, n_events=3, input={"sku": "é", "qty": [1]})
        created, header = store.create(saga)
        assert created is True
        record = store.load("order-1")
        assert (
            record.header
            == header
            == SagaHeader(
                saga_id="order-1",
                flow="order",
                version=1,
                definition=FLOW_SHA,
                input={"sku": "é", "qty": [1]},
                status="running",
                reason=None,
                started_at=1234.5,
                updated_at=1234.5,
                last_seq=3,
            )
        )
        assert record.definition_text == FLOW_TEXT
        assert [e.to_json() for e in record.events] == [e.to_json() for e in saga.events]
        assert record.events[0].step is None and record.events[0].attempt is None
        assert record.events[0].causation_id is None
        assert record.events[1].step == "reserve" and record.events[1].attempt == 1
        positions = [e.position for e in record.events]
        assert all(isinstance(p, int) for p in positions)
        assert positions == sorted(positions) and len(set(positions)) == 3

    @pytest.mark.parametrize("value", [3, 1.5, "12", "", None, True, [1, "2"], {"a": {"b": []}}])
    def test_json_values_round_trip_exactly(self, store: SagaStore, value: Any) -> None:
        store.create(new_saga("s", input=value))
        store.append([Append("s", (event(2, data={"v": value}),), "running", None, 1.0)])
        record = store.load("s")
        assert record.header.input == value and type(record.header.input) is type(value)
        assert record.events[1].data == {"v": value}
        assert store.header("s").input == value
        assert store.read_all()[1][1].data == {"v": value}

    def test_create_of_an_existing_id_returns_it_and_writes_nothing(self, store: SagaStore) -> None:
        _, first = store.create(new_saga("dup", started_at=10.0))
        before = snapshot(store)
        other = new_saga(
            "dup",
            started_at=20.0,
            flow="refund",
            n_events=3,
            definition="b" * 64,
            definition_text="other text",
        )
        created, header = store.create(other)
        assert created is False
        assert header == first
        assert snapshot(store) == before
        with pytest.raises(KeyError):
            store.definition("b" * 64)

    def test_create_checks_the_seqs_of_its_events(self, store: SagaStore) -> None:
        saga = new_saga("s", n_events=2)
        bad = NewSaga(**{**_fields(saga), "events": (saga.events[1],)})
        with pytest.raises(ValueError):
            store.create(bad)
        assert snapshot(store) == ([], [])

    def test_create_refuses_data_that_is_not_json_and_writes_nothing(
        self, store: SagaStore
    ) -> None:
        saga = new_saga("s")
        bad = NewSaga(**{**_fields(saga), "input": {"when": object()}})
        with pytest.raises(TypeError):
            store.create(bad)
        assert snapshot(store) == ([], [])

    def test_sagas_share_a_definition(self, store: SagaStore) -> None:
        store.create(new_saga("a"))
        store.create(new_saga("b"))
        assert store.definition(FLOW_SHA) == FLOW_TEXT
        assert store.load("b").definition_text == FLOW_TEXT

    def test_definition_of_an_unknown_sha_is_a_key_error(self, store: SagaStore) -> None:
        with pytest.raises(KeyError):
            store.definition("0" * 64)

    # -- append ---------------------------------------------------------------------------------

    def test_append_at_the_next_seq(self, store: SagaStore) -> None:
        store.create(new_saga("s", n_events=2))
        store.append([append("s", 3, 2, status="compensating", reason="why", updated_at=5000.0)])
        header = store.header("s")
        assert (header.last_seq, header.status, header.reason, header.updated_at) == (
            4,
            "compensating",
            "why",
            5000.0,
        )
        assert header.started_at == 1000.0
        assert [e.seq for e in store.load("s").events] == [1, 2, 3, 4]

    def test_append_of_nothing_does_nothing(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        before = snapshot(store)
        store.append([])
        assert snapshot(store) == before

    @pytest.mark.parametrize("first", [1, 2, 4])
    def test_append_at_a_wrong_seq_conflicts_and_writes_nothing(
        self, store: SagaStore, first: int
    ) -> None:
        store.create(new_saga("s", n_events=2))
        before = snapshot(store)
        with pytest.raises(SeqConflict) as caught:
            store.append([append("s", first, 2, status="failed")])
        assert (caught.value.saga_id, caught.value.seq) == ("s", first)
        assert snapshot(store) == before

    def test_a_conflict_anywhere_in_a_batch_writes_nothing_of_it(self, store: SagaStore) -> None:
        for saga_id in ("a", "b", "c"):
            store.create(new_saga(saga_id))
        before = snapshot(store)
        batch = [
            append("a", 2, status="completed"),
            append("b", 2, 3, status="compensating"),
            append("c", 1),  # seq 1 is taken
        ]
        with pytest.raises(SeqConflict) as caught:
            store.append(batch)
        assert caught.value.saga_id == "c"
        assert snapshot(store) == before
        assert store.in_flight() == ["a", "b", "c"]

    def test_an_unknown_saga_in_a_batch_writes_nothing_of_it(self, store: SagaStore) -> None:
        store.create(new_saga("a"))
        before = snapshot(store)
        with pytest.raises(UnknownSaga) as caught:
            store.append([append("a", 2, status="completed"), append("ghost", 1)])
        assert caught.value.saga_id == "ghost"
        assert snapshot(store) == before

    def test_a_batch_may_append_twice_to_one_saga(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        store.append(
            [append("s", 2, 2, updated_at=1.0), append("s", 4, status="completed", updated_at=2.0)]
        )
        header = store.header("s")
        assert (header.last_seq, header.status, header.updated_at) == (4, "completed", 2.0)
        assert [e.seq for e in store.load("s").events] == [1, 2, 3, 4]

    def test_a_batch_that_conflicts_with_itself_writes_nothing(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        before = snapshot(store)
        with pytest.raises(SeqConflict):
            store.append([append("s", 2, 2), append("s", 3)])
        assert snapshot(store) == before

    def test_append_checks_its_events(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        before = snapshot(store)
        gap = Append("s", (event(2), event(4)), "running", None, 1.0)
        with pytest.raises(ValueError):
            store.append([gap])
        with pytest.raises(ValueError):
            store.append([Append("s", (), "running", None, 1.0)])
        not_json = Append("s", (event(3, data={"x": {1, 2}}),), "running", None, 1.0)
        with pytest.raises(TypeError):
            store.append([append("s", 2), not_json])
        assert snapshot(store) == before

    def test_the_log_is_a_snapshot_of_what_was_written(self, store: SagaStore) -> None:
        data: dict[str, Any] = {"items": [1]}
        saga = new_saga("s", input={"items": [1]})
        store.create(saga)
        store.append([Append("s", (event(2, data=data),), "running", None, 1.0)])
        data["items"].append(2)
        saga.input["items"].append(2)
        record = store.load("s")
        assert record.events[1].data == {"items": [1]}
        assert record.header.input == {"items": [1]}
        record.events[1].data["items"].append(3)
        assert store.load("s").events[1].data == {"items": [1]}

    # -- write: creates, then appends, in one call ----------------------------------------------

    def test_write_creates_then_appends_in_one_call(self, store: SagaStore) -> None:
        store.create(new_saga("old", started_at=1.0, n_events=2))
        results = store.write(
            [new_saga("a", started_at=2.0, n_events=2), new_saga("b", started_at=3.0)],
            [append("old", 3, status="compensating"), append("a", 3, 2, status="completed")],
        )
        assert [(created, header.saga_id, header.last_seq) for created, header in results] == [
            (True, "a", 2),
            (True, "b", 1),
        ]
        assert results[0][1] == SagaHeader(
            "a", "order", 1, FLOW_SHA, {"order": "a"}, "running", None, 2.0, 2.0, 2
        )
        assert (store.header("a").last_seq, store.header("a").status) == (4, "completed")
        assert store.header("old").status == "compensating"
        assert [h.saga_id for h in store.list()] == ["b", "a", "old"]
        order = [(saga_id, e.seq) for saga_id, e in store.read_all()]
        assert order == [
            ("old", 1), ("old", 2), ("a", 1), ("a", 2), ("b", 1), ("old", 3), ("a", 3), ("a", 4),
        ]  # fmt: skip
        assert store.load("a").events == tuple(e for s, e in store.read_all() if s == "a")

    def test_write_of_an_existing_id_returns_it_and_goes_on(self, store: SagaStore) -> None:
        _, first = store.create(new_saga("dup", started_at=10.0))
        other = new_saga("dup", flow="refund", n_events=3, definition="b" * 64, definition_text="x")
        results = store.write([new_saga("x"), other, new_saga("y")], [append("x", 2)])
        assert [created for created, _ in results] == [True, False, True]
        assert results[1][1] == first
        assert store.load("dup").events == store.load("dup").events[:1]
        assert store.header("x").last_seq == 2 and store.header("y").last_seq == 1
        with pytest.raises(KeyError):
            store.definition("b" * 64)

    def test_write_of_one_id_twice_creates_the_first(self, store: SagaStore) -> None:
        results = store.write(
            [new_saga("s", flow="first"), new_saga("s", flow="second", n_events=3)],
            [append("s", 2)],
        )
        (created, header), (again, existing) = results
        assert (created, again) == (True, False)
        assert header == existing and header.flow == "first" and header.last_seq == 1
        assert header.input is not existing.input  # each result is a copy
        record = store.load("s")
        assert record.header.flow == "first" and [e.seq for e in record.events] == [1, 2]

    def test_write_headers_are_those_before_the_calls_appends(self, store: SagaStore) -> None:
        store.create(new_saga("old"))
        results = store.write(
            [new_saga("new"), new_saga("old")],
            [append("new", 2, status="failed"), append("old", 2, status="failed")],
        )
        assert [(h.last_seq, h.status) for _, h in results] == [(1, "running"), (1, "running")]
        assert store.header("new").status == store.header("old").status == "failed"

    def test_an_append_to_a_saga_of_the_call_follows_its_events(self, store: SagaStore) -> None:
        store.create(new_saga("other"))
        before = snapshot(store)
        with pytest.raises(SeqConflict) as caught:
            store.write([new_saga("s", n_events=2)], [append("s", 2)])
        assert (caught.value.saga_id, caught.value.seq) == ("s", 2)
        assert snapshot(store) == before

    def test_write_of_nothing_does_nothing(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        before = snapshot(store)
        assert store.write([], []) == []
        assert snapshot(store) == before

    @pytest.mark.parametrize(
        "failure",
        [
            "seq conflict",
            "unknown saga",
            "append without events",
            "append with a gap",
            "append data not json",
            "create seqs",
            "create input not json",
            "create owner",
        ],
    )
    def test_a_failed_write_writes_nothing_creates_included(
        self, store: SagaStore, failure: str
    ) -> None:
        store.create(new_saga("old", n_events=2))
        before = snapshot(store)
        fresh = new_saga("fresh", definition="c" * 64, definition_text="fresh text")
        creates = [new_saga("new"), fresh]
        appends = [append("new", 2), append("old", 3, status="completed")]
        expected: type[Exception] = ValueError
        if failure == "seq conflict":
            appends.append(append("old", 3))
            expected = SeqConflict
        elif failure == "unknown saga":
            appends.append(append("ghost", 1))
            expected = UnknownSaga
        elif failure == "append without events":
            appends.append(Append("old", (), "running", None, 1.0))
        elif failure == "append with a gap":
            appends.append(Append("fresh", (event(2), event(4)), "running", None, 1.0))
        elif failure == "append data not json":
            appends.append(Append("fresh", (event(2, data={"x": {1}}),), "running", None, 1.0))
            expected = TypeError
        elif failure == "create seqs":
            saga = new_saga("bad", n_events=2)
            creates.append(NewSaga(**{**_fields(saga), "events": (saga.events[1],)}))
        elif failure == "create input not json":
            creates.append(new_saga("bad", input={"when": object()}))
            expected = TypeError
        else:
            creates.append(new_saga("bad", owner="no/slash"))
        with pytest.raises(expected):
            store.write(creates, appends)
        assert snapshot(store) == before
        with pytest.raises(KeyError):
            store.definition("c" * 64)
        assert store.write(creates[:2], appends[:2])[1][0] is True  # the rest was fine

    def test_concurrent_writes_of_one_id_exactly_one_lands(self, store: SagaStore) -> None:
        race_writes(store, store)

    # -- unknown ids ----------------------------------------------------------------------------

    def test_unknown_saga(self, store: SagaStore) -> None:
        store.create(new_saga("known"))
        with pytest.raises(UnknownSaga) as caught:
            store.load("ghost")
        assert caught.value.saga_id == "ghost"
        with pytest.raises(UnknownSaga):
            store.header("ghost")
        with pytest.raises(UnknownSaga):
            store.append([append("ghost", 1)])

    # -- concurrency ----------------------------------------------------------------------------

    def test_concurrent_appends_at_one_seq_exactly_one_wins(self, store: SagaStore) -> None:
        race_appends(store, store)

    def test_concurrent_creates_of_one_id_exactly_one_wins(self, store: SagaStore) -> None:
        race_creates(store, store)

    def test_concurrent_appends_to_different_sagas_all_land(self, store: SagaStore) -> None:
        for saga_id in ("x", "y"):
            store.create(new_saga(saga_id))

        def writer(saga_id: str) -> Callable[[], None]:
            def write() -> None:
                for seq in range(2, 52):
                    store.append([append(saga_id, seq)])

            return write

        assert run_pair(writer("x"), writer("y")) == [None, None]
        assert store.header("x").last_seq == store.header("y").last_seq == 51
        positions = [e.position for _, e in store.read_all(0, 1000)]
        assert positions == sorted(positions) and len(positions) == 102

    # -- queries --------------------------------------------------------------------------------

    def test_list_is_newest_first_with_filters(self, store: SagaStore) -> None:
        store.create(new_saga("old", started_at=1.0, flow="order"))
        store.create(new_saga("mid-a", started_at=2.0, flow="refund"))
        store.create(new_saga("mid-b", started_at=2.0, flow="order"))
        store.create(new_saga("new", started_at=3.0, flow="order"))
        store.append([append("mid-b", 2, status="completed"), append("old", 2, status="failed")])

        def ids(headers: list[SagaHeader]) -> list[str]:
            return [h.saga_id for h in headers]

        assert ids(store.list()) == ["new", "mid-b", "mid-a", "old"]
        assert ids(store.list(status="running")) == ["new", "mid-a"]
        assert ids(store.list(flow="order")) == ["new", "mid-b", "old"]
        assert ids(store.list(status="completed", flow="order")) == ["mid-b"]
        assert ids(store.list(status="completed", flow="refund")) == []
        assert ids(store.list(status="nonsense")) == []
        assert ids(store.list(limit=2)) == ["new", "mid-b"]
        assert ids(store.list(flow="order", limit=2)) == ["new", "mid-b"]
        assert ids(store.list(limit=10)) == ["new", "mid-b", "mid-a", "old"]
        assert store.list(limit=0) == []
        with pytest.raises(ValueError):
            store.list(limit=-1)
        assert store.list(status="failed")[0] == store.header("old")

    def test_in_flight_is_every_saga_not_terminal(self, store: SagaStore) -> None:
        statuses = ["running", "compensating", *sorted(TERMINAL)]
        for n, status in enumerate(statuses):
            store.create(new_saga(f"s{n}", started_at=float(n), status=status))
        assert store.in_flight() == ["s0", "s1"]
        store.append([append("s0", 2, status="compensating"), append("s1", 2, status="failed")])
        assert store.in_flight() == ["s0"]
        store.append([append("s0", 3, status="compensated")])
        assert store.in_flight() == []

    def test_status_index_follows_appends(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        assert [h.saga_id for h in store.list(status="running")] == ["s"]
        store.append([append("s", 2, status="compensating")])
        assert store.list(status="running") == []
        assert [h.status for h in store.list(status="compensating")] == ["compensating"]
        store.append([append("s", 3, status="compensating")])
        store.append([append("s", 4, status="running")])
        assert [h.saga_id for h in store.list(status="running")] == ["s"]
        assert store.list(status="compensating") == []

    # -- load_many ------------------------------------------------------------------------------

    def test_load_many_is_load_of_each_in_the_order_asked(self, store: SagaStore) -> None:
        store.write(
            [
                new_saga("a", n_events=3, input=[1, {"x": None}]),
                new_saga("b", flow="refund", definition="d" * 64, definition_text="refund text"),
                new_saga("c", owner="me"),
            ],
            [append("a", 4, status="compensating", reason="r")],
        )
        records = store.load_many(["c", "ghost", "a", "b", "a", "c"])
        assert [r.header.saga_id for r in records] == ["c", "a", "b"]
        assert records == [store.load("c"), store.load("a"), store.load("b")]
        assert records[2].definition_text == "refund text"
        assert [e.seq for e in records[1].events] == [1, 2, 3, 4]
        assert store.load_many([]) == store.load_many(["ghost"]) == []
        assert store.load_many(("b",)) == [store.load("b")]
        with pytest.raises(TypeError):
            store.load_many("a")  # one id is not a list of ids

    def test_load_many_reads_more_sagas_than_one_query_takes(self, store: SagaStore) -> None:
        ids = [f"s{n:04}" for n in range(1234)]
        store.write([new_saga(saga_id, n_events=1 + n % 3) for n, saga_id in enumerate(ids)], [])
        wanted = [*ids[::-1], "ghost"]
        records = store.load_many(wanted)
        assert [r.header.saga_id for r in records] == ids[::-1]
        assert [len(r.events) for r in records] == [1 + n % 3 for n in range(1234)][::-1]
        assert records[0] == store.load(ids[-1]) and records[-1] == store.load(ids[0])

    def test_load_many_returns_copies(self, store: SagaStore) -> None:
        store.create(new_saga("s", input={"items": [1]}))
        (record,) = store.load_many(["s"])
        record.header.input["items"].append(2)
        record.events[0].data["input"]["items"].append(3)
        assert store.load_many(["s"]) == [store.load("s")]
        assert store.load("s").header.input == {"items": [1]}

    def test_load_many_is_one_snapshot(self, store: SagaStore) -> None:
        snapshots_agree(store, store)

    # -- two store objects on one store (as two processes have) ---------------------------------

    def test_two_store_objects_on_one_store_see_each_others_writes(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        store.create(new_saga("s"))
        assert again.header("s").last_seq == 1
        again.append([append("s", 2, status="completed")])
        assert store.header("s").status == "completed"
        with pytest.raises(SeqConflict):
            store.append([append("s", 2)])
        assert store.create(new_saga("s"))[0] is False

    def test_two_store_objects_racing_appends_exactly_one_wins(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_appends(store, again)

    def test_two_store_objects_racing_creates_exactly_one_wins(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_creates(store, again)

    def test_two_store_objects_racing_writes_exactly_one_lands(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_writes(store, again)

    def test_load_many_is_one_snapshot_of_another_store_objects_writes(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        snapshots_agree(store, again)


class LogReaderContract(_Hooks):
    """The contract of :class:`~sagas.stores.LogReader` and its :class:`~sagas.stores.Cursors`:
    the global log in position order, and durable cursors."""

    # -- the global log -------------------------------------------------------------------------

    def test_read_all_is_in_global_position_order(self, store: SagaStore) -> None:
        store.create(new_saga("a", n_events=2))
        store.create(new_saga("b"))
        store.append([append("b", 2), append("a", 3)])
        store.append([append("a", 4, 2)])
        everything = store.read_all()
        assert [(s, e.seq) for s, e in everything] == [
            ("a", 1),
            ("a", 2),
            ("b", 1),
            ("b", 2),
            ("a", 3),
            ("a", 4),
            ("a", 5),
        ]
        positions = [e.position for _, e in everything]
        assert all(isinstance(p, int) and p > 0 for p in positions)
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert everything[0][1] == store.load("a").events[0]

        pages: list[tuple[str, StoredEvent]] = []
        after = 0
        while page := store.read_all(after, 3):
            assert len(page) <= 3
            pages += page
            after = page[-1][1].position
        assert pages == everything
        assert store.read_all(positions[3], 2) == everything[4:6]
        assert store.read_all(positions[-1]) == []
        assert store.read_all(0, 0) == []
        with pytest.raises(ValueError):
            store.read_all(0, -1)

    def test_read_log_is_read_all_with_each_sagas_flow(self, store: SagaStore) -> None:
        store.create(new_saga("a", n_events=2, flow="order"))
        store.create(new_saga("b", flow="trip"))
        store.append([append("b", 2), append("a", 3)])
        log = store.read_log()
        assert all(isinstance(entry, LogEntry) for entry in log)
        assert [(e.saga_id, e.event) for e in log] == store.read_all()
        assert [(e.saga_id, e.flow, e.event.seq) for e in log] == [
            ("a", "order", 1),
            ("a", "order", 2),
            ("b", "trip", 1),
            ("b", "trip", 2),
            ("a", "order", 3),
        ]
        pages: list[LogEntry] = []
        after = 0
        while page := store.read_log(after, 2):
            assert len(page) <= 2
            pages += page
            after = page[-1].event.position
        assert pages == log
        assert store.read_log(log[-1].event.position) == []
        assert store.read_log(0, 0) == []
        with pytest.raises(ValueError):
            store.read_log(0, -1)

    def test_read_log_gives_private_copies_of_event_data(self, store: SagaStore) -> None:
        store.create(new_saga("a"))
        (first,) = store.read_log()
        before = store.read_all()[0][1].data
        first.event.data["input"] = "changed"
        assert store.read_log()[0].event.data == before != first.event.data

    def test_last_position_is_the_newest_events(self, store: SagaStore) -> None:
        assert store.last_position() == 0
        store.create(new_saga("a", n_events=3))
        store.create(new_saga("b"))
        assert store.last_position() == store.read_all()[-1][1].position
        store.send_event("Paid", "o-1", sent_at=1.0)  # external events have positions of their own
        assert store.last_position() == store.read_all()[-1][1].position

    # -- subscribers' cursors -------------------------------------------------------------------

    def test_a_cursor_is_kept_per_subscriber(self, store: SagaStore) -> None:
        assert store.cursor("mailer") is None
        assert store.cursors() == {}
        store.save_cursor("mailer", 5)
        store.save_cursor("flows.shop:Notifications.on_completed", 0)
        assert store.cursor("mailer") == 5
        store.save_cursor("mailer", 9)
        assert store.cursor("mailer") == 9
        store.save_cursor("mailer", 2)  # set as given: a deliberate replay
        assert store.cursors() == {"mailer": 2, "flows.shop:Notifications.on_completed": 0}
        store.delete_cursor("mailer")
        store.delete_cursor("mailer")  # an unknown name is ignored
        assert store.cursor("mailer") is None
        assert store.cursors() == {"flows.shop:Notifications.on_completed": 0}

    @pytest.mark.parametrize(
        ("name", "position", "error"),
        [
            ("", 1, ValueError),
            ("has space", 1, ValueError),
            ("x" * 257, 1, ValueError),
            (7, 1, TypeError),
            ("ok", -1, ValueError),
            ("ok", 1.5, TypeError),
            ("ok", True, TypeError),
            ("ok", "3", TypeError),
        ],
    )
    def test_an_invalid_subscriber_or_position_is_refused(
        self, store: SagaStore, name: Any, position: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            store.save_cursor(name, position)
        assert store.cursors() == {}

    def test_the_longest_subscriber_name_is_taken(self, store: SagaStore) -> None:
        name = "a:" + "b" * 254
        store.save_cursor(name, 1)
        assert store.cursor(name) == 1


class LeasesContract(_Hooks):
    """The contract of :class:`~sagas.stores.Leases`: fixed partitions, leases with epochs
    (acquired, renewed, released, expired, taken over), the sagas their holders claim,
    members, and the fence of :meth:`~sagas.stores.EventLog.write`. Expiry is waited for,
    never slept through: a lease is renewed for a few milliseconds (:func:`expire`), then the
    store is asked until it says so. The store must have at least 4 partitions."""

    # -- partitions -----------------------------------------------------------------------------

    def test_a_store_has_a_fixed_number_of_partitions(self, store: SagaStore) -> None:
        count = store.partitions()
        assert isinstance(count, int) and 4 <= count <= MAX_PARTITIONS
        store.create(new_saga("s"))
        assert store.partitions() == count
        assert [i.partition for i in store.leases()] == list(range(count))

    def test_another_store_object_sees_the_same_partitions_and_leases(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        assert again.partitions() == store.partitions()
        taken = store.acquire("m-1", [0, 2], 60.0)
        assert again.leases() == store.leases()
        assert [(i.member, i.epoch, i.held) for i in again.leases()[:3]] == [
            ("m-1", 1, True), (None, 0, False), ("m-1", 1, True)]
        assert again.acquire("m-2", [0, 1, 2], 60.0)[0].partition == 1
        # a lease is its member's, whichever store object it uses
        assert [lease.partition for lease in again.renew("m-1", taken, 60.0)] == [0, 2]

    def test_a_new_store_has_every_partition_free(self, store: SagaStore) -> None:
        assert {(i.member, i.epoch, i.expires_at, i.renewed_at, i.held)
                for i in store.leases()} == {(None, 0, None, None, False)}

    # -- acquire, renew, release ----------------------------------------------------------------

    def test_acquire_takes_free_partitions_at_epoch_1(self, store: SagaStore) -> None:
        before = time.monotonic()
        taken = store.acquire("m-1", [3, 1, 1], 30.0)
        after = time.monotonic()
        assert [(t.partition, t.member, t.epoch) for t in taken] == [(1, "m-1", 1), (3, "m-1", 1)]
        for lease in taken:
            assert before + 30.0 <= lease.deadline <= after + 30.0
        infos = store.leases()
        for lease in taken:
            info = infos[lease.partition]
            assert (info.member, info.epoch, info.held) == ("m-1", 1, True)
            assert info.expires_at == pytest.approx(lease.expires_at, abs=1e-6)
            assert info.renewed_at is not None
            assert info.expires_at == pytest.approx(info.renewed_at + 30.0, abs=1e-6)
        assert [i.partition for i in infos if i.held] == [1, 3]

    def test_acquiring_its_own_lease_renews_it_at_the_same_epoch(self, store: SagaStore) -> None:
        (first,) = store.acquire("m-1", [0], 5.0)
        (again,) = store.acquire("m-1", [0], 60.0)
        assert again.epoch == first.epoch == 1
        assert again.expires_at > first.expires_at and again.deadline > first.deadline

    def test_acquire_leaves_another_members_live_lease(self, store: SagaStore) -> None:
        (mine,) = store.acquire("m-1", [0], 60.0)
        assert store.acquire("m-2", [0], 60.0) == []
        assert [t.partition for t in store.acquire("m-2", [0, 1], 60.0)] == [1]
        info = store.leases()[0]
        assert (info.member, info.epoch, info.held) == ("m-1", 1, True)
        assert info.expires_at == pytest.approx(mine.expires_at, abs=1e-6)

    def test_renew_extends_the_leases_the_member_still_holds(self, store: SagaStore) -> None:
        taken = store.acquire("m-1", [0, 1, 2], 5.0)
        before = time.monotonic()
        renewed = store.renew("m-1", taken, 60.0)
        assert [(r.partition, r.epoch) for r in renewed] == [(0, 1), (1, 1), (2, 1)]
        for old, new in zip(taken, renewed, strict=True):
            assert new.expires_at > old.expires_at and new.deadline >= before + 60.0
        store.release("m-1", [1])
        stale = Lease(2, "m-1", 7, taken[2].expires_at, taken[2].deadline)  # a wrong epoch
        assert [r.partition for r in store.renew("m-1", [taken[1], stale, taken[0]], 60.0)] == [0]
        assert store.renew("m-1", [], 60.0) == []
        with pytest.raises(ValueError):
            store.renew("m-2", taken, 60.0)  # another member's leases
        assert store.leases()[2].epoch == 1 and store.leases()[2].held

    def test_release_frees_the_partitions_and_keeps_their_epochs(self, store: SagaStore) -> None:
        store.acquire("m-1", [0, 1], 60.0)
        store.release("m-1", [0, 3])  # 3 was never held: nothing to do
        infos = store.leases()
        assert (infos[0].member, infos[0].epoch, infos[0].held) == (None, 1, False)
        assert (infos[1].member, infos[1].held) == ("m-1", True)
        (taken,) = store.acquire("m-2", [0], 60.0)
        assert taken.epoch == 2
        store.release("m-1", [0])  # not its own any more: left as it is
        assert (store.leases()[0].member, store.leases()[0].held) == ("m-2", True)
        (back,) = store.acquire("m-1", [1], 60.0)
        assert back.epoch == 1  # still its own: a renewal
        store.release("m-2", [0])
        assert store.acquire("m-2", [0], 60.0)[0].epoch == 3  # released, then taken: a new tenure

    def test_an_expired_lease_is_taken_over_at_the_next_epoch(self, store: SagaStore) -> None:
        (lease,) = store.acquire("m-1", [2], 60.0)
        short = store.renew("m-1", [lease], 0.05)[0]
        (taken,) = eventually(lambda: store.acquire("m-2", [2], 60.0), what="the takeover")
        assert time.monotonic() >= short.deadline - 0.001  # m-1 had stopped on its own clock
        assert (taken.member, taken.epoch) == ("m-2", 2)
        assert store.renew("m-1", [lease], 60.0) == []
        assert store.acquire("m-1", [2], 60.0) == []
        info = store.leases()[2]
        assert (info.member, info.epoch, info.held) == ("m-2", 2, True)

    def test_an_expired_lease_keeps_its_member_but_is_not_held(self, store: SagaStore) -> None:
        (lease,) = store.acquire("m-1", [1], 60.0)
        expire(store, lease)
        info = store.leases()[1]
        assert (info.member, info.epoch, info.held) == ("m-1", 1, False)
        assert store.renew("m-1", [lease], 60.0) == []  # lost, even though nobody took it
        (again,) = store.acquire("m-1", [1], 60.0)
        assert again.epoch == 2  # its own lease after it expired: a new tenure

    # -- fenced writes --------------------------------------------------------------------------

    def test_a_fenced_write_records_its_member_and_epoch(self, store: SagaStore) -> None:
        count = store.partitions()
        a, b = saga_in_partition(0, count, "a"), saga_in_partition(1, count, "b")
        store.acquire("m-1", [0], 60.0)
        taken = store.acquire("m-1", [0, 1], 60.0)  # 0 renewed (epoch 1), 1 new
        store.release("m-1", [1])
        taken = [taken[0], *store.acquire("m-1", [1], 60.0)]  # 1 at epoch 2
        fence = Fence.of("m-1", taken)
        assert dict(fence.epochs) == {0: 1, 1: 2}
        results = store.write([new_saga(a, n_events=2)], [], fence=fence)
        assert results[0][0] is True
        store.create(new_saga(b))  # unfenced
        store.append([append(b, 2), append(a, 3)], fence=fence)
        store.write([], [append(b, 3)])
        assert store.writers(a) == [(1, "m-1", 1), (2, "m-1", 1), (3, "m-1", 1)]
        assert store.writers(b) == [(1, None, None), (2, "m-1", 2), (3, None, None)]
        assert all(isinstance(w, Writer) for w in store.writers(a))
        with pytest.raises(UnknownSaga):
            store.writers("nobody")

    def test_a_write_under_a_stale_epoch_is_refused_and_writes_nothing(
        self, store: SagaStore
    ) -> None:
        count = store.partitions()
        saga_id = saga_in_partition(2, count)
        (old,) = store.acquire("m-1", [2], 60.0)
        store.create(new_saga(saga_id), fence=Fence.of("m-1", [old]))
        expire(store, old)
        (new,) = store.acquire("m-2", [2], 60.0)
        before = snapshot(store), store.writers(saga_id)
        with pytest.raises(LeaseLost) as caught:
            store.append([append(saga_id, 2)], fence=Fence.of("m-1", [old]))
        lost = caught.value
        assert isinstance(lost, StoreError)
        assert (lost.partition, lost.member, lost.epoch, lost.saga_id) == (2, "m-1", 1, saga_id)
        assert "partition 2" in str(lost) and "\n" not in str(lost)
        with pytest.raises(LeaseLost):  # a create, of a new id or an existing one, too
            store.write([new_saga(saga_in_partition(2, count, "t")), new_saga(saga_id)], [],
                        fence=Fence.of("m-1", [old]))
        assert (snapshot(store), store.writers(saga_id)) == before
        store.append([append(saga_id, 2)], fence=Fence.of("m-2", [new]))
        assert store.writers(saga_id) == [(1, "m-1", 1), (2, "m-2", 2)]

    def test_a_write_whose_lease_expired_is_refused_even_if_nobody_took_it(
        self, store: SagaStore
    ) -> None:
        saga_id = saga_in_partition(1, store.partitions())
        (lease,) = store.acquire("m-1", [1], 60.0)
        store.create(new_saga(saga_id), fence=Fence.of("m-1", [lease]))
        expire(store, lease)
        with pytest.raises(LeaseLost):
            store.append([append(saga_id, 2)], fence=Fence.of("m-1", [lease]))
        assert store.header(saga_id).last_seq == 1

    def test_a_write_after_a_release_is_refused(self, store: SagaStore) -> None:
        saga_id = saga_in_partition(3, store.partitions())
        taken = store.acquire("m-1", [3], 60.0)
        store.create(new_saga(saga_id), fence=Fence.of("m-1", taken))
        store.leave("m-1")
        with pytest.raises(LeaseLost):
            store.append([append(saga_id, 2)], fence=Fence.of("m-1", taken))
        assert store.header(saga_id).last_seq == 1

    def test_a_write_for_a_partition_never_held_is_refused_and_writes_nothing(
        self, store: SagaStore
    ) -> None:
        count = store.partitions()
        mine, other = saga_in_partition(0, count, "mine"), saga_in_partition(1, count, "other")
        taken = store.acquire("m-1", [0], 60.0)
        store.create(new_saga(other))
        before = snapshot(store)
        for fence, epoch in ((Fence.of("m-1", taken), None),  # no epoch for partition 1
                             (Fence("m-1", {0: 1, 1: 1}), 1)):  # an epoch it never had
            with pytest.raises(LeaseLost) as caught:
                store.write([new_saga(mine)], [append(other, 2)], fence=fence)
            assert (caught.value.partition, caught.value.epoch) == (1, epoch)
            assert caught.value.saga_id == other
            assert snapshot(store) == before  # the create in a held partition neither
        with pytest.raises(LeaseLost):  # another member's lease is no fence of this one
            store.append([append(other, 2)], fence=Fence("m-2", {1: 0 + 1}))
        store.acquire("m-3", [1], 60.0)
        with pytest.raises(LeaseLost) as caught:
            store.append([append(other, 2)], fence=Fence("m-1", {1: 1}))
        assert caught.value.epoch == 1
        assert snapshot(store) == before

    def test_a_lost_lease_is_reported_before_a_seq_conflict(self, store: SagaStore) -> None:
        saga_id = saga_in_partition(0, store.partitions())
        store.create(new_saga(saga_id, n_events=3))
        with pytest.raises(LeaseLost):
            store.append([append(saga_id, 2)], fence=Fence("m-1", {0: 1}))

    def test_a_fenced_write_of_nothing_does_nothing(self, store: SagaStore) -> None:
        assert store.write([], [], fence=Fence("m-1", {})) == []
        store.append([], fence=Fence("m-1", {}))
        assert store.list() == []

    # -- claims -------------------------------------------------------------------------------

    def test_a_claim_takes_the_sagas_in_flight_of_the_partitions_held(
        self, store: SagaStore
    ) -> None:
        count = store.partitions()

        def of(partition: int, name: str) -> str:
            return saga_in_partition(partition, count, name)

        store.create(new_saga(of(0, "free"), started_at=1.0))
        store.create(new_saga(of(0, "gone"), started_at=2.0, owner="rt-gone"))
        store.create(new_saga(of(1, "undoing"), started_at=3.0, owner="rt-1",
                              status="compensating"))
        store.create(new_saga(of(1, "waiting"), started_at=4.0, owner="rt-2"))
        for n, status in enumerate(sorted(TERMINAL)):  # terminal: left as they are
            store.create(new_saga(of(n % 2, f"ended-{n}"), started_at=0.5, owner="rt-1",
                                  status=status))
        store.create(new_saga(of(2, "elsewhere"), started_at=0.1, owner="rt-1"))  # not claimed
        store.create(new_saga(of(3, "unheld"), started_at=0.2))
        store.append([append(of(0, "gone"), 2, status="completed"),  # ended since
                      append(of(1, "undoing"), 2, status="compensating")])
        taken = store.acquire("m-1", [0, 1, 2], 60.0)
        before = {h.saga_id: h for h in store.list()}
        claimed = store.claim(Fence.of("m-1", taken), [1, 0])
        assert claimed == [of(0, "free"), of(1, "undoing"), of(1, "waiting")]
        in_flight = store.in_flight()
        assert claimed == [i for i in in_flight if partition_of(i, count) in (0, 1)]
        after = {h.saga_id: h for h in store.list()}
        for saga_id, header in before.items():
            if saga_id in claimed:  # only the owner changed
                assert after[saga_id] == replace(header, owner="m-1"), saga_id
            else:
                assert after[saga_id] == header, saga_id
        assert store.load(of(1, "undoing")).header.owner == "m-1"
        # the member's own sagas are claimed again: they are the ones it must drive
        assert store.claim(Fence.of("m-1", taken), [0, 1]) == claimed
        assert store.claim(Fence.of("m-1", taken), [2]) == [of(2, "elsewhere")]
        assert store.header(of(2, "elsewhere")).owner == "m-1"

    def test_a_claim_takes_the_sagas_of_a_live_owner(self, store: SagaStore) -> None:
        saga_id = saga_in_partition(1, store.partitions())
        store.register_owner("rt-1")
        store.create(new_saga(saga_id, owner="rt-1"))
        assert store.owner_alive("rt-1")
        taken = store.acquire("m-1", [1], 60.0)
        assert store.claim(Fence.of("m-1", taken), [1]) == [saga_id]
        assert store.header(saga_id).owner == "m-1"
        assert store.owner_alive("rt-1")  # taken by lease: its owner's life is no matter

    def test_a_claim_returns_the_sagas_oldest_first(self, store: SagaStore) -> None:
        count = store.partitions()
        ids = [saga_in_partition(n % 2, count, f"age-{n}") for n in range(6)]
        started = [5.0, 1.0, 3.0, 1.0, 2.0, 1.0]
        for saga_id, at in zip(ids, started, strict=True):
            store.create(new_saga(saga_id, started_at=at, owner="m-1" if at == 3.0 else None))
        taken = store.acquire("m-1", [0, 1], 60.0)
        expected = [saga_id for _, saga_id in sorted(zip(started, ids, strict=True))]
        assert store.claim(Fence.of("m-1", taken), [0, 1]) == expected
        assert store.claim(Fence.of("m-1", taken), [1, 0, 1]) == expected

    def test_a_claim_for_a_lease_lost_is_refused_and_changes_nothing(
        self, store: SagaStore
    ) -> None:
        count = store.partitions()
        ids = {p: saga_in_partition(p, count, "lost") for p in range(4)}
        for saga_id in ids.values():
            store.create(new_saga(saga_id, owner="rt-1"))
        taken = {lease.partition: lease for lease in store.acquire("m-1", [0, 1, 2], 60.0)}
        fence = Fence.of("m-1", taken.values())
        expire(store, taken[1])  # expired, nobody took it
        expire(store, taken[2])
        (new,) = store.acquire("m-2", [2], 60.0)  # a stale epoch
        assert new.epoch == 2
        before = snapshot(store)

        def refused(fence: Fence, partitions: list[int]) -> LeaseLost:
            with pytest.raises(LeaseLost) as caught:
                store.claim(fence, partitions)
            assert snapshot(store) == before  # not even the sagas of partition 0
            assert isinstance(caught.value, StoreError) and "\n" not in str(caught.value)
            return caught.value

        lost = refused(fence, [0, 1])
        assert (lost.partition, lost.member, lost.epoch, lost.saga_id) == (1, "m-1", 1, "")
        lost = refused(fence, [0, 2, 1])  # the first in the order given
        assert (lost.partition, lost.epoch) == (2, 1)
        lost = refused(Fence("m-1", {0: 1, 3: 1}), [3, 0])  # an epoch it never had
        assert (lost.partition, lost.epoch, lost.saga_id) == (3, 1, "")
        lost = refused(fence, [0, 3])  # no epoch for partition 3: refused before asking
        assert (lost.partition, lost.member, lost.epoch, lost.saga_id) == (3, "m-1", None, "")
        lost = refused(Fence("m-2", {0: 1}), [0])  # another member's lease is no fence
        assert (lost.partition, lost.member) == (0, "m-2")
        store.release("m-1", [0])
        lost = refused(fence, [0])  # released
        assert (lost.partition, lost.epoch) == (0, 1)
        assert store.claim(Fence.of("m-2", [new]), [2]) == [ids[2]]

    def test_a_claim_checks_its_arguments(self, store: SagaStore) -> None:
        count = store.partitions()
        saga_id = saga_in_partition(0, count)
        store.create(new_saga(saga_id, owner="rt-1"))
        taken = store.acquire("m-1", [0], 60.0)
        fence = Fence.of("m-1", taken)
        for fence_, partitions, error in (
            (fence, 0, TypeError), (fence, "0", TypeError), (fence, [0.0], TypeError),
            (fence, [True], TypeError), (fence, ["0"], TypeError), (fence, None, TypeError),
            ({"m-1": {0: 1}}, [0], TypeError), (("m-1", {0: 1}), [0], TypeError),
            (fence, [count], ValueError), (fence, [0, -1], ValueError),
            (Fence("m-1", {0: 1, count: 1}), [0], ValueError),
        ):
            with pytest.raises(error):
                store.claim(fence_, partitions)  # type: ignore[arg-type]
        assert store.claim(fence, []) == []
        assert store.claim(Fence("m-1", {}), []) == []
        assert store.claim(fence, (p for p in [0, 0])) == [saga_id]
        store.release("m-1", [0])
        assert store.claim(fence, []) == []  # no partition: nothing to check
        assert store.header(saga_id).owner == "m-1"

    # -- members ------------------------------------------------------------------------------

    def test_members_announce_themselves_and_leave(self, store: SagaStore) -> None:
        assert store.members() == []
        store.heartbeat("m-2", {"host": "h", "pid": 7, "flows": ["order"]})
        store.heartbeat("m-1")
        first = {m.member: m for m in store.members()}
        assert list(first) == ["m-1", "m-2"]
        assert first["m-1"].info == {} and first["m-2"].info["flows"] == ["order"]
        for member in first.values():
            assert member.started_at == pytest.approx(member.last_seen, abs=0.05)
            assert 0.0 <= member.seen_ago < JOIN_TIMEOUT
        first["m-2"].info["flows"].append("x")  # a private copy
        store.heartbeat("m-2")  # keeps what it said
        seen = store.members()[1]
        assert seen.info == {"host": "h", "pid": 7, "flows": ["order"]}
        assert seen.started_at == first["m-2"].started_at
        assert seen.last_seen >= first["m-2"].last_seen
        store.heartbeat("m-2", {"pid": 8})
        assert store.members()[1].info == {"pid": 8}
        store.acquire("m-2", [0, 1], 60.0)
        store.acquire("m-1", [2], 60.0)
        store.leave("m-2")
        store.leave("never-was")
        assert [m.member for m in store.members()] == ["m-1"]
        assert [(i.member, i.held) for i in store.leases()[:3]] == [
            (None, False), (None, False), ("m-1", True)]

    # -- arguments ------------------------------------------------------------------------------

    @pytest.mark.parametrize("member", ["", "a b", "x" * 129, "é", None, 7])
    def test_an_invalid_member_id_is_refused(self, store: SagaStore, member: Any) -> None:
        for call in (lambda: store.acquire(member, [0], 1.0),
                     lambda: store.renew(member, [], 1.0),
                     lambda: store.release(member, [0]),
                     lambda: store.heartbeat(member),
                     lambda: store.leave(member),
                     lambda: Fence(member, {0: 1})):
            with pytest.raises(ValueError):
                call()
        assert {i.member for i in store.leases()} == {None} and store.members() == []

    @pytest.mark.parametrize(
        ("ttl", "error"),
        [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
         (float("inf"), ValueError), ("1", TypeError), (True, TypeError), (None, TypeError)],
    )
    def test_an_invalid_ttl_is_refused(self, store: SagaStore, ttl: Any, error: type) -> None:
        with pytest.raises(error):
            store.acquire("m-1", [0], ttl)
        (lease,) = store.acquire("m-1", [0], 60.0)
        with pytest.raises(error):
            store.renew("m-1", [lease], ttl)
        assert store.leases()[0].expires_at == pytest.approx(lease.expires_at, abs=1e-6)

    def test_invalid_partitions_are_refused(self, store: SagaStore) -> None:
        count = store.partitions()
        for partitions, error in (([count], ValueError), ([-1], ValueError), (["0"], TypeError),
                                  ([True], TypeError), (0, TypeError), ([0.0], TypeError)):
            with pytest.raises(error):
                store.acquire("m-1", partitions, 60.0)
            with pytest.raises(error):
                store.release("m-1", partitions)
        assert store.acquire("m-1", [], 60.0) == []
        store.release("m-1", [])
        assert {i.member for i in store.leases()} == {None}
        with pytest.raises(ValueError):  # a fence naming a partition the store has not
            store.create(new_saga("s"), fence=Fence("m-1", {count: 1}))
        with pytest.raises(TypeError):
            store.create(new_saga("s"), fence={"m-1": {0: 1}})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.renew("m-1", [(0, 1)], 60.0)  # type: ignore[list-item]
        assert store.list() == []

    def test_a_fence_is_checked_when_made(self) -> None:
        for epochs, error in (({0: 0}, ValueError), ({-1: 1}, ValueError), ({"0": 1}, TypeError),
                              ({0: True}, TypeError), ([(0, 1)], TypeError)):
            with pytest.raises(error):
                Fence("m-1", epochs)  # type: ignore[arg-type]
        fence = Fence("m-1", {0: 1})
        with pytest.raises(TypeError):
            fence.epochs[1] = 2  # type: ignore[index]
        lease = Lease(0, "m-2", 1, 0.0, 0.0)
        with pytest.raises(ValueError):
            Fence.of("m-1", [lease])
        assert Fence.of("m-2", [lease]) == Fence("m-2", {0: 1})

    def test_a_members_info_must_be_a_json_object(self, store: SagaStore) -> None:
        for info, error in (([1], TypeError), ({"x": float("nan")}, ValueError),
                            ({"x": object()}, TypeError)):
            with pytest.raises(error):
                store.heartbeat("m-1", info)  # type: ignore[arg-type]
        assert store.members() == []

    # -- concurrency ----------------------------------------------------------------------------

    def test_concurrent_acquirers_exactly_one_wins_each_partition(self, store: SagaStore) -> None:
        race_acquires(store, store, rounds=10)

    def test_two_store_objects_acquiring_at_once_exactly_one_wins_each_partition(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_acquires(store, again)

    def test_no_fenced_write_lands_after_a_takeover(self, store: SagaStore) -> None:
        race_fenced_writes_and_a_takeover(store, store)

    def test_no_fenced_write_of_another_store_object_lands_after_a_takeover(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_fenced_writes_and_a_takeover(store, again)

    def test_no_claim_lands_after_a_takeover(self, store: SagaStore) -> None:
        race_lease_claims_and_a_takeover(store, store)

    def test_no_claim_of_another_store_object_lands_after_a_takeover(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_lease_claims_and_a_takeover(store, again)

    def test_a_claim_on_another_store_object_takes_its_sagas(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        saga_id = saga_in_partition(0, store.partitions())
        store.create(new_saga(saga_id, owner="rt-1"))
        taken = again.acquire("m-1", [0], 60.0)
        assert again.claim(Fence.of("m-1", taken), [0]) == [saga_id]
        assert store.header(saga_id).owner == "m-1"
        store.acquire("m-2", [0], 60.0)  # m-1 holds it: nothing taken
        with pytest.raises(LeaseLost):
            store.claim(Fence("m-2", {0: 1}), [0])


class OwnershipContract(_Hooks):
    """The contract of :class:`~sagas.stores.Ownership`: registered owners, and adopting the
    sagas of dead ones."""

    def test_create_keeps_the_owner(self, store: SagaStore) -> None:
        _, header = store.create(new_saga("mine", started_at=2.0, owner="runtime-1"))
        assert header.owner == "runtime-1"
        store.create(new_saga("unowned", started_at=1.0))
        assert store.header("mine").owner == store.load("mine").header.owner == "runtime-1"
        assert store.header("unowned").owner is None
        assert [(h.saga_id, h.owner) for h in store.list()] == [
            ("mine", "runtime-1"),
            ("unowned", None),
        ]
        store.append([append("mine", 2, status="completed")])
        assert store.header("mine").owner == "runtime-1"

    @pytest.mark.parametrize("owner", ["", "a/b", "../up", "x" * 129, "with space", "é", "a\n"])
    def test_an_invalid_owner_id_is_refused(self, store: SagaStore, owner: str) -> None:
        with pytest.raises(ValueError, match="owner id"):
            store.register_owner(owner)
        with pytest.raises(ValueError, match="owner id"):
            store.owner_alive(owner)
        with pytest.raises(ValueError, match="owner id"):
            store.adopt(owner)
        with pytest.raises(ValueError, match="owner id"):
            store.create(new_saga("s", owner=owner))
        assert snapshot(store) == ([], [])

    def test_a_registered_owner_is_alive_and_others_are_not(self, store: SagaStore) -> None:
        assert store.owner_alive("rt-1") is False
        for owner in ("rt-1", "x" * 128, "A.z_0-9", "."):
            store.register_owner(owner)
            assert store.owner_alive(owner) is True
        store.register_owner("rt-1")  # twice is fine
        assert store.owner_alive("rt-1") is True
        assert store.owner_alive("rt-2") is False

    def test_adopt_takes_unowned_sagas_and_those_of_dead_owners(self, store: SagaStore) -> None:
        store.register_owner("live")
        store.register_owner("me")
        store.create(new_saga("unowned", started_at=1.0))
        store.create(new_saga("orphan", started_at=2.0, owner="dead"))
        store.create(new_saga("busy", started_at=3.0, owner="live"))
        store.create(new_saga("mine", started_at=4.0, owner="me"))
        store.create(new_saga("undoing", started_at=0.5, owner="dead", status="compensating"))
        assert store.adopt("me") == ["undoing", "unowned", "orphan"]  # oldest first
        owners = {h.saga_id: h.owner for h in store.list()}
        assert owners == {
            "unowned": "me",
            "orphan": "me",
            "busy": "live",
            "mine": "me",
            "undoing": "me",
        }
        assert store.adopt("me") == []
        assert store.adopt("live") == []  # "me" is alive

    def test_adopt_never_takes_a_terminal_saga(self, store: SagaStore) -> None:
        store.register_owner("me")
        for n, status in enumerate(sorted(TERMINAL)):
            store.create(new_saga(f"dead-{n}", owner="dead", status=status))
            store.create(new_saga(f"none-{n}", status=status))
        store.create(new_saga("ends", owner="dead"))
        store.append([append("ends", 2, status="compensated")])
        assert store.adopt("me") == []
        assert store.adopt("me", [h.saga_id for h in store.list()]) == []
        assert {h.owner for h in store.list()} == {"dead", None}

    def test_adopt_takes_failed_sagas_only_when_asked(self, store: SagaStore) -> None:
        store.register_owner("me")
        store.register_owner("live")
        store.create(new_saga("parked", owner="dead", status="failed"))
        store.create(new_saga("busy", owner="live", status="failed"))
        store.create(new_saga("done", owner="dead", status="completed"))
        assert store.adopt("me") == []
        assert store.adopt("me", ["parked", "busy", "done"], include_failed=True) == ["parked"]
        assert store.header("parked").owner == "me"
        assert store.header("busy").owner == "live"

    def test_adopt_only_the_sagas_named(self, store: SagaStore) -> None:
        store.register_owner("me")
        store.register_owner("live")
        for saga_id in ("a", "b", "c"):
            store.create(new_saga(saga_id, owner="dead"))
        store.create(new_saga("busy", owner="live"))
        store.create(new_saga("done", status="completed"))
        assert store.adopt("me", ["c", "busy", "done", "ghost", "a", "a"]) == ["a", "c"]
        assert store.header("b").owner == "dead"
        assert store.header("busy").owner == "live"
        assert store.adopt("me", []) == []
        assert store.adopt("me", ("b",)) == ["b"]
        with pytest.raises(TypeError):
            store.adopt("me", "b")  # one id is not a list of ids

    @pytest.mark.parametrize("lost", ["every owner's files", "the owner's files"])
    def test_a_live_owner_keeps_its_sagas_when_its_files_are_deleted(
        self, store: SagaStore, lost: str
    ) -> None:
        store.register_owner("live")
        store.register_owner("other")
        store.create(new_saga("busy", started_at=1.0, owner="live"))
        store.create(new_saga("orphan", started_at=2.0, owner="dead"))
        store.create(new_saga("theirs", started_at=3.0, owner="other"))
        self.lose_owner_files(store, None if lost == "every owner's files" else "live")
        assert store.owner_alive("live") is True
        assert store.owner_alive("other") is True
        assert store.adopt("me") == ["orphan"]
        assert store.adopt("me", ["busy", "theirs"], include_failed=True) == []
        assert {h.saga_id: h.owner for h in store.list()} == {
            "busy": "live",
            "orphan": "me",
            "theirs": "other",
        }
        store.register_owner("live")  # still registered here: twice is fine
        assert store.owner_alive("live") is True

    def test_an_owner_may_adopt_without_registering(self, store: SagaStore) -> None:
        store.create(new_saga("orphan", owner="gone"))
        assert store.adopt("cli-1") == ["orphan"]
        assert store.adopt("cli-2") == ["orphan"]  # cli-1 never registered: it is not alive

    def test_concurrent_adopters_never_share_a_saga(self, store: SagaStore) -> None:
        race_adopts(store, store)

    # -- two store objects on one store (as two processes have) ---------------------------------

    def test_two_store_objects_adopting_at_once_never_share_a_saga(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_adopts(store, again)


class RequestsContract(_Hooks):
    """The contract of :class:`~sagas.stores.Requests`: commands for a saga from other
    processes."""

    def test_requests_are_pending_until_completed(self, store: SagaStore) -> None:
        store.create(new_saga("a", owner="me"))
        store.create(new_saga("b", owner="other"))
        store.create(new_saga("c"))
        before = time.time()
        r1 = store.request("a", "cancel")
        r2 = store.request("b", "retry", {"why": ["x", 1]})
        r3 = store.request("a", "retry", {"n": 1})
        after = time.time()
        assert isinstance(r1, int) and r1 < r2 < r3
        mine = store.requests("me")
        assert all(isinstance(r, Request) for r in mine)
        assert [(r.request_id, r.saga_id, r.kind, r.data) for r in mine] == [
            (r1, "a", "cancel", {}),
            (r3, "a", "retry", {"n": 1}),
        ]
        assert all(before <= r.created_at <= after for r in mine)
        assert store.requests("me", after=r1) == mine[1:]
        assert store.requests("me", after=r3) == []
        assert [(r.request_id, r.data) for r in store.requests("other")] == [
            (r2, {"why": ["x", 1]})
        ]
        assert store.requests("nobody") == []
        assert store.requests_for("a") == mine
        assert store.requests_for("c") == store.requests_for("ghost") == []

        store.complete_request(r1)
        store.complete_request(r1)  # twice is fine
        store.complete_request(r3 + 1000)  # so is an unknown id
        assert store.requests("me") == store.requests_for("a") == mine[1:]
        store.complete_request(r2)
        store.complete_request(r3)
        assert store.requests("me") == store.requests("other") == []
        assert store.request("a", "cancel") > r3  # ids are never reused

    def test_requests_follow_the_sagas_owner(self, store: SagaStore) -> None:
        store.create(new_saga("s", owner="gone"))
        request_id = store.request("s", "cancel")
        assert [r.request_id for r in store.requests("gone")] == [request_id]
        assert store.requests("me") == []
        store.register_owner("me")
        assert store.adopt("me") == ["s"]
        assert [r.request_id for r in store.requests("me")] == [request_id]
        assert store.requests("gone") == []

    def test_a_request_for_an_unknown_saga_is_refused(self, store: SagaStore) -> None:
        store.create(new_saga("s", owner="me"))
        with pytest.raises(UnknownSaga) as caught:
            store.request("ghost", "cancel")
        assert caught.value.saga_id == "ghost"
        assert store.requests("me") == store.requests_for("ghost") == []

    def test_a_request_needs_a_kind_and_a_json_object(self, store: SagaStore) -> None:
        store.create(new_saga("s", owner="me"))
        with pytest.raises(ValueError):
            store.request("s", "")
        with pytest.raises(TypeError):
            store.request("s", "retry", ["not", "an", "object"])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.request("s", "retry", {"when": object()})
        assert store.requests("me") == []

    def test_request_data_is_a_snapshot(self, store: SagaStore) -> None:
        store.create(new_saga("s", owner="me"))
        data: dict[str, Any] = {"items": [1]}
        store.request("s", "retry", data)
        data["items"].append(2)
        (request,) = store.requests("me")
        assert request.data == {"items": [1]}
        request.data["items"].append(3)
        assert store.requests("me")[0].data == {"items": [1]}


class ServiceInboxContract(_Hooks):
    """The contract of :class:`~sagas.stores.ServiceInbox`: the store's
    :class:`actors.InboxStore`."""

    def test_the_inbox_is_an_inbox_store(self, store: SagaStore) -> None:
        assert isinstance(store.inbox, InboxStore)
        assert store.inbox is store.inbox

    def test_the_inbox_keeps_definitive_replies(self, store: SagaStore) -> None:
        inbox = store.inbox
        assert inbox.get("s:reserve") is None
        done = StoredReply("succeeded", {"id": "r-1", "items": [1, {"a": None}], "é": 1.5}, None)
        inbox.put("s:reserve", done)
        assert inbox.get("s:reserve") == done
        refused = StoredReply("rejected", None, "insufficient stock")
        inbox.put("s:pay", refused)
        assert inbox.get("s:pay") == refused
        assert inbox.get("S:RESERVE") is None and inbox.get("s:reserve:compensation") is None
        inbox.put("s:reserve", StoredReply("succeeded", {"id": "r-2"}, None))
        assert inbox.get("s:reserve") == StoredReply("succeeded", {"id": "r-2"}, None)

    def test_the_inbox_keeps_tombstones_apart_from_replies(self, store: SagaStore) -> None:
        inbox = store.inbox
        assert inbox.is_tombstoned("s:reserve") is False
        inbox.tombstone("s:reserve")
        inbox.tombstone("s:reserve")  # twice is fine
        assert inbox.is_tombstoned("s:reserve") is True
        assert inbox.is_tombstoned("s:pay") is False
        assert inbox.get("s:reserve") is None
        inbox.put("s:pay", StoredReply("succeeded", {}, None))
        assert inbox.is_tombstoned("s:pay") is False

    def test_the_inbox_takes_frozen_output(self, store: SagaStore) -> None:
        output = {"id": "r-1", "lines": [{"sku": "w", "qty": 2}]}
        store.inbox.put("k", StoredReply("succeeded", freeze(output), None))
        stored = store.inbox.get("k")
        assert stored is not None and stored.outcome == "succeeded"
        assert thaw(stored.output) == output

    def test_the_inbox_refuses_what_is_not_a_stored_reply(self, store: SagaStore) -> None:
        with pytest.raises(TypeError):
            store.inbox.put("k", {"outcome": "succeeded"})  # type: ignore[arg-type]
        assert store.inbox.get("k") is None

    def test_the_inbox_writes_many_at_once(self, store: SagaStore) -> None:
        inbox = store.inbox
        inbox.put("k0", StoredReply("succeeded", {"old": True}, None))
        done = StoredReply("succeeded", freeze({"id": "r-1", "lines": [{"qty": 2}]}), None)
        inbox.write_many(
            [
                ("k0", StoredReply("rejected", None, "no")),
                ("k1", done),
                ("k2", StoredReply("succeeded", {"first": 1}, None)),
                ("k2", StoredReply("succeeded", {"second": 2}, None)),  # the later one wins
            ],
            ["t1", "t2", "t1"],
        )
        assert inbox.get("k0") == StoredReply("rejected", None, "no")
        stored = inbox.get("k1")
        assert stored is not None and thaw(stored.output) == {"id": "r-1", "lines": [{"qty": 2}]}
        assert inbox.get("k2") == StoredReply("succeeded", {"second": 2}, None)
        assert inbox.is_tombstoned("t1") and inbox.is_tombstoned("t2")
        assert not inbox.is_tombstoned("k1") and inbox.get("t1") is None
        inbox.write_many([], ["t3"])
        inbox.write_many([("k3", StoredReply("succeeded", {}, None))], ())
        inbox.write_many([], [])
        assert inbox.is_tombstoned("t3") and inbox.get("k3") == StoredReply("succeeded", {}, None)

    def test_the_inbox_writes_none_of_a_refused_batch(self, store: SagaStore) -> None:
        inbox = store.inbox
        good = ("k1", StoredReply("succeeded", {}, None))
        for replies, tombstones in [
            ([good, ("k2", {"outcome": "succeeded"})], ["t1"]),
            ([good], "t1"),  # one key is not a list of keys
            ({"k1": good[1]}, ["t1"]),  # nor is a dict a list of pairs
        ]:
            with pytest.raises(TypeError):
                inbox.write_many(replies, tombstones)  # type: ignore[arg-type]
        assert inbox.get("k1") is None and inbox.get("k2") is None
        assert not inbox.is_tombstoned("t1") and not inbox.is_tombstoned("t")


class ExternalEventsContract(_Hooks):
    """The contract of :class:`~sagas.stores.ExternalEvents`: events sent from outside, and
    claimed by one saga each."""

    def test_last_event_position_is_where_a_poller_starts(self, store: SagaStore) -> None:
        assert store.last_event_position() == 0
        sent = [store.send_event("Shipped", f"o-{n}", sent_at=1.0)[0] for n in range(3)]
        store.send_event("Shipped", "o-0", event_id=sent[0].event_id, sent_at=2.0)  # ignored
        assert store.last_event_position() == sent[-1].position
        assert store.events_after(store.last_event_position()) == []

    def test_sent_events_are_read_in_order_of_arrival(self, store: SagaStore) -> None:
        assert store.events_after() == []
        before = time.time()
        first, new = store.send_event("PaymentConfirmed", "o-1", {"amount": 12.5}, sent_at=before)
        assert new is True and isinstance(first, ExternalEvent)
        assert (first.position, first.type, first.key, first.data, first.sent_at) == (
            1, "PaymentConfirmed", "o-1", {"amount": 12.5}, before,
        )  # fmt: skip
        assert (first.consumed_by, first.consumed_at) == (None, None)
        second, _ = store.send_event("Shipped", "o-2", event_id="ship-o-2", sent_at=5)
        third, _ = store.send_event("PaymentConfirmed", "o-1", {"n": [1, None]}, sent_at=6.0)
        assert second.event_id == "ship-o-2" and second.data == {} and second.sent_at == 5.0
        assert first.position < second.position < third.position
        assert store.events_after() == [first, second, third]
        assert store.events_after(first.position) == [second, third]
        assert store.events_after(0, limit=2) == [first, second]
        assert store.events_after(second.position, limit=1) == [third]
        assert store.events_after(third.position) == []
        assert store.events_after(-5) == [first, second, third]
        assert store.events_after(0, limit=0) == []
        with pytest.raises(ValueError):
            store.events_after(0, limit=-1)

    def test_a_duplicate_id_is_ignored(self, store: SagaStore) -> None:
        sent, new = store.send_event("Paid", "o-1", {"a": 1}, event_id="pay-1", sent_at=1.0)
        assert new is True
        for type_, key, data, at in [
            ("Paid", "o-1", {"a": 1}, 1.0),
            ("Refunded", "o-9", {"b": 2}, 9.0),
            ("Paid", "o-1", None, 2.0),
        ]:
            assert store.send_event(type_, key, data, event_id="pay-1", sent_at=at) == (
                sent, False,
            )  # fmt: skip
        assert store.events_after() == [sent]
        taken = store.claim_event("Paid", "o-1", "s1", at=3.0)
        assert taken is not None
        assert store.send_event("Paid", "o-1", event_id="pay-1", sent_at=4.0) == (taken, False)
        assert store.events_after() == [taken]
        other, new = store.send_event("Paid", "o-1", event_id="PAY-1", sent_at=5.0)
        assert new is True and other.position > sent.position  # ids are case-sensitive

    def test_generated_ids_are_unique_uuid4_hex(self, store: SagaStore) -> None:
        sent = [store.send_event("Tick", "k", sent_at=float(n))[0] for n in range(50)]
        ids = [e.event_id for e in sent]
        assert len(set(ids)) == 50
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
        assert [e.event_id for e in store.events_after()] == ids

    def test_event_data_is_private(self, store: SagaStore) -> None:
        data: dict[str, Any] = {"items": [1], "nested": {"a": 1}}
        sent, _ = store.send_event("Paid", "o-1", data, sent_at=1.0)
        data["items"].append(2)
        data["nested"]["b"] = 2
        sent.data["items"].append(3)
        (read,) = store.events_after()
        assert read.data == {"items": [1], "nested": {"a": 1}}
        read.data["items"].append(4)
        taken = store.claim_event("Paid", "o-1", "s1", at=2.0)
        assert taken is not None and taken.data == {"items": [1], "nested": {"a": 1}}
        taken.data.clear()
        again = store.claim_event("Paid", "o-1", "s1", at=3.0)
        assert again is not None and again.data == {"items": [1], "nested": {"a": 1}}
        duplicate, _ = store.send_event("Paid", "o-1", event_id=sent.event_id, sent_at=4.0)
        assert duplicate.data == {"items": [1], "nested": {"a": 1}}
        assert duplicate.data is not again.data

    def test_claim_takes_the_oldest_unclaimed_matching_event(self, store: SagaStore) -> None:
        a1, _ = store.send_event("Paid", "o-1", {"n": 1}, sent_at=1.0)
        b, _ = store.send_event("Paid", "o-2", sent_at=2.0)
        c, _ = store.send_event("Shipped", "o-1", sent_at=3.0)
        a2, _ = store.send_event("Paid", "o-1", {"n": 2}, sent_at=4.0)
        a3, _ = store.send_event("Paid", "o-1", {"n": 3}, sent_at=5.0)
        taken = store.claim_event("Paid", "o-1", "s1", at=10.0)
        assert taken is not None
        assert (taken.position, taken.event_id, taken.data) == (a1.position, a1.event_id, {"n": 1})
        assert (taken.consumed_by, taken.consumed_at) == ("s1", 10.0)
        assert store.events_after() == [taken, b, c, a2, a3]  # the others untouched
        second = store.claim_event("Paid", "o-1", "s2", at=11.0)
        assert second is not None and second.position == a2.position
        assert (second.consumed_by, second.consumed_at) == ("s2", 11.0)
        third = store.claim_event("Paid", "o-1", "s3", at=12.0)
        assert third is not None and third.position == a3.position
        assert store.claim_event("Paid", "o-1", "s4", at=13.0) is None
        a4, _ = store.send_event("Paid", "o-1", sent_at=14.0)  # the queue starts again
        fourth = store.claim_event("Paid", "o-1", "s4", at=15.0)
        assert fourth is not None and fourth.position == a4.position
        assert [e.consumed_by for e in store.events_after()] == [
            "s1", None, None, "s2", "s3", "s4",
        ]  # fmt: skip

    def test_a_second_claim_by_one_saga_returns_the_same_event(self, store: SagaStore) -> None:
        first, _ = store.send_event("Paid", "o-1", {"n": 1}, sent_at=1.0)
        taken = store.claim_event("Paid", "o-1", "s1", at=10.0)
        store.send_event("Paid", "o-1", {"n": 2}, sent_at=2.0)  # newer ones exist
        store.send_event("Paid", "o-1", {"n": 3}, sent_at=3.0)
        again = store.claim_event("Paid", "o-1", "s1", at=20.0)
        assert taken is not None and again == taken
        assert (again.position, again.consumed_by, again.consumed_at) == (
            first.position, "s1", 10.0,
        )  # fmt: skip
        assert [e.consumed_by for e in store.events_after()] == ["s1", None, None]
        other = store.claim_event("Paid", "o-1", "s2", at=30.0)
        assert other is not None and other.data == {"n": 2}

    def test_another_saga_cannot_take_a_claimed_event(self, store: SagaStore) -> None:
        store.send_event("Paid", "o-1", sent_at=1.0)
        taken = store.claim_event("Paid", "o-1", "s1", at=2.0)
        assert taken is not None
        assert store.claim_event("Paid", "o-1", "s2", at=3.0) is None
        (read,) = store.events_after()
        assert read == taken and read.consumed_by == "s1" and read.consumed_at == 2.0

    def test_a_claim_with_nothing_to_take_is_none(self, store: SagaStore) -> None:
        assert store.claim_event("Paid", "o-1", "s1", at=1.0) is None
        assert store.events_after() == []
        store.send_event("Paid", "o-1", sent_at=2.0)
        assert store.claim_event("Paid", "o-1", "s1", at=3.0) is not None
        assert store.claim_event("Paid", "o-1", "s1", at=4.0) is not None  # its own, again

    def test_events_of_another_type_or_key_never_match(self, store: SagaStore) -> None:
        for type_, key in [
            ("Paid", "o-10"),
            ("Paid", "O-1"),
            ("Paid", "o-1 "),
            ("paid", "o-1"),
            ("PaidX", "o-1"),
            ("Pai", "do-1"),
        ]:
            store.send_event(type_, key, sent_at=1.0)
        assert store.claim_event("Paid", "o-1", "s1", at=2.0) is None
        assert store.claim_event("Paid", "o-", "s1", at=2.0) is None
        # a saga's claim is its own for that type and key: "1s" took (Paid, "k"), "s" wants
        # (Paid, "k1"), whose names run together the same way
        store.send_event("Paid", "k", sent_at=3.0)
        assert store.claim_event("Paid", "k", "1s", at=4.0) is not None
        assert store.claim_event("Paid", "k1", "s", at=5.0) is None
        assert store.claim_event("Pai", "dk", "1s", at=5.0) is None
        assert [e.consumed_by for e in store.events_after()] == [None] * 6 + ["1s"]

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("", "o-1"), ValueError),
            (("1Paid", "o-1"), ValueError),
            (("_Paid", "o-1"), ValueError),
            (("Payment Confirmed", "o-1"), ValueError),
            (("Paid\n", "o-1"), ValueError),
            (("P" * 129, "o-1"), ValueError),
            ((None, "o-1"), TypeError),
            ((5, "o-1"), TypeError),
            (("Paid", ""), ValueError),
            (("Paid", "k" * 513), ValueError),
            (("Paid", "o-\udcff"), ValueError),
            (("Paid", None), TypeError),
            (("Paid", 1), TypeError),
        ],
    )
    def test_an_invalid_type_or_key_is_refused(
        self, store: SagaStore, args: tuple[Any, Any], error: type[Exception]
    ) -> None:
        with pytest.raises(error) as caught:
            store.send_event(*args, sent_at=1.0)
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
        with pytest.raises(error):
            store.claim_event(*args, "s1", at=1.0)
        assert store.events_after() == []

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"event_id": ""}, ValueError),
            ({"event_id": "pay 1"}, ValueError),
            ({"event_id": "pay/1"}, ValueError),
            ({"event_id": "é"}, ValueError),
            ({"event_id": "x" * 129}, ValueError),
            ({"event_id": 7}, TypeError),
            ({"data": ["not", "an", "object"]}, TypeError),
            ({"data": "{}"}, TypeError),
            ({"data": {"x": float("nan")}}, ValueError),
            ({"data": {"x": float("inf")}}, ValueError),
            ({"data": {"x": object()}}, TypeError),
            ({"data": {"x": "\ud800"}}, ValueError),
            ({"data": {"\udcff": 1}}, ValueError),
            ({"sent_at": "now"}, TypeError),
            ({"sent_at": None}, TypeError),
            ({"sent_at": True}, TypeError),
            ({"sent_at": float("nan")}, ValueError),
        ],
    )
    def test_an_invalid_id_data_or_time_is_refused_and_writes_nothing(
        self, store: SagaStore, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        arguments: dict[str, Any] = {"sent_at": 1.0, **kwargs}
        with pytest.raises(error) as caught:
            store.send_event("Paid", "o-1", **arguments)
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
        assert store.events_after() == []

    def test_the_longest_valid_type_key_and_id_are_taken(self, store: SagaStore) -> None:
        type_, key, event_id = "P" + "a_.-9" * 25 + "xx", "é" * 512, "a:b.c_d-E" * 14 + "12"
        assert (len(type_), len(key), len(event_id)) == (128, 512, 128)
        sent, _ = store.send_event(type_, key, {"k": key}, event_id=event_id, sent_at=1)
        assert (sent.type, sent.key, sent.event_id, sent.data) == (
            type_, key, event_id, {"k": key},
        )  # fmt: skip
        assert store.claim_event(type_, key, "s", at=2.0) == store.events_after()[0]

    @pytest.mark.parametrize(("saga_id", "error"), [("", ValueError), (None, TypeError),
                                                    (3, TypeError)])
    def test_a_claim_needs_a_saga_id_and_a_time(
        self, store: SagaStore, saga_id: Any, error: type[Exception]
    ) -> None:
        store.send_event("Paid", "o-1", sent_at=1.0)
        with pytest.raises(error):
            store.claim_event("Paid", "o-1", saga_id, at=1.0)
        with pytest.raises(TypeError):
            store.claim_event("Paid", "o-1", "s1", at="later")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.claim_event("Paid", "o-1", "s1", at=float("inf"))
        assert [e.consumed_by for e in store.events_after()] == [None]

    def test_concurrent_claimers_never_share_an_event(self, store: SagaStore) -> None:
        race_claims([store])

    # -- two store objects on one store (as two processes have) ---------------------------------

    def test_two_store_objects_claiming_at_once_never_share_an_event(
        self, store: SagaStore, again: SagaStore
    ) -> None:
        race_claims([store, again], threads=8, events=60)


class StoreContract(
    EventLogContract,
    LogReaderContract,
    OwnershipContract,
    LeasesContract,
    RequestsContract,
    ExternalEventsContract,
    ServiceInboxContract,
):
    """The behaviour every :class:`~sagas.stores.SagaStore` must have: every facet's, and the
    store's own (its shape, closing)."""

    # -- shape ----------------------------------------------------------------------------------

    def test_implements_the_port(self, store: SagaStore) -> None:
        assert isinstance(store, SagaStore)
        for facet in (EventLog, Cursors, LogReader, Ownership, Leases, Requests, ExternalEvents,
                      ServiceInbox):
            assert isinstance(store, facet), facet.__name__
        assert isinstance(store.url, str) and "://" in store.url

    # -- closing --------------------------------------------------------------------------------

    def test_a_closed_store_is_unavailable(self, store: SagaStore) -> None:
        store.create(new_saga("s"))
        store.close()
        store.close()  # twice is fine
        with pytest.raises(StoreUnavailable):
            store.load("s")
        with pytest.raises(StoreUnavailable):
            store.append([append("s", 2)])
        with pytest.raises(StoreUnavailable):
            store.list()
        with pytest.raises(StoreUnavailable):
            store.register_owner("rt-1")
        with pytest.raises(StoreUnavailable):
            store.owner_alive("rt-1")
        with pytest.raises(StoreUnavailable):
            store.adopt("rt-1")
        with pytest.raises(StoreUnavailable):
            store.request("s", "cancel")
        with pytest.raises(StoreUnavailable):
            store.requests("rt-1")
        with pytest.raises(StoreUnavailable):
            store.requests_for("s")
        with pytest.raises(StoreUnavailable):
            store.complete_request(1)
        with pytest.raises(StoreUnavailable):
            store.write([new_saga("t")], [])
        with pytest.raises(StoreUnavailable):
            store.write([], [])
        with pytest.raises(StoreUnavailable):
            store.create(new_saga("t"))
        with pytest.raises(StoreUnavailable):
            store.load_many(["s"])
        with pytest.raises(StoreUnavailable):
            store.send_event("Paid", "o-1", sent_at=1.0)
        with pytest.raises(StoreUnavailable):
            store.events_after()
        with pytest.raises(StoreUnavailable):
            store.claim_event("Paid", "o-1", "s", at=1.0)
        with pytest.raises(StoreUnavailable):
            store.read_log()
        with pytest.raises(StoreUnavailable):
            store.last_position()
        with pytest.raises(StoreUnavailable):
            store.cursor("mailer")
        with pytest.raises(StoreUnavailable):
            store.save_cursor("mailer", 1)
        with pytest.raises(StoreUnavailable):
            store.cursors()
        for call in (store.partitions, store.leases, store.members,
                     lambda: store.acquire("m-1", [0], 1.0), lambda: store.acquire("m-1", [], 1.0),
                     lambda: store.renew("m-1", [], 1.0), lambda: store.release("m-1", [0]),
                     lambda: store.heartbeat("m-1"), lambda: store.leave("m-1"),
                     lambda: store.writers("s"),
                     lambda: store.append([append("s", 2)], fence=Fence("m-1", {})),
                     lambda: store.claim(Fence("m-1", {0: 1}), [0]),
                     lambda: store.claim(Fence("m-1", {}), [])):
            with pytest.raises((StoreUnavailable, LeaseLost)):
                call()


def _fields(saga: NewSaga) -> dict[str, Any]:
    return {name: getattr(saga, name) for name in NewSaga.__dataclass_fields__}
