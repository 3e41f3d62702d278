"""The worker: a flow's services hosted in a process of their own, fed over Redis Streams.

A :class:`Worker` runs each service it hosts as an :class:`actors.ServicePool` (its flow's
``instances:``, actors with mailboxes, a saga's commands to one instance, as in-process) and
answers the commands of ``<prefix>:commands:<service>`` that it reads in the consumer group
``<prefix>:workers`` under its own name (the protocol: :mod:`.protocol`). Two threads of its
own talk to the broker:

- the **driver** reads commands (``XREADGROUP … COUNT k BLOCK ms``), never holding more than
  ``concurrency`` unacknowledged at once (backpressure: it reads only as many as it has room
  for); every :data:`TICK` seconds it keeps the entries it holds from looking idle
  (``XCLAIM … 0 ids JUSTID`` on those still its own, which resets their idle time without
  counting a delivery), so that only a *dead* worker's commands are claimed, and claims those
  (``XAUTOCLAIM`` of entries idle for ``claim_idle`` seconds, 2 by default: within about 3 s of
  a worker's death);
- the **publisher** writes each answer in one ``MULTI``/``EXEC`` with the ``XACK`` of its
  command (several answers may share one).

What a command gets, in order:

1. a body that is not a command of this protocol, or whose ``reply_to`` is not a reply stream
   of the prefix: the dead-letter stream ``<prefix>:dead:<service>`` (no reply: nowhere to
   send it); a command of another protocol version: an ``error`` reply saying so;
2. a key already in the inbox (``HGET <prefix>:inbox:<service> key``): the stored reply,
   ``replayed: true``, without running the handler;
3. delivered more than ``max_deliveries`` times (its handler crashed its workers, or hung
   them until they were killed): the dead-letter stream (the body with ``reason``,
   ``deliveries``, ``worker`` and ``entry``), answered ``error`` ("dead-lettered after N
   deliveries") so the saga counts a failed attempt;
4. otherwise its service's pool runs it (an :class:`actors.Command`, ``timeout_at`` from the
   ``deadline``). ``succeeded`` is answered ``ok`` (``result``: the handler's output),
   ``rejected`` is ``rejected`` and ``error`` is ``error`` (``reason``: one line). A
   definitive reply (an action's ``ok`` or ``rejected``, a compensation's ``ok``; DESIGN.md
   §3: a compensation's ``rejected`` is a failed attempt, retried) is kept in the inbox in the
   same ``MULTI`` as the reply's ``XADD`` and the ``XACK``; an ``error`` only is replied.

**Tombstones.** A compensation (key ``K:compensation``) leaves, under its action's key ``K``,
an entry answering ``rejected`` ("compensated before it ran") unless ``K`` has one already
(``HSETNX``): written when the compensation is looked up, before it runs, and again with its
reply. A late action delivered after its compensation is thus answered ``rejected`` without
running.

**One key at a time.** A command whose key is being handled here waits until that one is
answered, then is looked up in the inbox again (a redelivery gets the first reply).

**A broker that goes away** (redis-server restarting): both threads retry with backoff (up to
:data:`MAX_BACKOFF` s) and never give up; ``on_note`` and the log say once that it is lost,
once that it is back. Groups lost with the server's data are made again. A worker cut off for
longer than ``claim_idle`` cannot keep its entries fresh: another worker may claim them and
run them too (delivery is at-least-once; a held entry found in another's hands is not taken
back, and is answered all the same).

**Housekeeping** (every ``housekeeping`` seconds, :data:`HOUSEKEEPING` by default, on the
driver): each command stream it reads is trimmed of the entries every consumer group has
acknowledged (:func:`.retention.trim_acknowledged`: ``XTRIM … MINID``, never past an entry
pending in a group or not yet delivered), and the inbox entries older than ``inbox_retention``
are removed. The inbox keeps, beside its hash, a sorted set ``<prefix>:inbox-times:<service>``
(member: the key; score: the Unix time it was written, from ``clock``), written in the same
``MULTI`` as the entry (``ZADD``; ``ZADD NX`` beside a tombstone's ``HSETNX``); entries found
without a time (written before there were times) are given the time the worker first sees
them (``HSCAN``, a few steps per round until it has been through the hash once). The
retention (:data:`INBOX_RETENTION_DAYS` days unless ``SAGA_INBOX_RETENTION_DAYS`` says
otherwise: :func:`inbox_retention_from_env`) must outlast any redelivery or retry of a key: a
command whose key has expired from the inbox runs its handler again. Dead letters are kept
until ``saga dead-letters`` replays or purges them.

**Durability.** The inbox is what keeps a handler from running twice; it is only as durable
as redis-server makes it. As it starts, the worker reads ``CONFIG GET appendonly`` and
``appendfsync`` (a server that refuses ``CONFIG`` is taken as it is) and logs one warning,
also kept in :attr:`Worker.durability`, unless the server runs ``appendonly yes`` with
``appendfsync always`` (README: Delivery, retention and dead letters).

**Stopping** (:meth:`Worker.stop`): the driver stops reading and claiming, the commands held
are finished (their handlers' replies published and acknowledged; the entries kept fresh
meanwhile), then the pools stop. Given a ``timeout``, what is unfinished by then is left
pending, for another worker to claim.

Threads: :meth:`Worker.start` and :meth:`Worker.stop` are called from one thread (the
process's main one, usually); the pools' actor threads hand replies over through a queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors import Command, Replies, Reply, ServicePool, StoredReply, action_key

from ..errors import DefinitionUnavailable
from ..language.model import Flow, ServiceSpec
from ..language.service_classes import import_service
from . import protocol
from .broker import connect, ensure_group, is_transient, masked_url
from .retention import expire_inbox, inbox_times_key, stamp, time_untimed, trim_acknowledged
from .wire import read_group, round_trip

__all__ = [
    "CLAIM_IDLE",
    "DEFAULT_CONCURRENCY",
    "HOUSEKEEPING",
    "INBOX_RETENTION_DAYS",
    "MAX_DELIVERIES",
    "RETENTION_ENV",
    "TICK",
    "Worker",
    "default_name",
    "durability_warning",
    "hosted_services",
    "inbox_retention_from_env",
]

log = logging.getLogger(__name__)

TICK = 0.5
"""Seconds between two rounds of keeping held entries fresh and claiming a dead worker's."""
CLAIM_IDLE = 2.0
"""Seconds an entry must sit idle in another consumer's hands before it is claimed."""
MAX_DELIVERIES = 5
"""Deliveries after which a command is dead-lettered instead of run again."""
DEFAULT_CONCURRENCY = 64
READ_BLOCK_MS = 250
POLL = 0.05
"""Seconds between reads while there is room for fewer commands than there are streams."""
MAX_BACKOFF = 2.0
PUBLISH_BATCH = 256
POOL_STOP = 5.0
"""Seconds a pool is given to stop when the worker closes (its handlers to return)."""
HOUSEKEEPING = 5.0
"""Seconds between two rounds of trimming the command streams and expiring inbox entries."""
INBOX_RETENTION_DAYS = 7.0
"""Days an inbox entry (a definitive reply, a tombstone) is kept unless told otherwise."""
RETENTION_ENV = "SAGA_INBOX_RETENTION_DAYS"
EXPIRE_BATCHES = 20
"""Batches of inbox keys removed (or given a time) per service and round at most: the rest
the next round."""
DAY = 86400.0
_OUTCOME = {"succeeded": "ok", "rejected": "rejected", "error": "error"}
_COMPENSATION = ":compensation"


def default_name() -> str:
    """A worker's consumer name unless given one: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def inbox_retention_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Seconds an inbox entry is kept: ``SAGA_INBOX_RETENTION_DAYS`` (days, above 0; ``inf``
    keeps them for ever) in ``environ`` (default: the process's), else
    :data:`INBOX_RETENTION_DAYS` days. ``ValueError`` (one line) for another value."""
    text = (os.environ if environ is None else environ).get(RETENTION_ENV, "").strip()
    if not text:
        return INBOX_RETENTION_DAYS * DAY
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not days > 0:
        raise ValueError(f"{RETENTION_ENV} is a number of days above 0 (inf: for ever), "
                         f"got {text!r}")
    return days * DAY


def durability_warning(client: Any, shown: str) -> str | None:
    """What a crash of the redis-server behind ``client`` (shown as ``shown``) could lose of
    the inbox, as one line, unless it runs ``appendonly yes`` with ``appendfsync always``;
    ``None`` then, or when it refuses ``CONFIG GET`` (nothing can be told)."""
    try:
        appendonly = str(client.config_get("appendonly").get("appendonly", "")).lower()
        fsync = str(client.config_get("appendfsync").get("appendfsync", "")).lower()
    except Exception:
        return None
    if not appendonly:
        return None
    if appendonly != "yes":
        return (f"broker {shown} runs with appendonly {appendonly}: a kill -9 of redis-server "
                "loses every definitive reply and tombstone written since its last snapshot "
                "(their handlers run again): run it with appendonly yes and appendfsync always")
    if fsync == "always":
        return None
    if fsync == "everysec":
        return (f"broker {shown} runs with appendfsync everysec: a crash of its host, or a "
                "kill -9 of redis-server while its disk lags, can lose the last second or two "
                "of definitive replies and tombstones (their handlers run again): run it with "
                "appendfsync always")
    return (f"broker {shown} runs with appendfsync {fsync}: a crash of its host can lose the "
            "last 30 seconds or so of definitive replies and tombstones (their handlers run "
            "again): run it with appendfsync always")


def hosted_services(flows: Sequence[Flow], names: Iterable[str] | None = None
                    ) -> dict[str, ServiceSpec]:
    """The services a worker of ``flows`` hosts, by name: ``names`` (each declared by a flow,
    with a Python class), or every one declared with a class. A service declared by two flows
    must name the same class in both; it runs the most ``instances`` either asks for.
    ``ValueError`` (one line) otherwise."""
    declared: dict[str, ServiceSpec] = {}
    for flow in flows:
        for name, spec in flow.services.items():
            known = declared.get(name)
            if known is not None and known.import_path != spec.import_path:
                raise ValueError(
                    f"service {name!r} is {known.import_path or 'class-less'} in one flow and "
                    f"{spec.import_path or 'class-less'} in {flow.name!r}: a broker has one "
                    "stream per service name")
            if known is None or spec.instances > known.instances:
                declared[name] = spec
    if names is None:
        return {name: spec for name, spec in declared.items() if spec.import_path}
    hosted = {}
    for name in names:
        spec = declared.get(name)
        if spec is None:
            flow_names = ", ".join(flow.name for flow in flows)
            raise ValueError(f"no service {name!r} in {flow_names} (it declares "
                             f"{', '.join(sorted(declared)) or 'none'})")
        if not spec.import_path:
            raise ValueError(f"service {name!r} has no Python class to run here (a worker "
                             "written in another language serves it)")
        hosted[name] = spec
    if not hosted:
        raise ValueError("no service to host")
    return hosted


class _NoInbox:
    """The pools' inbox: keeps nothing. The worker's inbox is the broker's hash, read before a
    command reaches a pool and written with its reply."""

    def get(self, key: str) -> StoredReply | None:
        return None

    def put(self, key: str, reply: StoredReply) -> None:
        return None

    def tombstone(self, action_key: str) -> None:
        return None

    def is_tombstoned(self, action_key: str) -> bool:
        return False

    def write_many(self, replies: Sequence[tuple[str, StoredReply]],
                   tombstones: Sequence[str]) -> None:
        return None


@dataclass(eq=False, slots=True)
class _Held:
    """A stream entry this worker holds (read or claimed, not acknowledged yet). It is also
    where the pool sends the entry's :class:`~actors.Reply` (on an actor thread)."""

    service: str
    stream: str
    entry_id: str
    fields: Mapping[str, Any]
    deliveries: int
    on_reply: Callable[[_Held, Reply], None]
    command: dict[str, Any] | None = None
    stolen: bool = False

    def tell(self, message: Any) -> None:
        for reply in message.replies if isinstance(message, Replies) else (message,):
            self.on_reply(self, reply)

    @property
    def key(self) -> tuple[str, str]:
        """Its idempotency key, with the service (one inbox each)."""
        assert self.command is not None
        return self.service, str(self.command.get("key"))


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a held entry's answer writes, with its ``XACK``, in one ``MULTI``."""

    held: _Held
    reply: dict[str, Any] | None = None  # to XADD to reply_to
    reply_to: str | None = None
    keep: str | None = None              # the reply JSON to keep in the inbox under its key
    tombstone: tuple[str, str] | None = None  # (action key, JSON) to HSETNX
    dead: dict[str, str] | None = None   # fields to XADD to the dead stream

    def body(self) -> str:
        """The reply's JSON (the inbox entry's, when it is kept: encoded once)."""
        assert self.reply is not None
        return self.keep if self.keep is not None else protocol.encode_body(self.reply)


class _Link:
    """Whether the broker answers: said once when it stops, once when it is back."""

    def __init__(self, shown: str, say: Callable[[str], None]) -> None:
        self._shown = shown
        self._say = say
        self._lock = threading.Lock()
        self._lost = False

    def lost(self, exc: BaseException) -> None:
        with self._lock:
            first, self._lost = not self._lost, True
        if first:
            why = " ".join(str(exc).split()) or type(exc).__name__
            self._say(f"broker {self._shown} lost ({why}); reconnecting")

    def ok(self) -> None:
        if not self._lost:
            return
        with self._lock:
            was, self._lost = self._lost, False
        if was:
            self._say(f"broker {self._shown} is back")


class Worker:
    """Hosts services of ``flows`` for orchestrators that reach it through the broker at
    ``broker_url`` (see the module's docstring). :meth:`start` it, :meth:`stop` it (or use it
    as a context manager).

    ``services`` names the services to host (default: every one declared with a Python
    class); ``concurrency`` bounds the commands held at once; ``name`` is its consumer name
    (default ``host:pid``); ``claim_idle`` is how long (seconds) another consumer's entry must
    sit idle to be claimed; ``max_deliveries`` how many deliveries a command gets before it is
    dead-lettered; ``on_note(line)`` is told when the broker is lost and back (the log is too).
    ``inbox_retention`` is how long (seconds) an inbox entry is kept (default:
    :func:`inbox_retention_from_env`), ``clock`` the Unix time the inbox's times are taken
    from, ``housekeeping`` the seconds between two rounds of trimming and expiring (the
    module's docstring). Raises ``ValueError`` for services it cannot host
    (:func:`hosted_services`) or bad numbers.

    After :meth:`start`, :attr:`durability` is the warning about the broker's durability
    (:func:`durability_warning`) it logged, or ``None``.
    """

    def __init__(self, broker_url: str, flows: Sequence[Flow],
                 services: Iterable[str] | None = None, *,
                 concurrency: int = DEFAULT_CONCURRENCY, prefix: str = protocol.DEFAULT_PREFIX,
                 name: str | None = None, claim_idle: float = CLAIM_IDLE,
                 max_deliveries: int = MAX_DELIVERIES,
                 on_note: Callable[[str], None] | None = None,
                 inbox_retention: float | None = None, clock: Callable[[], float] = time.time,
                 housekeeping: float = HOUSEKEEPING,
                 around: Callable[[Any, str], Any] | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency is at least 1, got {concurrency!r}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries is at least 1, got {max_deliveries!r}")
        if claim_idle <= 0:
            raise ValueError(f"claim_idle is a number of seconds above 0, got {claim_idle!r}")
        if inbox_retention is None:
            inbox_retention = inbox_retention_from_env()
        if not inbox_retention > 0:
            raise ValueError("inbox_retention is a number of seconds above 0, got "
                             f"{inbox_retention!r}")
        self._around = around  # wraps each handler call (a tracing span: handler_span)
        # on_delivery(service, seconds): each command read for the first time, with how long
        # it waited in its stream (from its entry id's time); the metrics' queue time
        self.on_delivery: Callable[[str, float], None] | None = None
        if not housekeeping > 0:
            raise ValueError(f"housekeeping is a number of seconds above 0, got {housekeeping!r}")
        self.flows = tuple(flows)
        self.specs = hosted_services(self.flows, services)
        self.services = tuple(self.specs)
        self.name = name or default_name()
        self.prefix = prefix
        self.url = masked_url(broker_url)
        self.concurrency = concurrency
        self.max_deliveries = max_deliveries
        self.answered = 0
        self.inbox_retention = float(inbox_retention)
        self.durability: str | None = None
        self._clock = clock
        self._housekeeping_every = housekeeping
        self._untimed = dict.fromkeys(self.services, 0)  # HSCAN cursors; gone when done
        self._broker_url = broker_url
        self._claim_idle_ms = int(claim_idle * 1000)
        self._group = protocol.workers_group(prefix)
        self._replies_prefix = protocol.reply_stream(0, prefix).rpartition(":")[0] + ":"
        self._streams = {protocol.command_stream(s, prefix): s for s in self.services}
        self._note = on_note
        self._link = _Link(self.url, self._say)
        self._client: Any = None
        self._pools: dict[str, ServicePool[Any]] = {}
        self._cond = threading.Condition()
        self._held: dict[tuple[str, str], _Held] = {}   # (stream, entry id) -> held
        self._keys: dict[tuple[str, str], _Held] = {}   # (service, key) -> the one running
        self._waiting: dict[tuple[str, str], list[_Held]] = {}  # same key, behind it
        self._again: list[_Held] = []                    # to look up again (driver)
        self._answers: queue.SimpleQueue[_Answer | None] = queue.SimpleQueue()
        self._cursors = dict.fromkeys(self._streams, "0-0")
        self._turn = 0
        self._stopping = False
        self._abandon = False
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- life ------------------------------------------------------------------------------

    def start(self) -> Worker:
        """Connect (``BrokerUnavailable`` if the broker cannot be used), make the consumer
        groups, start the pools (``DefinitionUnavailable`` for a service that does not import
        or start) and the worker's threads."""
        self._client = connect(self._broker_url)
        self.durability = durability_warning(self._client, self.url)
        if self.durability is not None:
            log.warning("worker %s: %s", self.name, self.durability)
        try:
            self._ensure_groups()
            for service, spec in self.specs.items():
                self._pools[service] = self._start_pool(service, spec)
        except BaseException:
            self._abandon = True
            self._close()
            raise
        for target, role in ((self._drive, "driver"), (self._publish_loop, "publisher")):
            thread = threading.Thread(target=target, name=f"worker-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s serving %s on %s", self.name, ", ".join(self.services), self.url)
        return self

    def request_stop(self) -> None:
        """Stop reading and claiming; the commands held go on to their answers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def finished(self, timeout: float | None = None) -> bool:
        """After :meth:`request_stop`: whether every command held has been answered (and
        acknowledged), waiting up to ``timeout`` seconds for it (``None``: as long as it
        takes)."""
        driver = self._threads[0] if self._threads else None
        if driver is not None:
            driver.join(timeout)
            return not driver.is_alive()
        return True

    def close(self, timeout: float = POOL_STOP) -> None:
        """Stop at once: what is held and unanswered is left pending, for another worker to
        claim; then the pools stop (a handler still running after ``timeout`` seconds is left
        to end on its daemon thread) and the connection closes. Idempotent."""
        with self._cond:
            self._stopping = self._abandon = True
            self._cond.notify_all()
        if self._threads:
            self._threads[0].join()
        self._close(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """:meth:`request_stop`, wait for :meth:`finished` (up to ``timeout`` s), then
        :meth:`close`; whether everything held was answered."""
        self.request_stop()
        done = self.finished(timeout)
        self.close(POOL_STOP if done or timeout is None else min(POOL_STOP, timeout))
        return done

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def held(self) -> int:
        """How many commands it holds (read or claimed, not acknowledged)."""
        with self._cond:
            return len(self._held)

    def _close(self, timeout: float = POOL_STOP) -> None:
        if self._closed:
            return
        self._closed = True
        if len(self._threads) > 1:
            self._answers.put(None)  # the publisher ends after what is queued
            self._threads[1].join()
        for pool in self._pools.values():
            pool.stop(timeout)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def _start_pool(self, service: str, spec: ServiceSpec) -> ServicePool[Any]:
        cls = import_service(spec.import_path)
        try:
            objects = [cls() for _ in range(spec.instances)]
        except Exception as exc:
            raise DefinitionUnavailable(f"cannot start service {service!r} "
                                        f"({spec.import_path}): {type(exc).__name__}: {exc}"
                                        ) from None
        return ServicePool.start(service, objects, inbox=_NoInbox(), around=self._around)

    def _ensure_groups(self) -> None:
        for stream in self._streams:
            ensure_group(self._client, stream, self._group)

    def _say(self, line: str) -> None:
        log.warning("%s", line)
        if self._note is not None:
            self._note(line)

    # -- the driver: reading, claiming, keeping entries fresh --------------------------------

    def _drive(self) -> None:
        next_tick = 0.0
        next_housekeeping = time.monotonic() + self._housekeeping_every
        backoff = 0.0
        while True:
            with self._cond:
                again, self._again = self._again, []
                if self._abandon or (self._stopping and not self._held):
                    return
                stopping = self._stopping
                free = self.concurrency - len(self._held)
            try:
                if again:
                    self._accept(again)
                if time.monotonic() >= next_tick:
                    self._keep_fresh()
                    if not stopping and free > 0:
                        free -= self._claim(free)
                    next_tick = time.monotonic() + TICK
                if not stopping and time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + self._housekeeping_every
                    self.housekeeping()
                if stopping or free <= 0:
                    with self._cond:
                        self._cond.wait_for(self._changed(stopping),
                                            max(0.0, next_tick - time.monotonic()))
                else:
                    wait_ms = int(max(0.0, next_tick - time.monotonic()) * 1000)
                    self._read(free, max(1, min(READ_BLOCK_MS, wait_ms)))
                self._link.ok()
                backoff = 0.0
            except Exception as exc:
                backoff = self._trouble(exc, backoff)
                with self._cond:
                    self._cond.wait_for(lambda: self._abandon, backoff)

    def _changed(self, stopping: bool) -> Callable[[], bool]:
        """Whether the driver, waiting for room (or, ``stopping``, for the end), has something
        to do: entries to look up again, room to read into, nothing held any more."""
        def changed() -> bool:
            if self._again or self._abandon or self._stopping != stopping:
                return True
            return not self._held if stopping else len(self._held) < self.concurrency
        return changed

    def _trouble(self, exc: Exception, backoff: float) -> float:
        """What an error of the broker (or a bug) means, and how long to wait before going on."""
        if "NOGROUP" in str(exc):  # the server came back without its data: groups anew
            log.warning("worker %s: consumer groups missing (%s); making them again",
                        self.name, exc)
            with contextlib.suppress(Exception):
                self._ensure_groups()
            return 0.05
        if is_transient(exc):
            self._link.lost(exc)
            return min(MAX_BACKOFF, max(0.1, backoff * 2))
        log.error("worker %s: unexpected error, going on", self.name, exc_info=exc)
        return min(MAX_BACKOFF, max(0.5, backoff * 2))

    def _read(self, free: int, block_ms: int) -> None:
        """Read at most ``free`` new commands. ``COUNT`` is per stream: with room for at least
        one per stream, one blocking read of them all, the room shared out; with less, one
        stream after another without blocking (rotating, so none starves), then a pause of
        up to :data:`POLL` s if none had any."""
        streams = list(self._streams)
        self._turn = (self._turn + 1) % len(streams)
        streams = streams[self._turn:] + streams[:self._turn]
        if free >= len(streams):
            self._take(read_group(self._client, self._group, self.name, streams,
                                  count=free // len(streams), block_ms=block_ms))
            return
        for stream in streams:
            free -= self._take(read_group(self._client, self._group, self.name, [stream],
                                          count=free))
            if free <= 0:
                return
        with self._cond:
            held = len(self._held)
            self._cond.wait_for(lambda: self._again or self._stopping or len(self._held) != held,
                                min(POLL, block_ms / 1000))

    def _take(self, found: Any) -> int:
        """Hold and accept what ``XREADGROUP`` found; how many."""
        entries = [(stream, entry_id, fields, 1)
                   for stream, items in _stream_items(found)
                   for entry_id, fields in items if fields is not None]
        if entries:
            if self.on_delivery is not None:
                self._delivered(entries)
            self._accept(self._hold(entries))
        return len(entries)

    def _delivered(self, entries: Sequence[tuple[str, str, Any, int]]) -> None:
        now = self._clock()
        for stream, entry_id, _, _ in entries:
            try:
                waited = now - int(entry_id.partition("-")[0]) / 1000
                self.on_delivery(self._streams[stream], max(0.0, waited))  # type: ignore[misc]
            except Exception:  # a metric must never stop the worker
                log.exception("worker %s: on_delivery failed", self.name)

    def _claim(self, free: int) -> int:
        """Claim up to ``free`` entries idle for ``claim_idle`` in another consumer's hands
        (a dead worker's); how many were taken."""
        taken = 0
        for stream in self._streams:
            if taken >= free:
                break
            result = self._client.xautoclaim(stream, self._group, self.name,
                                             self._claim_idle_ms, self._cursors[stream],
                                             count=free - taken)
            self._cursors[stream] = result[0]
            gone = [entry_id for entry_id, fields in result[1] if fields is None]
            if gone:  # trimmed away (redis-server 6.2 still lists them): nothing to answer
                self._client.xack(stream, self._group, *gone)
            with self._cond:
                new = [(entry_id, fields) for entry_id, fields in result[1]
                       if fields is not None and (stream, entry_id) not in self._held]
            if not new:
                continue
            pipe = self._client.pipeline(transaction=False)
            for entry_id, _ in new:
                pipe.xpending_range(stream, self._group, entry_id, entry_id, 1)
            counts = [found[0]["times_delivered"] if found else 1 for found in pipe.execute()]
            log.info("worker %s claimed %d command(s) of %s", self.name, len(new), stream)
            self._accept(self._hold([(stream, entry_id, fields, count) for (entry_id, fields),
                                     count in zip(new, counts, strict=True)]))
            taken += len(new)
        return taken

    def housekeeping(self) -> tuple[int, int]:
        """One round of housekeeping (the module's docstring), as the driver does it every
        ``housekeeping`` seconds: how many command stream entries were trimmed and how many
        inbox entries expired."""
        trimmed = sum(trim_acknowledged(self._client, stream, self._group)
                      for stream in self._streams)
        now = self._clock()
        expired = 0
        for service in self.services:
            inbox = protocol.inbox_key(service, self.prefix)
            times = inbox_times_key(service, self.prefix)
            cursor = self._untimed.get(service)
            for _ in range(EXPIRE_BATCHES if cursor is not None else 0):
                cursor = time_untimed(self._client, inbox, times, cursor or 0, now)
                self._untimed[service] = cursor
                if cursor == 0:
                    del self._untimed[service]
                    break
            if self.inbox_retention != float("inf"):
                expired += expire_inbox(self._client, inbox, times, now - self.inbox_retention,
                                        max_batches=EXPIRE_BATCHES)
        if trimmed or expired:
            log.info("worker %s: %d command entries trimmed, %d inbox entries expired",
                     self.name, trimmed, expired)
        return trimmed, expired

    def _keep_fresh(self) -> None:
        """Reset the idle time of the entries held (those still this worker's: one another
        worker took while this one was cut off is not taken back)."""
        with self._cond:
            held = list(self._held.values())
        if not held:
            return
        pipe = self._client.pipeline(transaction=False)
        for h in held:
            pipe.xpending_range(h.stream, self._group, h.entry_id, h.entry_id, 1)
        mine: dict[str, list[str]] = {}
        for h, found in zip(held, pipe.execute(), strict=True):
            if not found:
                continue  # acknowledged since (answered), or gone with the server's data
            if found[0]["consumer"] == self.name:
                mine.setdefault(h.stream, []).append(h.entry_id)
            elif not h.stolen:
                h.stolen = True
                log.warning("worker %s: %s %s is no longer its own (claimed by another worker "
                            "while this one was cut off?); answering it all the same",
                            self.name, h.stream, h.entry_id)
        pipe = self._client.pipeline(transaction=False)
        for stream, ids in mine.items():
            pipe.xclaim(stream, self._group, self.name, 0, ids, justid=True)
        pipe.execute()

    def _hold(self, entries: Sequence[tuple[str, str, Mapping[str, Any], int]]) -> list[_Held]:
        held = [_Held(self._streams[stream], stream, entry_id, fields, deliveries,
                      self._on_reply) for stream, entry_id, fields, deliveries in entries]
        with self._cond:
            for h in held:
                self._held[h.stream, h.entry_id] = h
        return held

    # -- what a command gets ---------------------------------------------------------------

    def _accept(self, entries: Sequence[_Held]) -> None:
        """Answer or run each held entry (module docstring: steps 1-4)."""
        runnable = []
        for h in entries:
            answer = self._check(h)
            if answer is not None:
                self._answers.put(answer)
                continue
            with self._cond:
                running = self._keys.setdefault(h.key, h)
                if running is not h:
                    self._waiting.setdefault(h.key, []).append(h)
                    continue
            runnable.append(h)
        if not runnable:
            return
        try:
            stored = self._look_up(runnable)
        except BaseException:
            with self._cond:  # looked up again on the driver's next round
                self._again[:0] = runnable
            raise
        for h, found in zip(runnable, stored, strict=True):
            self._start(h, found)

    def _check(self, h: _Held) -> _Answer | None:
        """Step 1: the answer to an entry that is no command this worker can run, or ``None``."""
        try:
            h.command = protocol.decode(h.fields, "command")
        except protocol.ProtocolError as exc:
            salvaged = _salvage(h.fields)
            if salvaged is None or not self._replies_to(salvaged):
                return self._dead(h, f"not a command: {exc}")
            return self._dead(h, f"not a command: {exc}", salvaged, reason=(
                f"not a command of protocol {protocol.PROTOCOL}: {exc}"))
        command = h.command
        if not self._replies_to(command):
            return self._dead(h, f"reply_to {command.get('reply_to')!r} is not a reply stream "
                                 f"({self._replies_prefix}<partition>)")
        if command.get("protocol") != protocol.PROTOCOL:
            return self._error(h, f"protocol version {command.get('protocol')!r} is unknown "
                                  f"to this worker (it speaks {protocol.PROTOCOL})")
        return None

    def _replies_to(self, message: Mapping[str, Any]) -> bool:
        reply_to = message.get("reply_to")
        return isinstance(reply_to, str) and reply_to.startswith(self._replies_prefix)

    def _look_up(self, runnable: Sequence[_Held]) -> list[dict[str, Any] | None]:
        """Each command's inbox entry (one round trip), leaving a compensation's tombstone
        with its time (in one ``MULTI`` when there is one)."""
        tombstones = [self._tombstone(h.command or {}) for h in runnable]
        if all(t is None for t in tombstones):
            return self._look_up_actions(runnable)
        now = self._clock()
        pipe = self._client.pipeline(transaction=True)
        for h, tombstone in zip(runnable, tombstones, strict=True):
            inbox = protocol.inbox_key(h.service, self.prefix)
            pipe.hget(inbox, h.key[1])
            if tombstone is not None:
                pipe.hsetnx(inbox, *tombstone)
                stamp(pipe, inbox_times_key(h.service, self.prefix), tombstone[0], now,
                      keep_older=True)
        results = iter(pipe.execute())
        found = []
        for h, tombstone in zip(runnable, tombstones, strict=True):
            found.append(_stored(next(results), h))
            if tombstone is not None:
                next(results)
                next(results)
        return found

    def _look_up_actions(self, runnable: Sequence[_Held]) -> list[dict[str, Any] | None]:
        """:meth:`_look_up` without tombstones to leave: one ``HMGET`` per inbox."""
        by_inbox: dict[str, list[int]] = {}
        for i, h in enumerate(runnable):
            by_inbox.setdefault(protocol.inbox_key(h.service, self.prefix), []).append(i)
        answers = round_trip(self._client, [
            ("HMGET", inbox, *[runnable[i].key[1] for i in indexes])
            for inbox, indexes in by_inbox.items()])
        found: list[dict[str, Any] | None] = [None] * len(runnable)
        for indexes, texts in zip(by_inbox.values(), answers, strict=True):
            for i, text in zip(indexes, texts, strict=True):
                found[i] = _stored(text, runnable[i])
        return found

    def _start(self, h: _Held, stored: dict[str, Any] | None) -> None:
        """Steps 2-4 for one command looked up."""
        command = h.command
        assert command is not None
        if stored is not None:
            self._answers.put(_Answer(h, protocol.make_reply(
                command, stored["outcome"], result=stored.get("result"),
                reason=stored.get("reason"), replayed=True, worker=self.name),
                command["reply_to"]))
            return
        if h.deliveries > self.max_deliveries:
            why = f"dead-lettered after {h.deliveries} deliveries"
            self._answers.put(self._dead(h, why, command, reason=(
                f"{why} (more than {self.max_deliveries}: does its handler crash or hang "
                "its worker?)")))
            return
        try:
            actor_command = Command(
                command_id=str(command["command_id"]), saga_id=str(command["saga_id"]),
                step=str(command["step"]), phase=command["phase"], name=str(command["handler"]),
                attempt=int(command["attempt"]), key=str(command["key"]),
                payload=command["payload"] if command["payload"] is not None else {},
                result=command["result"], timeout_at=command["deadline"])
        except (TypeError, ValueError) as exc:
            self._answers.put(self._error(h, f"a command this worker cannot run: {exc}"))
            return
        self._pools[h.service].tell(actor_command, h)

    def _on_reply(self, h: _Held, reply: Reply) -> None:
        """A pool's reply (on its actor thread, so it never raises): the answer to publish."""
        command = h.command
        assert command is not None
        outcome = _OUTCOME[reply.outcome]
        try:
            message = protocol.make_reply(command, outcome, result=reply.output,
                                          reason=reply.error, replayed=reply.replayed,
                                          worker=self.name)
            definitive = outcome == "ok" or (outcome == "rejected"
                                             and command["phase"] == "action")
            answer = _Answer(h, message, command["reply_to"],
                             keep=_json(message) if definitive else None,
                             tombstone=self._tombstone(command))
        except Exception as exc:  # a result JSON cannot carry: an error, as in-process
            answer = self._error(h, f"its reply cannot be sent: {type(exc).__name__}: {exc}")
        self._answers.put(answer)

    def _tombstone(self, command: Mapping[str, Any]) -> tuple[str, str] | None:
        """A compensation's (action key, tombstone JSON); ``None`` for an action."""
        if command.get("phase") != "compensation":
            return None
        key = str(command.get("key", ""))
        action = (key[:-len(_COMPENSATION)] if key.endswith(_COMPENSATION)
                  else action_key(str(command.get("saga_id")), str(command.get("step"))))
        reply = protocol.make_reply(
            {**command, "key": action, "phase": "action", "command_id": None}, "rejected",
            reason=f"compensated before it ran: {key} ran first; not run", worker=self.name)
        return action, _json(reply)

    def _error(self, h: _Held, reason: str) -> _Answer:
        """An ``error`` reply to a command that does not run."""
        command = h.command
        assert command is not None
        return _Answer(h, protocol.make_reply(command, "error", reason=reason, worker=self.name),
                       command["reply_to"])

    def _dead(self, h: _Held, why: str, command: Mapping[str, Any] | None = None, *,
              reason: str = "") -> _Answer:
        """To the dead letters (``why``), and answered ``error`` (``reason``) if ``command``
        (the entry's message, as far as it could be read) says where."""
        log.warning("worker %s: %s %s goes to the dead letters: %s", self.name, h.stream,
                    h.entry_id, why)
        reply = reply_to = None
        if command is not None:
            reply = protocol.make_reply(command, "error", reason=reason, worker=self.name)
            reply_to = command["reply_to"]
        body = h.fields.get("body")
        return _Answer(h, reply, reply_to, dead={
            "body": body if isinstance(body, str) else json.dumps(dict(h.fields), default=str),
            "reason": why, "deliveries": str(h.deliveries), "worker": self.name,
            "entry": h.entry_id})

    # -- the publisher -----------------------------------------------------------------------

    def _publish_loop(self) -> None:
        done = False
        while not done:
            batch: list[_Answer] = []
            first = self._answers.get()
            if first is None:
                done = True
            else:
                batch.append(first)
            while len(batch) < PUBLISH_BATCH:
                try:
                    more = self._answers.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                else:
                    batch.append(more)
            if batch:
                try:
                    self._publish(batch)
                except Exception:  # a bug: said, and the entries let go (claimed again later)
                    log.exception("worker %s: publishing %d answer(s) failed", self.name,
                                  len(batch))
                    self._release([answer.held for answer in batch])

    def _publish(self, batch: Sequence[_Answer]) -> None:
        """Write ``batch`` in one ``MULTI``/``EXEC`` (retried while the broker is away, unless
        the worker is abandoning what it holds), then let its entries go."""
        backoff = 0.0
        while True:
            now = self._clock()
            if all(answer.tombstone is None and answer.dead is None for answer in batch):
                writes = self._plain_writes(batch, now)
            else:
                writes = [write for answer in batch for write in self._writes(answer, now)]
            try:
                round_trip(self._client, writes, transaction=True)
            except Exception as exc:
                if is_transient(exc) and not self._abandon:
                    self._link.lost(exc)
                    backoff = min(MAX_BACKOFF, max(0.1, backoff * 2))
                    time.sleep(backoff)
                    continue
                if is_transient(exc):
                    log.warning("worker %s: %d answer(s) not written (stopping): %s; their "
                                "commands stay pending for another worker", self.name,
                                len(batch), exc)
                else:  # a reply_to that is no stream, say: the others were written
                    log.error("worker %s: writing %d answer(s) failed: %s", self.name,
                              len(batch), exc)
            else:
                self._link.ok()
                self.answered += len(batch)
            break
        self._release([answer.held for answer in batch])

    def _writes(self, answer: _Answer, now: float) -> list[tuple[Any, ...]]:
        """What one answer writes (in its batch's ``MULTI``): the inbox entry kept and its
        time, a tombstone unless its action has an entry (and its time unless it has one),
        a dead letter, the reply, the command's ``XACK``."""
        h = answer.held
        inbox = protocol.inbox_key(h.service, self.prefix)
        times = inbox_times_key(h.service, self.prefix)
        writes: list[tuple[Any, ...]] = []
        if answer.keep is not None:
            writes += [("HSET", inbox, h.key[1], answer.keep), ("ZADD", times, now, h.key[1])]
        if answer.tombstone is not None:
            writes += [("HSETNX", inbox, *answer.tombstone),
                       ("ZADD", times, "NX", now, answer.tombstone[0])]
        if answer.dead is not None:
            writes.append(("XADD", protocol.dead_stream(h.service, self.prefix), "*",
                           *[x for pair in answer.dead.items() for x in pair]))
        if answer.reply is not None and answer.reply_to is not None:
            writes.append(("XADD", answer.reply_to, "*", "body", answer.body()))
        writes.append(("XACK", h.stream, self._group, h.entry_id))
        return writes

    def _plain_writes(self, batch: Sequence[_Answer], now: float) -> list[tuple[Any, ...]]:
        """What :meth:`_writes` writes for a batch of answers without tombstones or dead
        letters, in fewer commands (for one ``MULTI``): one ``HSET`` and one ``ZADD`` per
        inbox for the entries kept, the replies, one ``XACK`` per command stream."""
        kept: dict[str, dict[str, str]] = {}
        acks: dict[str, list[str]] = {}
        writes: list[tuple[Any, ...]] = []
        for answer in batch:
            h = answer.held
            if answer.keep is not None:
                kept.setdefault(h.service, {})[h.key[1]] = answer.keep
            if answer.reply is not None and answer.reply_to is not None:
                writes.append(("XADD", answer.reply_to, "*", "body", answer.body()))
            acks.setdefault(h.stream, []).append(h.entry_id)
        for service, entries in kept.items():
            writes.append(("HSET", protocol.inbox_key(service, self.prefix),
                           *[x for pair in entries.items() for x in pair]))
            writes.append(("ZADD", inbox_times_key(service, self.prefix),
                           *[x for key in entries for x in (now, key)]))
        writes += [("XACK", stream, self._group, *ids) for stream, ids in acks.items()]
        return writes

    def _release(self, held: Sequence[_Held]) -> None:
        """Entries answered: room for more, and a command waiting for its key goes on."""
        with self._cond:
            for h in held:
                self._held.pop((h.stream, h.entry_id), None)
                if h.command is None or self._keys.get(h.key) is not h:
                    continue
                del self._keys[h.key]
                waiting = self._waiting.pop(h.key, [])
                if waiting:
                    self._keys[h.key] = waiting[0]
                    if len(waiting) > 1:
                        self._waiting[h.key] = waiting[1:]
                    self._again.append(waiting[0])
            self._cond.notify_all()


def _stream_items(found: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``XREADGROUP``'s answer as ``(stream, entries)`` pairs (RESP2 list or RESP3 map)."""
    if not found:
        return []
    if isinstance(found, Mapping):
        return [(stream, items[0] if items and isinstance(items[0], list) else items)
                for stream, items in found.items()]
    return [(stream, items) for stream, items in found]


def _salvage(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """What can be read of a body that is not a command (to reply to it if it says where)."""
    try:
        message = json.loads(fields.get("body") or "")
    except (TypeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def _stored(text: str | None, h: _Held) -> dict[str, Any] | None:
    """An inbox entry's reply, or ``None`` (none, or one that cannot be read: run again)."""
    if text is None:
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or stored.get("outcome") not in protocol.OUTCOMES:
        log.warning("inbox entry %s of %s is not a reply; the command runs", h.key[1], h.service)
        return None
    return stored


def _json(message: Mapping[str, Any]) -> str:
    return protocol.encode_body(message)
