"""The event bus: saga events published from the log to subscribers, through the public
API (``Runtime.subscribe``, ``Runtime(subscribers=...)``, ``@subscribes``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Service, ServiceDefinitionError, handles, subscribes
from sagas import Delivery, Runtime, Subscriber
from sagas.bus import MAX_PAGES, PAGE_SIZE
from sagas.stores import SqliteStore
from tests.bus_support import Notifier, flow, notify_flow
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


class Collector:
    """A handler that keeps what it gets (thread-safe)."""

    def __init__(self, before: Callable[[Delivery], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.got: list[Delivery] = []
        self.before = before

    def __call__(self, delivery: Delivery) -> None:
        if self.before is not None:
            self.before(delivery)
        with self.lock:
            self.got.append(delivery)

    def positions(self) -> list[int]:
        with self.lock:
            return [d.position for d in self.got]


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'bus.db'}"


def run_many(runtime: Runtime, n: int, name: str = "bus_flow", prefix: str = "s") -> list[str]:
    """Start ``n`` sagas of ``flow(name)`` together and wait for all of them."""
    the_flow = flow(name)
    submitted = [runtime.submit(the_flow, {}, f"{prefix}-{name}-{i}") for i in range(n)]
    for s in submitted:
        s.result(WAIT)
    for s in submitted:
        assert runtime.wait(s.saga_id, timeout=WAIT).status == "completed"
    return [s.saga_id for s in submitted]


def log_positions(runtime: Runtime) -> list[int]:
    return [e.position for _, e in runtime.store.read_all(0, 10**9) if e.position is not None]


# -- delivery: every event, in log order, none missing -------------------------------------------


def test_every_event_is_delivered_once_in_log_order(store_url: str) -> None:
    everything = Collector()
    with Runtime(store_url, subscribers=[Subscriber("all", ["*"], everything)]) as runtime:
        run_many(runtime, 300)
        assert runtime.bus.wait_caught_up(WAIT)
        log = runtime.store.read_log(0, 10**9)
        assert everything.positions() == [entry.event.position for entry in log]
        assert len(log) == 300 * 8 > PAGE_SIZE * 4  # many pages, read while the sagas ran
        for delivery, entry in zip(everything.got, log, strict=True):
            event = entry.event
            assert delivery.topic == f"bus_flow.{event.type}"
            assert (delivery.flow, delivery.saga_id, delivery.seq, delivery.type) == (
                "bus_flow", entry.saga_id, event.seq, event.type)
            assert (delivery.step, delivery.attempt, delivery.at, delivery.event_id) == (
                event.step, event.attempt, event.at, event.event_id)
            assert dict(delivery.data).keys() == event.data.keys()


def test_delivery_data_is_read_only() -> None:
    got = Collector()
    with Runtime(subscribers=[Subscriber("one", ["bus_flow.saga.started"], got)]) as runtime:
        run_many(runtime, 1)
        assert runtime.bus.wait_caught_up(WAIT)
    (delivery,) = got.got
    with pytest.raises(TypeError):
        delivery.data["input"] = "changed"  # type: ignore[index]


def test_topics_select_by_flow_and_event_type(store_url: str) -> None:
    exact, by_flow, by_type = Collector(), Collector(), Collector()
    with Runtime(store_url) as runtime:
        runtime.subscribe("exact", ["flow_a.saga.completed"], exact)
        runtime.subscribe("by-flow", ["flow_b.*"], by_flow)
        runtime.subscribe("by-type", ["*.saga.started", "*.step.succeeded"], by_type)
        a_ids = run_many(runtime, 5, "flow_a")
        run_many(runtime, 4, "flow_b")
        assert runtime.bus.wait_caught_up(WAIT)
        log = runtime.store.read_log(0, 10**9)
    assert [(d.topic, d.saga_id) for d in exact.got] == [
        ("flow_a.saga.completed", saga_id) for saga_id in a_ids]
    assert by_flow.positions() == [e.event.position for e in log if e.flow == "flow_b"]
    assert {d.topic for d in by_type.got} == {
        f"{f}.{t}" for f in ("flow_a", "flow_b") for t in ("saga.started", "step.succeeded")}
    assert len(by_type.got) == (5 + 4) * (1 + 3)
    for got in (exact, by_flow, by_type):
        assert got.positions() == sorted(got.positions())


# -- durable cursors -----------------------------------------------------------------------------


def test_a_restarted_subscriber_gets_only_the_events_after_its_cursor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    first = Collector()
    with Runtime(url, subscribers=[Subscriber("mailer", ["*"], first)]) as runtime:
        run_many(runtime, 20, prefix="first")
        assert runtime.bus.wait_caught_up(WAIT)
        before = log_positions(runtime)
    assert first.positions() == before
    with SqliteStore(tmp_path / "bus.db") as store:
        assert store.cursor("mailer") == before[-1]  # saved when the runtime closed

    second = Collector()
    with Runtime(url) as runtime:
        run_many(runtime, 10, prefix="second")  # before subscribing: they wait in the log
        runtime.subscribe("mailer", ["*"], second)
        run_many(runtime, 10, prefix="third")
        assert runtime.bus.wait_caught_up(WAIT)
        after = log_positions(runtime)
    assert second.positions() == [p for p in after if p > before[-1]]
    assert len(second.positions()) == 20 * 8


def test_a_new_subscriber_starts_at_the_beginning_or_at_the_end(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    with Runtime(url) as runtime:
        run_many(runtime, 3, prefix="old")
        old = log_positions(runtime)
        beginning, end = Collector(), Collector()
        runtime.subscribe("beginning", ["*"], beginning)
        runtime.subscribe("end", ["*"], end, start="end")
        run_many(runtime, 2, prefix="new")
        assert runtime.bus.wait_caught_up(WAIT)
        everything = log_positions(runtime)
    assert beginning.positions() == everything
    assert end.positions() == everything[len(old):]


def test_a_subscriber_name_is_subscribed_once_and_checked() -> None:
    with Runtime() as runtime:
        runtime.subscribe("once", ["*"], Collector())
        with pytest.raises(ValueError, match="already subscribed"):
            runtime.subscribe("once", ["*"], Collector())
        with pytest.raises(ValueError, match="subscriber name"):
            runtime.subscribe("has space", ["*"], Collector())
        with pytest.raises(ValueError, match="start"):
            runtime.subscribe("x", ["*"], Collector(), start="middle")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="topic"):
            runtime.subscribe("y", ["bad topic"], Collector())
        with pytest.raises(ValueError, match="topic"):
            runtime.subscribe("z", [], Collector())


def test_a_runtime_refusing_a_subscriber_leaves_no_thread_behind():
    code = textwrap.dedent("""\
        from sagas import Runtime
        from sagas.bus import Subscriber
        try:
            Runtime(subscribers=[Subscriber("bad name", ["*"], print)])
        except ValueError:
            pass
        """)
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=15,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: the refused runtime's threads still run")
    assert done.returncode == 0, done.stderr


# -- a slow subscriber blocks no one -------------------------------------------------------------


def test_a_stuck_subscriber_blocks_neither_the_sagas_nor_other_subscribers() -> None:
    release = threading.Event()
    stuck = Collector(before=lambda _: release.wait(WAIT))
    fast = Collector()
    with Runtime(subscribers=[Subscriber("stuck", ["*"], stuck),
                              Subscriber("fast", ["*"], fast)]) as runtime:
        run_many(runtime, 200)  # every saga completes while "stuck" holds its first event
        total = len(log_positions(runtime))
        assert total > PAGE_SIZE * MAX_PAGES * 2
        eventually(lambda: len(fast.positions()) >= total, WAIT, what="the fast subscriber")
        assert fast.positions() == log_positions(runtime)
        assert stuck.got == []  # still on its first event, far behind
        stuck_sub = runtime.bus.subscriptions()["stuck"]
        assert stuck_sub._in_flight <= MAX_PAGES  # its feed is bounded, not the whole log
        release.set()
        assert runtime.bus.wait_caught_up(WAIT)
        assert stuck.positions() == log_positions(runtime)


# -- a failing handler ---------------------------------------------------------------------------


def test_a_handler_that_fails_a_few_times_is_retried_on_the_same_event() -> None:
    failures = {"left": 2}

    def flaky(delivery: Delivery) -> None:
        if delivery.type == "saga.completed" and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("mail server down")

    got = Collector(before=flaky)
    with Runtime() as runtime:
        sub = runtime.subscribe("flaky", ["*"], got, attempts=3, backoff=0.01)
        run_many(runtime, 3)
        assert runtime.bus.wait_caught_up(WAIT)
        assert got.positions() == log_positions(runtime)  # each once, none skipped
        assert sub.status == "running" and failures["left"] == 0


def test_a_handler_that_keeps_failing_parks_its_subscription_at_that_event(
    tmp_path: Path,
) -> None:
    broken = threading.Event()
    broken.set()

    def fails_on_completed(delivery: Delivery) -> None:
        if delivery.type == "saga.completed" and broken.is_set():
            raise RuntimeError("mail server down")

    got = Collector(before=fails_on_completed)
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    with Runtime(url) as runtime:
        sub = runtime.subscribe("mailer", ["*"], got, attempts=2, backoff=0.01)
        other = Collector()
        runtime.subscribe("other", ["*"], other)
        run_many(runtime, 2)
        eventually(lambda: sub.status == "parked", WAIT)
        assert sub.status == "parked" and isinstance(sub.error, RuntimeError)
        positions = log_positions(runtime)
        first_completed = next(e.position for _, e in runtime.store.read_all(0, 10**9)
                               if e.type == "saga.completed")
        assert got.positions() == [p for p in positions if p < first_completed]
        assert sub.position == first_completed - 1
        assert runtime.store.cursor("mailer") == first_completed - 1  # honest: not past it
        assert not runtime.bus.wait_caught_up(0.2)
        assert runtime.bus.subscriptions()["other"].position == positions[-1]  # not held up
        broken.clear()
        sub.resume()
        assert runtime.bus.wait_caught_up(WAIT)
        assert got.positions() == positions and sub.status == "running"


# -- services subscribe with @subscribes ---------------------------------------------------------


def test_a_services_subscribes_method_is_subscribed_when_the_service_starts() -> None:
    with Runtime() as runtime:
        the_flow = notify_flow()
        ids = [runtime.start(the_flow, {}, f"n-{i}") for i in range(5)]
        for saga_id in ids:
            assert runtime.wait(saga_id, timeout=WAIT).status == "completed"
        (notifier,) = runtime.instances("tests.bus_support:Notifier")
        assert isinstance(notifier, Notifier)
        name = "tests.bus_support:Notifier.on_completed"
        eventually(lambda: name in runtime.bus.subscriptions(), WAIT)
        assert runtime.bus.wait_caught_up(WAIT)
        assert sorted(notifier.completed) == sorted(ids)
        assert runtime.bus.subscriptions()[name].topics == ("bus_notify.saga.completed",)


def test_subscribes_is_checked_when_applied() -> None:
    class Mailer(Service):
        @handles("send")
        def send(self, command: Any) -> dict[str, Any]:
            return {}

        @subscribes("order_inventory.saga.completed", "*.saga.failed")
        def on_end(self, delivery: Delivery) -> None:
            pass

    assert dict(Mailer.subscriptions()) == {
        "on_end": ("order_inventory.saga.completed", "*.saga.failed")}
    assert Mailer.handler_names() == {"send"}
    with pytest.raises(ServiceDefinitionError, match="needs topics"):
        subscribes(lambda self, d: None)  # type: ignore[arg-type]
    with pytest.raises(ServiceDefinitionError, match="at least one"):
        subscribes()
    with pytest.raises(ServiceDefinitionError, match="bad topic"):
        subscribes("order inventory")
    with pytest.raises(ServiceDefinitionError, match=r"\(self, delivery\)"):
        subscribes("*")(lambda self: None)
    with pytest.raises(ServiceDefinitionError, match="synchronous"):

        @subscribes("*")
        async def on_any(self: Any, delivery: Any) -> None:
            pass


def test_a_page_queued_before_a_park_is_dropped_after_the_resume() -> None:
    # the race this guards against: pages sent before a subscription parked can still be in its
    # actor's mailbox when resume() runs; delivering them would put later events before the
    # one it parked on (white-box: such a page is handed to the actor directly)
    from sagas.bus._bus import _delivery
    from sagas.bus._subscriber import Page, Resume

    broken = threading.Event()
    broken.set()

    def fails_on_completed(delivery: Delivery) -> None:
        if delivery.type == "saga.completed" and broken.is_set():
            raise RuntimeError("down")

    got = Collector(before=fails_on_completed)
    with Runtime() as runtime:
        sub = runtime.subscribe("mailer", ["*"], got, attempts=1)
        run_many(runtime, 2)
        eventually(lambda: sub.status == "parked", WAIT)
        assert sub.status == "parked"
        stale_epoch = sub._epoch - 1  # the epoch its pages had before it parked
        entries = runtime.store.read_log(0, 10**6)
        last = _delivery(entries, len(entries) - 1, {})  # a later event than the parked one
        stale = Page(stale_epoch, (last,), last.position)
        broken.clear()
        actor = runtime.bus._feeds["mailer"].actor
        with runtime.bus._wake:  # what resume() does, with the stale page queued before its
            sub._epoch += 1      # Resume message: the order the race produces
            sub._after = sub.position
            sub._in_flight = 0
            sub.error = None
            sub.status = "running"
            actor.tell(stale)
            actor.tell(Resume(sub._epoch))
            runtime.bus._wake.notify_all()
        assert runtime.bus.wait_caught_up(WAIT)
        positions = log_positions(runtime)
        assert got.positions() == positions  # nothing skipped: the stale page moved nothing
