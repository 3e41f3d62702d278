"""Members sharing one store: fair shares of the partitions, takeover of a member that stops
renewing (its sagas finished without ``saga resume``), fencing of a member that lost its lease,
clients that start and cancel through the store, and sagas left to a member that can run them.

Several runtimes share one memory store object here (the same code paths as processes sharing
PostgreSQL, whose real-process soak is in ``test_members_soak``); leases are short (0.4 s) so
takeovers happen within a second.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sagas import Runtime
from sagas.audit import audit_store
from sagas.stores import MemoryStore, SagaStore, open_store, partition_of
from tests.postgres_server import postgres_server, postgres_store_url  # noqa: F401 (fixtures)
from tests.support import Scripted, StepSpec, eventually, make_flow

TTL = 0.4
FLOW = make_flow(StepSpec("a"), StepSpec("b"), attempts=3, backoff="10ms", timeout="2s")
STUCK = make_flow(StepSpec("a"), StepSpec("b"), name="stuck_flow", timeout="30s")
INPUT: dict = {}


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest) -> Iterator[SagaStore]:
    """The store the members share: one memory store object, or a PostgreSQL database that
    each runtime opens for itself, as processes do (this object is the test's own view)."""
    if request.param == "memory":
        shared = MemoryStore()
        yield shared
        shared.close()
        return
    url = request.getfixturevalue("postgres_store_url")
    view = open_store(url)
    _TARGETS[id(view)] = url
    yield view
    _TARGETS.pop(id(view), None)
    view.close()


_TARGETS: dict[int, str] = {}


def _target(store: SagaStore) -> SagaStore | str:
    """What a runtime is given: the shared object, or the URL (a store of its own)."""
    return _TARGETS.get(id(store), store)


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in reversed(started):
        runtime.close(timeout=2)


def _member(store: MemoryStore, runtimes: list[Runtime], service: Scripted | None = None,
            **kwargs) -> Runtime:
    services = {"tests.support:Scripted": service or Scripted()}
    runtime = Runtime(_target(store), member=True, lease_ttl=TTL, services=services, **kwargs)
    runtimes.append(runtime)
    return runtime


def _held(store: MemoryStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in store.leases():
        if info.held:
            counts[info.member] = counts.get(info.member, 0) + 1
    return counts


def test_members_share_the_partitions_and_a_new_member_gets_its_share(store, runtimes):
    a = _member(store, runtimes)
    assert len(a.membership.held()) == 64  # alone: every partition, before the runtime returns
    b = _member(store, runtimes)
    eventually(lambda: _held(store) == {a.owner: 32, b.owner: 32}, 10,
               what=lambda: f"an even split, got {_held(store)}")
    c = _member(store, runtimes)
    eventually(lambda: sum(_held(store).values()) == 64 and
               sorted(_held(store).values()) in ([21, 21, 22], [20, 22, 22]), 10,
               what=lambda: f"three shares, got {_held(store)}")
    c.close()  # a clean stop gives its leases back: the others take them
    eventually(lambda: _held(store) == {a.owner: 32, b.owner: 32}, 10,
               what=lambda: f"two shares again, got {_held(store)}")
    assert [m.member for m in store.members()] == sorted([a.owner, b.owner])


def test_a_member_that_stops_renewing_is_taken_over_and_its_sagas_finish(store, runtimes):
    stalled = Scripted({("a", "action"): ["block"] * 10})
    a = _member(store, runtimes, stalled)
    ids = [a.start(FLOW, INPUT, f"saga-{i}") for i in range(8)]
    assert stalled.blocked.wait(5)
    a.membership.stop()  # paused: no more renewals, its shard and services still run
    b = _member(store, runtimes)
    results = [b.wait(saga_id, timeout=15) for saga_id in ids]
    assert [r.status for r in results] == ["completed"] * 8
    assert all(store.header(s).owner == b.owner for s in ids)
    stalled.release.set()  # the paused member's handlers answer now: its commits are refused
    partitions = {partition_of(s, 64) for s in ids}
    eventually(lambda: not partitions & set(a.membership.held()), 10,
               what="the stale member to drop the partitions of its refused commits")
    assert audit_store(store, include_running=False) == []
    for saga_id in ids:  # nothing written by the stale member after the takeover
        writers = store.writers(saga_id)
        takeover = next(w.seq for w in writers if w.member == b.owner)
        assert {w.member for w in writers if w.seq >= takeover} == {b.owner}


def test_a_client_starts_waits_and_cancels_through_the_members(store, runtimes):
    service = Scripted({("b", "action"): ["ok", "block"]})
    member = _member(store, runtimes, service)
    client = Runtime(_target(store), client=True)
    runtimes.append(client)
    done = client.run(FLOW, INPUT, "by-client", timeout=10)
    assert done.status == "completed"
    assert {w.member for w in store.writers("by-client")} == {None, member.owner}
    ended: list[tuple[str, str]] = []
    client.submit(FLOW, INPUT, "to-cancel", on_end=lambda s, status, _: ended.append((s, status)))
    assert service.blocked.wait(5)
    assert client.cancel("to-cancel", timeout=10).status in ("compensating", "compensated")
    service.release.set()
    assert client.wait("to-cancel", timeout=10).status == "compensated"
    eventually(lambda: ended == [("to-cancel", "compensated")], 5)


def test_a_member_that_cannot_run_a_flow_leaves_its_sagas_to_one_that_can(store, runtimes):
    flow = make_flow(StepSpec("a"), name="elsewhere_flow")
    text = flow.text.replace("tests.support:Scripted", "tests.not_here:Missing")
    from sagas import parse_flow

    elsewhere = parse_flow(text, source="<elsewhere>")
    cannot = Runtime(_target(store), member=True, lease_ttl=TTL)
    runtimes.append(cannot)
    can = Runtime(_target(store), member=True, lease_ttl=TTL,
                  services={"tests.not_here:Missing": Scripted()})
    runtimes.append(can)
    can.compile(elsewhere)  # starts its services: it says it runs the flow
    eventually(lambda: len(_held(store)) == 2 and sum(_held(store).values()) == 64, 10)
    client = Runtime(_target(store), client=True)
    runtimes.append(client)
    theirs = [f"e-{i}" for i in range(40)]
    before = set(cannot.membership.held())
    ids = [client.start(elsewhere, INPUT, saga_id) for saga_id in theirs]
    assert any(partition_of(s, 64) in before for s in ids)  # some start where it cannot run
    results = [client.wait(saga_id, timeout=20) for saga_id in ids]
    assert [r.status for r in results] == ["completed"] * 40
    assert all(store.header(s).owner == can.owner for s in ids)
    assert audit_store(store, include_running=False) == []


@pytest.mark.slow
def test_a_member_goes_on_after_the_server_ends_its_sessions(postgres_server,  # noqa: F811
                                                             postgres_store_url):  # noqa: F811
    """As after a PostgreSQL restart: the member's connections are gone; it connects again,
    keeps (or takes anew) its partitions and drives the sagas started after."""
    from tests.stores.test_postgres import _end_sessions

    service = Scripted()
    member = Runtime(f"{postgres_store_url}?application_name=restarted", member=True,
                     lease_ttl=TTL, services={"tests.support:Scripted": service})
    try:
        assert member.run(FLOW, INPUT, "before", timeout=10).status == "completed"
        _end_sessions(postgres_server, "restarted")
        assert member.run(FLOW, INPUT, "after", timeout=20).status == "completed"
        eventually(lambda: len(member.membership.held()) == 64, 10)
    finally:
        member.close(timeout=2)
