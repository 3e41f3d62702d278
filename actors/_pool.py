"""Service actors, pools of them, and their supervision.

Each service object runs as one pykka ``ThreadingActor`` (one OS thread, a daemon: a handler that
blocks forever must not keep the process alive once its work is done and the pool stopped). A
:class:`ServicePool` routes a saga's commands to one instance (``crc32(saga_id) % len(pool)``), so
a compensation never overtakes its action, and keeps its instances alive.

Supervision, and why no message is lost
    pykka stops an actor whose ``on_receive`` raises and then silently discards the ``tell``
    messages still in its inbox (``Actor._actor_loop_teardown`` only answers ``ask`` futures). So a
    pool does not rely on pykka's inbox to remember work: every message it tells an instance is
    also kept in that instance's *pending ledger* (under the instance's lock) until the actor
    claims it. When an actor dies (``on_failure``, on its own thread) the pool starts a new actor
    over the same service object and re-tells it everything still pending, in order, recording
    each as a dead letter ``redelivered=True``. A ``tell`` that meets the dead actor
    (``ActorDeadError``) stays pending, so it is redelivered too. The command being processed
    when the actor died is answered with an ``error`` reply (its handler may have run), after
    the replies to the commands of its batch that it had already handled.

Mailboxes
    Instances use :func:`actors.fast_inbox` (a ``queue.SimpleQueue`` through pykka's private
    ``_create_actor_inbox`` hook; see :mod:`actors._mailbox`). :meth:`ServicePool.tell_many`
    sends one message per instance for many commands, and such a batch is answered with one
    message per receiver.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import pykka

from ._deadletters import DeadLetters
from ._dispatch import Dispatcher
from ._errors import (
    ActorUnavailable,
    CallFailed,
    CallTimeout,
    describe_exception,
    safe_repr,
)
from ._inbox_buffer import InboxBuffer
from ._mailbox import fast_inbox
from ._messages import Command, Deliver, Replies, Reply, Teller
from ._service import Service

if TYPE_CHECKING:
    from types import TracebackType

    from ._activity import Activity
    from ._faults import FaultInjector
    from ._inbox import InboxStore

__all__ = ["ServicePool"]

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=Service)
T = TypeVar("T")

_owned_lock = threading.Lock()
_owned: set[int] = set()  # ids of service objects run by a live pool


class _Mail(NamedTuple):
    """A delivery from a pool, claimed from the instance's pending ledger by ``seq``."""

    seq: int
    deliver: Deliver


class _Mails(NamedTuple):
    """Several deliveries to one instance in one message (``ServicePool.tell_many``)."""

    mails: tuple[_Mail, ...]


class _Call(NamedTuple):
    """``ServicePool.call``: run ``fn(service)`` on the actor's thread (sent with ``ask``)."""

    fn: Callable[[Any], Any]


class _Crash(Exception):
    """A ``BaseException`` that escaped the handler guard, turned into a restartable crash."""


class _Slot:
    """One instance of a pool: its service, its current actor, its pending ledger."""

    __slots__ = (
        "buffer",
        "changed",
        "dispatcher",
        "index",
        "label",
        "lock",
        "pending",
        "ref",
        "restarts",
        "running",
        "seq",
        "service",
        "thread",
    )

    def __init__(self, index: int, service: Service, dispatcher: Dispatcher, buffer: InboxBuffer,
                 label: str) -> None:
        self.index = index
        self.service = service
        self.dispatcher = dispatcher
        self.buffer = buffer
        self.label = label
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.pending: dict[int, Deliver] = {}
        self.ref: pykka.ActorRef[Any] | None = None
        self.running = True  # False once stopped for good: tells become dead letters
        self.restarts = 0
        self.seq = 0  # numbers the pending ledger; guarded by lock
        self.thread: threading.Thread | None = None


class _ServiceActor(pykka.ThreadingActor):
    """Hosts one service object. All its hooks run on the actor's own thread."""

    use_daemon_thread = True  # user code may block forever; :meth:`ServicePool.stop` first

    def __init__(self, pool: ServicePool[Any], slot: _Slot) -> None:
        super().__init__()
        self._pool = pool
        self._slot = slot
        self._dispatcher = slot.dispatcher
        self._buffer = slot.buffer
        self._activity = pool.activity
        self._inflight: Deliver | None = None
        # replies produced by the batch being handled, not sent yet: receiver -> replies
        self._unsent: dict[Teller, list[Reply]] = {}
        self._owed = 0  # deliveries handled whose Activity.end waits for their replies

    @staticmethod
    def _create_actor_inbox() -> Any:
        return fast_inbox()

    def on_start(self) -> None:
        thread = threading.current_thread()
        thread.name = f"sagactor-{self._slot.label}"
        self._slot.thread = thread

    def on_receive(self, message: Any) -> Any:
        """Handle one message. Handler failures become replies; only the inbox store or the
        fault injector raising (or a bug) escapes, which crashes the actor (see ``on_failure``)."""
        try:
            if type(message) is _Mails:
                self._handle_batch(message.mails)
                return None
            if type(message) is _Mail:
                if self._pool._claim(self._slot, message.seq):
                    self._owed += 1
                    self._handle(message.deliver)
                    self._settle_owed()
                return None
            if isinstance(message, Deliver):  # told directly, not through a pool: not supervised
                self._handle(message)
                return None
            if type(message) is _Call:
                return self._call(message.fn)
            logger.warning("%s ignored a message: %s", self._slot.label, safe_repr(message))
            return None
        except Exception:
            raise
        except BaseException as exc:  # pykka would stop *every* actor on a BaseException
            raise _Crash(describe_exception(exc)) from exc

    def _handle_batch(self, mails: tuple[_Mail, ...]) -> None:
        """Handle each delivery still pending, then answer each receiver with one message."""
        unsent = self._unsent
        self._buffer.prefetch([mail.deliver.command for mail in mails])
        for mail in mails:
            if not self._pool._claim(self._slot, mail.seq):
                continue
            self._owed += 1
            deliver = mail.deliver
            self._inflight = deliver
            for reply in self._dispatcher.process(deliver.command):
                queued = unsent.get(deliver.reply_to)
                if queued is None:
                    unsent[deliver.reply_to] = [reply]
                else:
                    queued.append(reply)
            self._inflight = None
        self._commit_and_send()
        self._settle_owed()

    def _settle_owed(self) -> None:
        """Count the deliveries handled as done, once what they caused has been sent. After a
        crash ``on_failure`` does it, after sending the replies and the crash reply."""
        owed, self._owed = self._owed, 0
        if owed and self._activity is not None:
            self._activity.end(owed)

    def _handle(self, deliver: Deliver) -> None:
        self._inflight = deliver
        for reply in self._dispatcher.process(deliver.command):
            queued = self._unsent.get(deliver.reply_to)
            if queued is None:
                self._unsent[deliver.reply_to] = [reply]
            else:
                queued.append(reply)
        self._inflight = None
        self._commit_and_send()

    def _commit_and_send(self) -> None:
        """Commit the inbox writes of what was handled, then send its replies (write-ahead).

        If the commit fails, the replies are dropped with the writes (the sagas time out and
        retry) and the error crashes the actor, which its pool restarts.
        """
        try:
            self._buffer.commit()
        except BaseException:
            self._buffer.discard()
            self._unsent = {}
            raise
        unsent, self._unsent = self._unsent, {}
        for reply_to, replies in unsent.items():
            self._send(reply_to, replies[0] if len(replies) == 1 else Replies(tuple(replies)))

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self._slot.service)
        except Exception:
            raise  # goes back to the caller of ServicePool.call through the ask future
        except BaseException as exc:
            raise CallFailed(f"{self._slot.label}: {describe_exception(exc)}") from exc

    def _send(self, reply_to: Teller, reply: Reply | Replies) -> None:
        try:
            reply_to.tell(reply)
        except Exception as exc:
            self._pool.dead_letters.record(
                reply,
                target=safe_repr(reply_to),
                reason=f"reply from {self._slot.label} refused: {describe_exception(exc)}",
            )

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """After a crash (pykka has logged it and marked this actor dead): answer the command in
        flight with an ``error`` and have the pool restart the instance. Never raises."""
        try:
            try:
                self._commit_and_send()  # the commands handled before the crash
            except Exception:
                logger.exception("%s: the inbox commit after a crash failed", self._slot.label)
            deliver, self._inflight = self._inflight, None
            exc = exception_value if exception_value is not None else RuntimeError("crash")
            if isinstance(exc, _Crash) and exc.__cause__ is not None:
                exc = exc.__cause__  # report the BaseException itself, not its wrapper
            if deliver is not None:
                self._send(deliver.reply_to, self._dispatcher.crash_reply(deliver.command, exc))
            self._settle_owed()
            self._pool._restart(self._slot, self.actor_ref, exc)
        except Exception:
            logger.exception("%s: supervision failed", self._slot.label)
            self._settle_owed()

    def on_stop(self) -> None:
        """After a clean stop: the instance is stopped for good; leftovers become dead letters."""
        self._pool._stopped(self._slot, self.actor_ref)


class ServicePool(Generic[S]):
    """A named pool of service actors, one per service object. Start it with :meth:`start`.

    Thread-safe: :meth:`tell` may be called from any thread (actors included). Use it as a context
    manager, or call :meth:`stop`: actor threads are daemons, so a process that ends without
    stopping its pools ends their work wherever it is.
    """

    def __init__(
        self,
        name: str,
        services: Sequence[S],
        *,
        inbox: InboxStore,
        faults: FaultInjector | None,
        activity: Activity | None,
        dead_letters: DeadLetters | None,
        around: Callable[[Command, str], AbstractContextManager[Any]] | None = None,
    ) -> None:
        """Private: use :meth:`ServicePool.start`."""
        self.name = name
        self.inbox = inbox
        self.faults = faults
        self.activity = activity
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetters()
        self._services = tuple(services)
        self._stopping = False
        slots = []
        for index, service in enumerate(services):
            buffer = InboxBuffer(inbox)
            dispatcher = Dispatcher(
                service, service_name=name, instance=index, inbox=buffer, faults=faults,
                around=around,
            )
            slots.append(_Slot(index, service, dispatcher, buffer, f"{name}[{index}]"))
        self._slots = tuple(slots)

    @classmethod
    def start(
        cls,
        name: str,
        services: Sequence[S],
        *,
        inbox: InboxStore,
        faults: FaultInjector | None = None,
        activity: Activity | None = None,
        dead_letters: DeadLetters | None = None,
        around: Callable[[Command, str], AbstractContextManager[Any]] | None = None,
    ) -> ServicePool[S]:
        """Start one actor per service object (each a distinct :class:`Service` instance).

        ``around(command, pool name)``, if given, wraps every handler call (a tracing span,
        say: it runs on the actor's thread, the handler inside it);
        ``inbox`` is shared by the instances; ``faults`` is consulted for every delivery;
        ``activity`` counts every message the pool enqueues; undeliverable messages are recorded in
        ``dead_letters`` (a private one if not given: :attr:`dead_letters`). A service object may
        run in one live pool only. Raises ``TypeError``/``ValueError`` for bad arguments.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a pool needs a non-empty name, got {name!r}")
        services = list(services)
        if not services:
            raise ValueError(f"pool {name!r} needs at least one service object")
        for service in services:
            if not isinstance(service, Service):
                raise TypeError(
                    f"pool {name!r}: {safe_repr(service)} is not a Service "
                    "(subclass actors.Service and mark handlers with @handles)"
                )
        ids = [id(service) for service in services]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"pool {name!r}: the same service object appears twice; each instance is a "
                "separate object (e.g. [Inventory() for _ in range(n)])"
            )
        with _owned_lock:
            if _owned.intersection(ids):
                raise ValueError(
                    f"pool {name!r}: a service object already runs in another live pool; "
                    "an object must have one actor (one thread) only"
                )
            _owned.update(ids)
        pool = cls(
            name,
            services,
            inbox=inbox,
            faults=faults,
            activity=activity,
            dead_letters=dead_letters,
            around=around,
        )
        try:
            for slot in pool._slots:
                slot.ref = _ServiceActor.start(pool, slot)
        except BaseException:
            pool.stop()
            raise
        logger.debug("started pool %s with %d instances", name, len(services))
        return pool

    # -- public API ----------------------------------------------------------------------------

    @property
    def instances(self) -> tuple[S, ...]:
        """The service objects, by instance index."""
        return self._services

    @property
    def restarts(self) -> tuple[int, ...]:
        """How many times each instance's actor has been restarted after a crash."""
        return tuple(slot.restarts for slot in self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[S]:
        return iter(self._services)

    def route(self, saga_id: str) -> int:
        """The instance index that handles every command of ``saga_id`` (stable across runs)."""
        return zlib.crc32(saga_id.encode()) % len(self._slots)

    def tell(self, command: Command, reply_to: Teller) -> None:
        """Deliver ``command`` to its saga's instance; its :class:`Reply` goes to ``reply_to``.

        Never blocks and never raises for delivery problems: after :meth:`stop` the message is
        recorded as a dead letter (no reply will come).
        """
        slot = self._slots[self.route(command.saga_id)]
        deliver = Deliver(command, reply_to)
        with slot.lock:
            if self._stopping or not slot.running:
                why = "pool stopped" if self._stopping else "instance stopped"
                self.dead_letters.record(deliver, target=slot.label, reason=why)
                return
            if self.activity is not None:
                self.activity.begin()
            self._enqueue(slot, deliver)

    def tell_many(self, commands: Sequence[Command], reply_to: Teller) -> None:
        """:meth:`tell` for several commands, with one message per instance they go to.

        Each instance receives its commands in the order given, and answers them with one
        message per receiver (a :class:`Replies`, or a lone :class:`Reply`).
        """
        slots = self._slots
        count = len(slots)
        if count == 1:
            groups = {0: commands}
        else:
            groups = {}
            for command in commands:
                index = zlib.crc32(command.saga_id.encode()) % count
                group = groups.get(index)
                if group is None:
                    groups[index] = [command]
                else:
                    group.append(command)  # type: ignore[union-attr]
        for index, group in groups.items():
            slot = slots[index]
            delivers = [Deliver(command, reply_to) for command in group]
            with slot.lock:
                if self._stopping or not slot.running:
                    why = "pool stopped" if self._stopping else "instance stopped"
                    for deliver in delivers:
                        self.dead_letters.record(deliver, target=slot.label, reason=why)
                    continue
                if self.activity is not None:
                    self.activity.begin(len(delivers))
                self._enqueue_many(slot, delivers)

    def call(self, instance: int, fn: Callable[[S], T], timeout: float) -> T:
        """Run ``fn(service)`` on instance ``instance``'s actor thread and return its result.

        For callers *outside* actors (tests, ``snapshot()``); never call it from an actor. Waits
        for the messages queued before it. Raises what ``fn`` raises, ``CallTimeout`` after
        ``timeout`` seconds (``fn`` may still run later), ``ActorUnavailable`` if the instance is
        stopped for good, ``CallFailed`` if ``fn`` raised a ``BaseException``. A call that meets
        an actor being restarted is sent again to its successor.
        """
        if timeout is None or timeout <= 0:
            raise ValueError(f"ServicePool.call needs a timeout > 0 seconds, got {timeout!r}")
        slot = self._slots[instance]
        deadline = time.monotonic() + timeout
        while True:
            ref = slot.ref
            remaining = deadline - time.monotonic()
            if ref is None or remaining <= 0:
                break
            try:
                result: T = ref.ask(_Call(fn), timeout=remaining)
                return result
            except pykka.Timeout:
                break
            except pykka.ActorDeadError:
                with slot.changed:  # wait for the supervisor to replace (or bury) this actor
                    slot.changed.wait_for(
                        lambda dead=ref: slot.ref is not dead or not slot.running,
                        max(0.0, deadline - time.monotonic()),
                    )
                    if not slot.running:
                        raise ActorUnavailable(f"{slot.label} is stopped") from None
        raise CallTimeout(f"{slot.label} did not answer within {timeout}s (is a handler blocked?)")

    def snapshots(self, timeout: float) -> list[Any]:
        """Every instance's ``snapshot()``, taken on its own thread (``timeout`` per instance)."""
        return [self.call(i, lambda service: service.snapshot(), timeout) for i in range(len(self))]

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every instance after the messages already queued, waiting up to ``timeout`` s.

        Returns ``False`` (and logs) if some actor is still running then (a handler is blocked);
        its thread finishes on its own later. Later :meth:`tell` calls become dead letters.
        Idempotent. Call it from outside the pool's actors.
        """
        deadline = time.monotonic() + timeout
        self._stopping = True
        waits = []
        for slot in self._slots:
            with slot.lock:  # tells that got the lock first are queued before the stop
                ref = slot.ref
                if ref is not None and slot.running:
                    waits.append((slot, ref.stop(block=False)))
        ok = True
        for slot, future in waits:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                ok = False
                logger.warning("%s did not stop within %ss (blocked handler?)", slot.label, timeout)
                continue
            thread = slot.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                ok = ok and not thread.is_alive()
        with _owned_lock:
            _owned.difference_update(id(service) for service in self._services)
        return ok

    def __enter__(self) -> ServicePool[S]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServicePool({self.name!r}, {len(self)} instances)"

    # -- supervision (called with or on actor threads) -----------------------------------------

    def _enqueue(self, slot: _Slot, deliver: Deliver) -> None:
        """Record ``deliver`` as pending and tell the current actor. Caller holds ``slot.lock``."""
        slot.seq += 1
        slot.pending[slot.seq] = deliver
        assert slot.ref is not None
        # A dead actor leaves it pending: its restart redelivers it, or its burial dead-letters it.
        with contextlib.suppress(pykka.ActorDeadError):
            slot.ref.tell(_Mail(slot.seq, deliver))

    def _enqueue_many(self, slot: _Slot, delivers: Sequence[Deliver]) -> None:
        """:meth:`_enqueue` for several deliveries, told as one message. Holds ``slot.lock``."""
        if len(delivers) == 1:
            self._enqueue(slot, delivers[0])
            return
        pending = slot.pending
        mails = []
        seq = slot.seq
        for deliver in delivers:
            seq += 1
            pending[seq] = deliver
            mails.append(_Mail(seq, deliver))
        slot.seq = seq
        assert slot.ref is not None
        with contextlib.suppress(pykka.ActorDeadError):
            slot.ref.tell(_Mails(tuple(mails)))

    def _claim(self, slot: _Slot, seq: int) -> bool:
        """The actor takes message ``seq`` off the ledger; ``False`` if it is no longer there."""
        with slot.lock:
            return slot.pending.pop(seq, None) is not None

    def _restart(self, slot: _Slot, dead: pykka.ActorRef[Any], exc: BaseException) -> None:
        """Replace the crashed actor ``dead`` and redeliver what it left pending (its thread)."""
        with slot.lock:
            if slot.ref is not dead:
                return
            if self._stopping:
                leftovers = self._bury(slot)
            else:
                try:
                    slot.ref = _ServiceActor.start(self, slot)
                except Exception:
                    logger.exception("%s could not be restarted; it is stopped", slot.label)
                    leftovers = self._bury(slot)
                else:
                    slot.restarts += 1
                    leftovers = []
                    pending = list(slot.pending.values())
                    slot.pending.clear()
                    for deliver in pending:
                        self.dead_letters.record(
                            deliver,
                            target=slot.label,
                            reason="queued for an actor that crashed",
                            redelivered=True,
                        )
                        self._enqueue(slot, deliver)
                    logger.warning(
                        "%s crashed (%s) and was restarted (restart %d); %d queued message(s) "
                        "redelivered",
                        slot.label,
                        describe_exception(exc),
                        slot.restarts,
                        len(pending),
                    )
            slot.changed.notify_all()
        self._dead_letter(slot, leftovers, "its actor crashed while the pool was stopping")

    def _stopped(self, slot: _Slot, ref: pykka.ActorRef[Any]) -> None:
        """An actor stopped cleanly (``on_stop``, its thread): the instance is stopped for good."""
        with slot.lock:
            if slot.ref is not ref:
                return
            leftovers = self._bury(slot)
            slot.changed.notify_all()
        if not self._stopping:
            logger.warning(
                "%s was stopped from outside its pool (pykka.ActorRegistry.stop_all?); "
                "later commands to it become dead letters",
                slot.label,
            )
        self._dead_letter(slot, leftovers, "its actor stopped before handling it")

    def _bury(self, slot: _Slot) -> list[Deliver]:
        """Mark the instance stopped for good; returns its pending messages. Holds ``slot.lock``."""
        slot.running = False
        leftovers = list(slot.pending.values())
        slot.pending.clear()
        return leftovers

    def _dead_letter(self, slot: _Slot, leftovers: list[Deliver], reason: str) -> None:
        for deliver in leftovers:
            self.dead_letters.record(deliver, target=slot.label, reason=reason)
        if leftovers and self.activity is not None:
            self.activity.end(len(leftovers))
