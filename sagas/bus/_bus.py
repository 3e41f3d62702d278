"""The event bus: saga events published from the store's log to subscribers (issue 7).

::

    def notify(delivery: Delivery) -> None:
        print(delivery.topic, delivery.saga_id, delivery.data)

    with Runtime("sqlite:///.saga/sagas.db") as runtime:
        runtime.subscribe("mailer", ["order_inventory.saga.completed"], notify)
        runtime.run("flows/order_inventory.yaml", {...})

**Topics** are ``<flow name>.<event type>`` (``order_inventory.saga.completed``); a subscription
names topics or ``fnmatch`` patterns (``order_inventory.*``, ``*.saga.completed``, ``*``; see
:mod:`sagas.bus._topics`).

**What a subscriber is promised.** Every event of the log whose topic matches, in log (position)
order, none missing — across restarts and a ``kill -9``. The events are read from the store's
log by position (the log is the only source: nothing is published that was not committed), and
each subscriber has a *durable cursor* in the store, named by the subscriber: the position of
the last event it handled. It is saved after the handler returns, so delivery is *at least
once*: a crash between a handler's effect and the save of the cursor delivers those events
again after the restart (at most the last :data:`~sagas.bus._subscriber.SAVE_INTERVAL` seconds
of them). Deduplicate on ``delivery.event_id`` (or ``delivery.position``) where it matters. A
subscriber with no cursor starts at the beginning of the log (``start="beginning"``, the
default) or at its end (``start="end"``: only events written from then on). A subscriber name
is meant to be active in one runtime at a time (two would both get every event).

**A slow subscriber never blocks anyone else.** Each subscription is an actor (its own thread)
fed by the bus's one reader thread, which pages through the log (``store.read_log``) from the
lowest position a subscriber with room needs. A subscriber holds at most :data:`MAX_PAGES` pages
of :data:`PAGE_SIZE` events; when it is full, the reader leaves it behind (it reads the log
again later, from its cursor) and serves the others. The shards and services never wait for the
bus: it only reads the store.

**A handler that raises** is retried with a doubling backoff, then its subscription is
*parked* (status ``parked``, cursor just before the failing event, logged at ERROR): it never
skips an event silently. :meth:`Subscription.resume` or a restart retries the event.

Positions become visible in order in every store (given out under the store's write lock, see
:meth:`SagaStore.read_log <sagas.stores.SagaStore.read_log>`), so the reader never has to wait
for a hole in the log to fill.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pykka

from actors import ServicePool, freeze

from ..stores import LogEntry, LogReader, check_subscriber
from ._subscriber import Page, Resume, SubscriberActor, Subscription
from ._topics import TopicFilter, topic_of

__all__ = ["MAX_PAGES", "PAGE_SIZE", "RESERVED_PREFIX", "Delivery", "EventBus", "Start",
           "Subscriber", "Subscription", "topic_of"]

log = logging.getLogger(__name__)

RESERVED_PREFIX = "trigger:"
"""Cursor names kept for the triggers (``trigger:<flow>``, :mod:`sagas.engine.triggers`): the bus
refuses subscriber names with this prefix, so a subscriber and a trigger never move each other's
cursor."""

PAGE_SIZE = 256
"""Events the reader reads from the log at once (and the most one page holds)."""

MAX_PAGES = 2
"""Pages a subscriber may hold unhandled: its share of memory is bounded by this."""

IDLE_INTERVAL = 0.05
"""Seconds the reader waits before reading the log again once every subscriber has caught up
(while some are behind, it reads again at once)."""

SERVICES_INTERVAL = 0.1
"""Seconds between two looks for newly started services with ``@subscribes`` methods."""

Start = Literal["beginning", "end"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One published saga event, as a subscriber gets it.

    ``data`` is read-only (a ``MappingProxyType`` whose lists are tuples: ``actors.thaw``
    gives a plain copy); one delivery object may go to several subscribers.
    """

    topic: str  # "<flow>.<event type>", e.g. "order_inventory.saga.completed"
    flow: str
    saga_id: str
    position: int  # in the store's global log: increasing, the order of delivery
    seq: int  # in the saga's own log, from 1
    type: str  # e.g. "saga.completed"
    step: str | None
    attempt: int | None
    at: float  # when the event happened (Unix time)
    event_id: str  # unique: what to deduplicate on
    causation_id: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A subscription to make when a :class:`~sagas.Runtime` starts
    (``Runtime(subscribers=[Subscriber("mailer", ["*.saga.completed"], send_mail)])``).

    ``name`` names its durable cursor (1 to 256 of ``A-Za-z0-9_.:/-``); ``handler(delivery)``
    runs on the subscription's own thread; ``start`` is where a subscriber with no cursor
    starts; a failing handler is tried ``attempts`` times, ``backoff`` seconds apart at first
    (doubling), before the subscription is parked.
    """

    name: str
    topics: Sequence[str]
    handler: Callable[[Delivery], object]
    start: Start = "beginning"
    attempts: int = 5
    backoff: float = 0.1


class _Feed:
    """A subscription as the bus keeps it: its handle, its filter and its actor."""

    __slots__ = ("actor", "matches", "sub")

    def __init__(self, sub: Subscription, matches: TopicFilter,
                 actor: pykka.ActorRef[Any]) -> None:
        self.sub = sub
        self.matches = matches
        self.actor = actor


class EventBus:
    """Publishes a store's saga events to subscriptions: one reader thread, one actor per
    subscription. Start one per runtime (``Runtime.bus``); :meth:`close` stops it.

    ``services`` (a callable returning the running service pools by import path, e.g.
    ``ServiceRegistry.pools``) is watched: each ``@subscribes`` method of a service started
    there is subscribed as ``<module>:<Class>.<method>``, calling instance 0's method.
    """

    def __init__(self, store: LogReader, *,
                 services: Callable[[], Mapping[str, ServicePool[Any]]] | None = None) -> None:
        self.store = store
        self._services = services
        self._seen_services: set[str] = set()
        self._feeds: dict[str, _Feed] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="sagactor-event-bus")
        self._thread.start()

    # -- subscribing ---------------------------------------------------------------------------
    def subscribe(self, name: str, topics: Sequence[str], handler: Callable[[Delivery], object],
                  *, start: Start = "beginning", attempts: int = 5,
                  backoff: float = 0.1) -> Subscription:
        """Subscribe ``handler`` to the events whose topic matches one of ``topics``.

        It resumes after the durable cursor named ``name`` if there is one; otherwise it
        starts at the beginning of the log, or (``start="end"``) after its last event, saving
        that cursor at once. ``ValueError`` / ``TypeError`` for a bad name, topics, start or
        retry policy, or a name already subscribed on this bus.
        """
        check_subscriber(name)
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(f"subscriber names starting with {RESERVED_PREFIX!r} are reserved "
                             f"for flow triggers' cursors, got {name!r}")
        if start not in ("beginning", "end"):
            raise ValueError(f"start is 'beginning' or 'end', got {start!r}")
        if not callable(handler):
            raise TypeError(f"a subscriber's handler is a callable, got {handler!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts is an int >= 1, got {attempts!r}")
        if not isinstance(backoff, (int, float)) or not 0 <= backoff <= 60:
            raise ValueError(f"backoff is a number of seconds in [0, 60], got {backoff!r}")
        try:
            matches = TopicFilter(topics)
        except Exception as exc:  # actors' ServiceDefinitionError: a ValueError to callers
            raise ValueError(str(exc)) from None
        with self._lock:
            if self._closed:
                raise RuntimeError("this event bus is closed")
            if name in self._feeds:
                raise ValueError(f"a subscriber named {name!r} is already subscribed")
        position = self.store.cursor(name)
        if position is None:
            position = self.store.last_position() if start == "end" else 0
            if start == "end":
                self.store.save_cursor(name, position)
        sub = Subscription(name, matches.patterns, position=position, resume=self._resume)
        actor = SubscriberActor.start(sub, handler, store=self.store, attempts=attempts,
                                      backoff=float(backoff), page_done=self._page_done,
                                      parked=self._parked)
        with self._wake:
            if self._closed or name in self._feeds:
                actor.stop()
                raise ValueError(f"a subscriber named {name!r} is already subscribed"
                                 if not self._closed else "this event bus is closed")
            self._feeds[name] = _Feed(sub, matches, actor)
            self._wake.notify_all()
        log.info("subscriber %s subscribed to %s after position %d", name,
                 ", ".join(sub.topics), position)
        return sub

    def unsubscribe(self, name: str, timeout: float = 10.0) -> None:
        """Stop the subscription ``name`` (its cursor saved; it stays in the store).
        ``KeyError`` if there is none."""
        with self._wake:
            feed = self._feeds.pop(name)
        self._stop_feed(feed, timeout)

    def subscriptions(self) -> dict[str, Subscription]:
        """The subscriptions of this bus, by name."""
        with self._lock:
            return {name: feed.sub for name, feed in self._feeds.items()}

    def wait_caught_up(self, timeout: float = 10.0) -> bool:
        """Wait until every running subscription has handled the log up to its last event as
        of this call; ``False`` after ``timeout`` seconds (or if one is parked)."""
        target = self.store.last_position()
        deadline = time.monotonic() + timeout
        while True:
            subs = list(self.subscriptions().values())
            if all(s.position >= target for s in subs):
                return True
            if any(s.status == "parked" for s in subs) or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reader and every subscription (each cursor saved where it is: a handler
        under way is waited for, up to ``timeout``). Idempotent."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            feeds = list(self._feeds.values())
            self._feeds.clear()
            self._wake.notify_all()
        self._thread.join(timeout)
        for feed in feeds:
            feed.sub._stopping.set()
        for feed in feeds:
            self._stop_feed(feed, timeout)

    def _stop_feed(self, feed: _Feed, timeout: float) -> None:
        feed.sub._stopping.set()
        try:
            feed.actor.stop(block=True, timeout=timeout)
        except Exception:
            log.warning("subscriber %s did not stop within %ss (a handler is blocked)",
                        feed.sub.name, timeout)
        feed.sub.status = "stopped"

    # -- callbacks from the subscribers' actors ----------------------------------------------
    def _page_done(self, sub: Subscription, epoch: int) -> None:
        with self._wake:
            if epoch == sub._epoch:
                sub._in_flight -= 1
                if sub._in_flight == MAX_PAGES - 1:
                    self._wake.notify_all()

    def _parked(self, sub: Subscription, error: Exception) -> None:
        with self._wake:
            sub.error = error
            sub.status = "parked"
            sub._epoch += 1  # pages already sent are dropped; resume() sends them again
            sub._in_flight = 0

    def _resume(self, sub: Subscription) -> None:
        with self._wake:
            feed = self._feeds.get(sub.name)
            if feed is None or feed.sub is not sub or sub.status != "parked":
                return
            sub._epoch += 1
            sub._after = sub.position
            sub._in_flight = 0
            feed.actor.tell(Resume(sub._epoch))  # before any page of the new epoch
            sub.error = None
            sub.status = "running"
            self._wake.notify_all()

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        next_services = 0.0
        while True:
            with self._wake:
                if self._closed:
                    return
            try:
                if self._services is not None and time.monotonic() >= next_services:
                    next_services = time.monotonic() + SERVICES_INTERVAL
                    self._subscribe_services()
                busy = self._read_once()
            except Exception:
                log.exception("event bus: reading the log failed; trying again")
                busy = False
            with self._wake:
                if self._closed:
                    return
                if not busy:
                    self._wake.wait(IDLE_INTERVAL)

    def _read_once(self) -> bool:
        """Read the log for every subscriber with room, lowest position first, and send each
        its page; whether any page was sent (then the reader goes on at once)."""
        with self._lock:  # (feed, where it is, its epoch): a resume meanwhile voids the page
            ready = sorted(((f, f.sub._after, f.sub._epoch) for f in self._feeds.values()
                            if f.sub.status == "running" and f.sub._in_flight < MAX_PAGES),
                           key=lambda item: item[1])
        served: set[str] = set()
        sent = False
        for feed, after, _ in ready:
            if feed.sub.name in served:
                continue
            entries = self.store.read_log(after, PAGE_SIZE)
            if not entries:
                break  # the others of ``ready`` are at the same place or further
            positions = [entry.event.position for entry in entries]
            upto = positions[-1]
            made: dict[int, Delivery] = {}
            for other, other_after, epoch in ready:
                if other.sub.name in served or other_after >= upto:
                    continue
                served.add(other.sub.name)
                matches = other.matches
                page = tuple(_delivery(entries, index, made)
                             for index in range(bisect.bisect_right(positions, other_after),
                                                len(entries))
                             if matches(topic_of(entries[index].flow,
                                                 entries[index].event.type)))
                with self._lock:
                    sub = other.sub
                    if sub._epoch != epoch or sub.status != "running" or self._closed:
                        continue
                    sub._after = upto
                    sub._in_flight += 1
                    other.actor.tell(Page(epoch, page, upto))
                sent = True
        return sent

    def _subscribe_services(self) -> None:
        """Subscribe the ``@subscribes`` methods of services started since the last look."""
        assert self._services is not None
        for import_path, pool in self._services().items():
            if import_path in self._seen_services:
                continue
            self._seen_services.add(import_path)
            service = pool.instances[0]
            for method, topics in type(service).subscriptions().items():
                name = f"{import_path}.{method}"
                try:
                    self.subscribe(name, topics, getattr(service, method))
                except Exception:
                    log.exception("event bus: cannot subscribe %s", name)

    def __repr__(self) -> str:
        return f"EventBus({self.store.url!r}, {len(self._feeds)} subscriptions)"


def _delivery(entries: list[LogEntry], index: int, made: dict[int, Delivery]) -> Delivery:
    """The delivery of ``entries[index]``, made once per page whatever the subscribers."""
    delivery = made.get(index)
    if delivery is None:
        saga_id, flow, event = entries[index]
        assert event.position is not None
        delivery = made[index] = Delivery(
            topic_of(flow, event.type), flow, saga_id, event.position, event.seq, event.type,
            event.step, event.attempt, event.at, event.event_id, event.causation_id,
            freeze(event.data))
    return delivery
