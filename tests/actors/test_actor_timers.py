"""Clocks and schedulers: virtual time fires on advance, real time fires on its own thread."""

from __future__ import annotations

import threading
import time

import pykka
import pytest
from actor_doubles import WAIT, Replies

from actors import (
    Activity,
    DeadLetters,
    Scheduler,
    SchedulerStopped,
    SettleTimeout,
    SystemClock,
    ThreadScheduler,
    VirtualClock,
    VirtualScheduler,
    make_scheduler,
)

T0 = 1_700_000_000.0


class Stamped:
    """A target that records each message with the clock's time when it arrived."""

    def __init__(self, clock):
        self.clock = clock
        self.got: list[tuple[float, object]] = []

    def tell(self, message):
        self.got.append((self.clock.now(), message))


class Dead:
    def tell(self, message):
        raise pykka.ActorDeadError("gone")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def scheduler(clock) -> VirtualScheduler:
    scheduler = VirtualScheduler(clock)
    yield scheduler
    scheduler.stop()


# -- the virtual clock and scheduler --------------------------------------------------------------


def test_virtual_clock_stands_still_until_advanced(clock):
    assert clock.now() == T0 == VirtualClock().now()
    assert VirtualClock(5.0).now() == 5.0
    clock.advance(1.5)
    assert clock.now() == T0 + 1.5
    clock.advance_to(T0 + 10)
    assert clock.now() == T0 + 10
    clock.advance_to(T0 + 10)  # standing still is allowed
    with pytest.raises(ValueError, match="back in time"):
        clock.advance_to(T0)
    with pytest.raises(ValueError, match=">= 0"):
        clock.advance(-1)


def test_timers_fire_in_due_order_at_their_due_time(clock, scheduler):
    target = Stamped(clock)
    for at, name in [(3, "c"), (1, "a"), (2, "b1"), (2, "b2"), (2.5, "b3")]:
        scheduler.schedule(T0 + at, target, name)
    assert scheduler.next_due() == T0 + 1
    assert target.got == []  # nothing fires until the clock moves
    assert clock.advance(5) == 5
    assert target.got == [(T0 + 1, "a"), (T0 + 2, "b1"), (T0 + 2, "b2"), (T0 + 2.5, "b3"),
                          (T0 + 3, "c")]  # fmt: skip
    assert clock.now() == T0 + 5
    assert scheduler.next_due() is None


def test_advance_fires_only_what_is_due_boundary_included(clock, scheduler):
    target = Stamped(clock)
    scheduler.schedule(T0 + 1, target, "one")
    scheduler.schedule(T0 + 2, target, "two")
    assert clock.advance(0) == 0
    assert clock.advance(1) == 1
    assert [m for _, m in target.got] == ["one"]
    assert clock.advance_to(T0 + 1.999) == 0
    assert clock.advance(0.001) == 1
    assert [m for _, m in target.got] == ["one", "two"]


def test_a_timer_at_or_before_now_fires_at_once(clock, scheduler):
    target = Stamped(clock)
    handle = scheduler.schedule(T0 - 5, target, "late")
    assert target.got == [(T0, "late")]
    assert handle.fired and not scheduler.cancel(handle)
    assert len(scheduler) == 0


def test_cancel(clock, scheduler):
    target = Stamped(clock)
    keep = scheduler.schedule(T0 + 2, target, "keep")
    drop = scheduler.schedule(T0 + 1, target, "drop")
    assert drop.pending
    assert scheduler.cancel(drop) and drop.cancelled
    assert not scheduler.cancel(drop)
    assert scheduler.next_due() == T0 + 2
    clock.advance(3)
    assert [m for _, m in target.got] == ["keep"]
    assert keep.fired and not scheduler.cancel(keep)


def test_cancelled_timers_are_dropped_lazily_but_do_not_pile_up(clock, scheduler):
    target = Stamped(clock)
    handles = [scheduler.schedule(T0 + i, target, i) for i in range(1, 201)]
    for handle in handles[:150]:
        scheduler.cancel(handle)
    assert len(scheduler) == 50
    assert len(scheduler._timers._heap) < 200  # compacted
    assert scheduler.next_due() == T0 + 151
    clock.advance(1000)
    assert [m for _, m in target.got] == list(range(151, 201))


def test_cancel_refuses_a_handle_of_another_scheduler(clock, scheduler):
    other = VirtualScheduler(clock)
    handle = other.schedule(T0 + 1, Stamped(clock), "x")
    with pytest.raises(ValueError, match="another scheduler"):
        scheduler.cancel(handle)
    other.stop()


def test_two_schedulers_on_one_clock_fire_in_global_due_order(clock, scheduler):
    other = VirtualScheduler(clock)
    target = Stamped(clock)
    scheduler.schedule(T0 + 2, target, "s2")
    other.schedule(T0 + 1, target, "o1")
    other.schedule(T0 + 3, target, "o3")
    scheduler.schedule(T0 + 3, target, "s3")  # a tie: the first scheduler built goes first
    clock.advance(3)
    assert [m for _, m in target.got] == ["o1", "s2", "s3", "o3"]
    other.stop()


def test_a_dead_target_is_a_dead_letter_not_an_exception(clock):
    letters = DeadLetters()
    activity = Activity()
    scheduler = VirtualScheduler(clock, activity=activity, dead_letters=letters)
    scheduler.schedule(T0 + 1, Dead(), "timeout")
    assert clock.advance(1) == 1
    (letter,) = letters.items()
    assert letter.message == "timeout" and "ActorDeadError: gone" in letter.reason
    assert activity.count == 0
    scheduler.stop()


def test_fired_timers_are_counted_as_activity(clock):
    activity = Activity()
    scheduler = VirtualScheduler(clock, activity=activity)
    replies = Replies()
    scheduler.schedule(T0 + 1, replies, "tick")
    clock.advance(1)
    assert activity.count == 1  # until the receiver says it has handled it
    scheduler.stop()


def test_a_stopped_scheduler_refuses_timers_and_leaves_the_clock(clock):
    scheduler = VirtualScheduler(clock)
    target = Stamped(clock)
    scheduler.schedule(T0 + 1, target, "pending")
    scheduler.stop()
    with pytest.raises(SchedulerStopped):
        scheduler.schedule(T0 + 1, target, "late")
    clock.advance(5)
    assert target.got == []


def test_virtual_scheduler_needs_a_virtual_clock():
    with pytest.raises(TypeError, match="VirtualClock"):
        VirtualScheduler(SystemClock())  # type: ignore[arg-type]


class Ticker(pykka.ThreadingActor):
    """On each tick, schedules the next one a second later (a reaction on another thread)."""

    def __init__(self, scheduler, clock, activity, limit):
        super().__init__()
        self.scheduler, self.clock, self.activity, self.limit = scheduler, clock, activity, limit
        self.seen: list[float] = []

    def on_receive(self, message):
        try:
            self.seen.append(self.clock.now())
            if len(self.seen) < self.limit:
                self.scheduler.schedule(self.clock.now() + 1, self.actor_ref, "tick")
        finally:
            self.activity.end()


def test_settle_lets_reactions_happen_before_the_next_timer(clock):
    activity = Activity()
    scheduler = VirtualScheduler(clock, activity=activity)
    ref = Ticker.start(scheduler, clock, activity, limit=10)
    try:
        scheduler.schedule(T0 + 1, ref, "tick")
        assert clock.advance(20, settle=activity) == 10
        seen = ref.ask(pykka.messages.ProxyGetAttr(("seen",)), timeout=WAIT)
        assert seen == [T0 + i for i in range(1, 11)]
    finally:
        ref.stop(timeout=WAIT)
        scheduler.stop()


def test_settle_times_out_when_the_system_never_goes_idle(clock):
    activity = Activity()
    activity.begin()
    with pytest.raises(SettleTimeout, match="1 messages in flight"):
        clock.advance(1, settle=activity, settle_timeout=0.01)


def test_make_scheduler_picks_by_clock():
    virtual = make_scheduler(VirtualClock())
    real = make_scheduler(SystemClock())
    try:
        assert isinstance(virtual, VirtualScheduler) and isinstance(real, ThreadScheduler)
        assert isinstance(virtual, Scheduler) and isinstance(real, Scheduler)
    finally:
        virtual.stop()
        real.stop()


# -- the real-time scheduler ----------------------------------------------------------------------


class Signal:
    """A target that records messages and sets an event per message it is waiting for."""

    def __init__(self):
        self.got: list[object] = []
        self.events: dict[object, threading.Event] = {}

    def expect(self, message) -> threading.Event:
        return self.events.setdefault(message, threading.Event())

    def tell(self, message):
        self.got.append(message)
        self.expect(message).set()


@pytest.fixture
def real() -> ThreadScheduler:
    scheduler = ThreadScheduler()
    yield scheduler
    scheduler.stop()


def test_thread_scheduler_fires_in_due_order(real):
    target = Signal()
    now = time.time()
    done = target.expect("c")
    real.schedule(now + 0.15, target, "c")  # margins keep the test right on a loaded machine
    real.schedule(now + 0.05, target, "a")
    real.schedule(now + 0.10, target, "b")
    assert done.wait(WAIT)
    assert target.got == ["a", "b", "c"]


def test_thread_scheduler_fires_past_timers_at_once(real):
    target = Signal()
    real.schedule(time.time() - 60, target, "late")
    assert target.expect("late").wait(WAIT)


def test_thread_scheduler_cancel_works(real):
    target = Signal()
    now = time.time()
    cancelled = real.schedule(now + 0.10, target, "cancelled")
    real.schedule(now + 0.15, target, "kept")
    assert real.cancel(cancelled)
    assert target.expect("kept").wait(WAIT)
    assert target.got == ["kept"]  # "cancelled" was due first: it would have arrived before


def test_an_earlier_timer_wakes_the_thread(real):
    target = Signal()
    real.schedule(time.time() + 3600, target, "much later")
    real.schedule(time.time() + 0.01, target, "soon")
    assert target.expect("soon").wait(WAIT)
    assert real.next_due() > time.time() + 3000


def test_thread_scheduler_dead_target_is_a_dead_letter(real):
    target = Signal()
    now = time.time()
    real.schedule(now + 0.01, Dead(), "lost")
    real.schedule(now + 0.02, target, "after")
    assert target.expect("after").wait(WAIT)  # the scheduler thread survived the refusal
    (letter,) = real.dead_letters.items()
    assert letter.message == "lost"


def test_thread_scheduler_stop_joins_its_thread_and_refuses_timers():
    scheduler = ThreadScheduler(SystemClock(), activity=Activity())
    scheduler.schedule(time.time() + 3600, Signal(), "never")
    scheduler.stop()
    assert not scheduler._thread.is_alive()
    assert len(scheduler) == 0
    with pytest.raises(SchedulerStopped):
        scheduler.schedule(time.time(), Signal(), "late")
    scheduler.stop()  # idempotent
