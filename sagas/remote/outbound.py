"""The orchestrator's side of remote services: commands published to Redis Streams, replies
read back and handed to the shards (the protocol: :mod:`.protocol`).

A :class:`RemoteService` stands where a service pool stands for a shard: its ``tell_many``
publishes the commands (after their events are committed, as the shard sends nothing before).
One :class:`BrokerLink` per runtime publishes, keeps a saga's commands to one service in
order, and reads the reply streams of the partitions the runtime drives.

**Order per saga and service.** In-process, a service's mailbox keeps a compensation from
overtaking its action. Over the broker, two workers could run them at once (the action timed
out here but still runs there). So a command for ``(saga, service)`` is published only when the
previous one published for that pair has been answered (its reply read here) or is no longer
pending in the workers' group (acknowledged, dead-lettered, or lost with a crashed
redis-server); meanwhile it waits here, checked every :data:`RECHECK` seconds.

**Replies** are acknowledged only after the events they caused are committed: the shard calls
back once its commit is durable. A reply stream's entries left unacknowledged by an
orchestrator that died are claimed by whoever drives the partition next.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from actors import thaw

from . import protocol
from .broker import connect, ensure_group, masked_url
from .retention import trim_acknowledged
from .wire import read_group, round_trip

__all__ = ["BrokerLink", "RemoteService"]

log = logging.getLogger(__name__)

RECHECK = 0.2
"""Seconds between checks of commands waiting for their saga's previous one to a service."""
READ_BLOCK_MS = 100
MAX_SEND = 2000
"""Commands and acknowledgements one pipeline carries at most."""
CLAIM_EVERY = 1.0
CLAIM_IDLE_MS = 2000
TRIM_EVERY = 5.0
"""Seconds between trims of the reply streams read here (never past an unacknowledged
entry: :func:`~.retention.trim_acknowledged`)."""
OUTCOME = {"ok": "succeeded", "rejected": "rejected", "error": "error"}


class RemoteService:
    """A service placed in workers: what a shard sends to it is published to its stream."""

    instances: tuple[Any, ...] = ()

    def __init__(self, link: BrokerLink, name: str) -> None:
        self.link = link
        self.name = name

    def tell_many(self, commands: Sequence[Any], reply_to: Any) -> None:
        self.link.publish(self.name, commands)

    def tell(self, command: Any, reply_to: Any) -> None:
        self.link.publish(self.name, [command])

    def __len__(self) -> int:
        return 0

    def stop(self, timeout: float = 5.0) -> bool:
        return True

    def __repr__(self) -> str:
        return f"RemoteService({self.name!r})"


class BrokerLink:
    """Publishing commands and reading replies for one runtime.

    ``partitions()`` returns the partitions whose replies this runtime reads now (all of them
    for a runtime alone on its store; a member's held ones), ``partition_count`` the store's
    number of partitions, ``deliver(replies, ack)`` hands ``(reply, entry id)`` pairs to the
    shards of their sagas, in order, each of which calls ``ack(its entry ids)`` once what they
    caused is committed.
    """

    def __init__(self, url: str, consumer: str, *, partition_count: int,
                 partitions: Callable[[], Iterable[int]],
                 deliver: Callable[[list[tuple[Any, str]], Callable[[list[str]], None]], None],
                 prefix: str = protocol.DEFAULT_PREFIX, faults: Any = None) -> None:
        self.url = url
        self.consumer = consumer
        self.prefix = prefix
        self.partition_count = partition_count
        self._partitions = partitions
        self._deliver = deliver
        self.faults = faults  # an actors.FaultInjector, consulted here for remote services
        self._dropped_replies: set[str] = set()  # run_then_drop: their replies are ignored
        self.redis = connect(url)  # BrokerUnavailable (one line) if it cannot be reached now
        self.display_url = masked_url(url)
        self._lock = threading.Lock()
        # (saga_id, service) -> (command_id, stream entry id) of the last command published
        # and not answered yet (forgotten once its reply is read: the map stays small)
        self._last: dict[tuple[str, str], tuple[str, str]] = {}
        self._waiting: dict[tuple[str, str], list[Any]] = {}  # commands held back, in order
        self._groups: set[str] = set()
        self._stop = threading.Event()
        self._outbox: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._sending, daemon=True,
                                        name=f"sagactor-commands-{consumer}")
        self._sender.start()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"sagactor-replies-{consumer}")
        self._reader.start()

    # -- commands ------------------------------------------------------------------------------
    def publish(self, service: str, commands: Sequence[Any]) -> None:
        """Publish ``commands`` for ``service``, each after the previous command of its saga
        to that service was answered."""
        ready: list[tuple[str, Any]] = []
        if self.faults is not None:
            commands = self._inject(service, commands)
        with self._lock:
            for command in commands:
                pair = (command.saga_id, service)
                if pair in self._waiting or self._busy(pair):
                    self._waiting.setdefault(pair, []).append(command)
                else:
                    ready.append((service, command))
        if ready:
            self._send(ready)

    def _inject(self, service: str, commands: Sequence[Any]) -> list[Any]:
        """Fault injection at the service's boundary, as in process (``saga run --fail``): a
        ``reject`` or ``error`` is answered here without publishing, a ``drop`` is never
        published (its attempt times out), a ``run_then_drop`` runs in a worker but its reply
        is ignored, a ``duplicate`` is published twice."""
        from actors import Reply

        sent: list[Any] = []
        for command in commands:
            fault = self.faults.decide(command)
            kind = fault.kind if fault is not None else None
            if kind in ("reject", "error"):
                outcome = "rejected" if kind == "reject" else "error"
                reply = Reply(command=command, outcome=outcome, output=None,
                              error=fault.message or f"injected {kind}",  # type: ignore[union-attr]
                              replayed=False, service=service, instance=0)
                self._deliver([(reply, "")], _nothing)
                continue
            if kind == "drop":
                continue
            if kind == "run_then_drop":
                with self._lock:
                    self._dropped_replies.add(command.command_id)
            sent.append(command)
            if kind == "duplicate":
                sent.append(command)
        return sent

    def _busy(self, pair: tuple[str, str]) -> bool:
        last = self._last.get(pair)
        return last is not None

    def _send(self, batch: list[tuple[str, Any]]) -> None:
        """Queue ``batch`` for the sender thread (:meth:`_sending`); the pair's last command
        is this one from now on (its entry id known once it is added)."""
        with self._lock:
            for service, command in batch:
                self._last[(command.saga_id, service)] = (command.command_id, None)
        for item in batch:
            self._outbox.put(("xadd", item))

    def _sending(self) -> None:
        """The sender thread: what was queued meanwhile — commands to add, replies to
        acknowledge — goes out in one pipeline, one round trip to the broker, in queue order
        (a shard's commands after the commit that decided them, as queued)."""
        while True:
            item = self._outbox.get()
            batch = [item]
            while len(batch) < MAX_SEND:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            stop = any(entry is None for entry in batch)
            self._flush_outbox([entry for entry in batch if entry is not None])
            if stop:
                return

    def _flush_outbox(self, batch: list[tuple[str, Any]]) -> None:
        if not batch:
            return
        group = protocol.orchestrators_group(self.prefix)
        commands: list[tuple[Any, ...]] = []
        added: list[tuple[str, Any]] = []
        acks: dict[str, list[str]] = {}  # one XACK per stream, with all its ids
        for kind, what in batch:
            if kind == "xadd":
                service, command = what
                commands.append(("XADD", protocol.command_stream(service, self.prefix), "*",
                                 "body", protocol.encode_body(self._envelope(service, command))))
                added.append(what)
            else:
                stream, ids = what
                acks.setdefault(stream, []).extend(ids)
        commands += [("XACK", stream, group, *ids) for stream, ids in acks.items()]
        try:
            results = round_trip(self.redis, commands)
        except Exception as exc:  # attempts time out and are retried; replies are read again
            log.warning("could not send %d commands and acknowledgements to %s (%s); the "
                        "attempts time out and are retried", len(batch), self.display_url, exc)
            return
        entries = results[:len(added)]
        with self._lock:
            for (service, command), entry in zip(added, entries, strict=True):
                pair = (command.saga_id, service)
                if self._last.get(pair) == (command.command_id, None):
                    self._last[pair] = (command.command_id, _text(entry))

    def _envelope(self, service: str, command: Any) -> dict[str, Any]:
        partition = protocol.partition_of(command.saga_id, self.partition_count)
        return {
            "protocol": protocol.PROTOCOL, "command_id": command.command_id,
            "key": command.key, "saga_id": command.saga_id, "step": command.step,
            "phase": command.phase, "attempt": command.attempt, "service": service,
            "handler": command.name, "payload": thaw(command.payload),
            "result": thaw(command.result) if command.result is not None else None,
            "reply_to": protocol.reply_stream(partition, self.prefix),
            "deadline": command.timeout_at, "tracestate": None,
            "traceparent": protocol.traceparent(command.saga_id, command.step, command.phase,
                                                command.attempt),
        }

    def _release_waiting(self) -> None:
        """Publish the held-back commands whose predecessor was answered, or is no longer
        pending among the workers."""
        with self._lock:
            pairs = list(self._waiting)
        ready: list[tuple[str, Any]] = []
        for pair in pairs:
            with self._lock:
                last = self._last.get(pair)
                answered = last is None
            if not answered and last[1] is not None and \
                    not self._still_pending(pair[1], last[1]):  # type: ignore[index]
                answered = True  # acknowledged without a reply read here, or lost
                with self._lock:
                    if self._last.get(pair) == last:
                        del self._last[pair]
            if answered:
                with self._lock:
                    queued = self._waiting.pop(pair, [])
                    if queued:
                        first, rest = queued[0], queued[1:]
                        ready.append((pair[1], first))
                        if rest:
                            self._waiting[pair] = rest
        if ready:
            self._send(ready)

    def _still_pending(self, service: str, entry_id: str) -> bool:
        """Whether the command entry may still be handled by a worker: pending in the
        workers' group (read, not acknowledged), or not read by any worker yet."""
        stream = protocol.command_stream(service, self.prefix)
        group = protocol.workers_group(self.prefix)
        try:
            if self.redis.xpending_range(stream, group, min=entry_id, max=entry_id, count=1):
                return True
            for info in self.redis.xinfo_groups(stream):
                if _text(info.get("name", info.get(b"name", b""))) == group:
                    delivered = _text(info.get("last-delivered-id",
                                               info.get(b"last-delivered-id", b"0-0")))
                    return _entry_key(entry_id) > _entry_key(delivered)
        except Exception:  # no group yet (no worker has read the stream), or unreachable
            return True
        return True  # no workers' group yet: nobody has read it

    # -- replies -------------------------------------------------------------------------------
    def _read(self) -> None:
        group = protocol.orchestrators_group(self.prefix)
        last_claim = last_trim = 0.0
        failing = False
        while not self._stop.is_set():
            try:
                streams = [protocol.reply_stream(p, self.prefix) for p in self._partitions()]
                for stream in streams:
                    if stream not in self._groups:
                        ensure_group(self.redis, stream, group)
                        self._groups.add(stream)
                if time.monotonic() - last_claim > CLAIM_EVERY:
                    last_claim = time.monotonic()
                    if streams:
                        self._claim(streams, group)
                    self._release_waiting()
                if time.monotonic() - last_trim > TRIM_EVERY:
                    last_trim = time.monotonic()
                    for stream in streams:
                        trim_acknowledged(self.redis, stream, group)
                if not streams:
                    self._stop.wait(READ_BLOCK_MS / 1000)
                    continue
                for stream, entries in read_group(self.redis, group, self.consumer, streams,
                                                  count=500, block_ms=READ_BLOCK_MS):
                    self._handle(stream, entries)
                if self._waiting:
                    self._release_waiting()
                if failing:
                    failing = False
                    log.warning("broker %s answers again", self.display_url)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if not failing:
                    failing = True
                    log.warning("broker %s cannot be reached (%s); retrying", self.display_url,
                                exc)
                self._groups.clear()
                self._stop.wait(0.5)

    def _claim(self, streams: list[str], group: str) -> None:
        """Take the replies another orchestrator read but never acknowledged (it died): one
        ``XAUTOCLAIM`` per stream, all in one pipeline (a stream with more left is claimed on
        at the next round)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xautoclaim(stream, group, self.consumer, CLAIM_IDLE_MS, start_id="0-0",
                            count=500)
        for stream, result in zip(streams, pipe.execute(), strict=True):
            if result[1]:
                self._handle(stream, result[1])

    def _handle(self, stream: str, entries: list[Any]) -> None:
        replies: list[tuple[Any, str]] = []
        junk: list[str] = []
        for entry_id, fields in entries:
            entry_id = _text(entry_id)
            if not fields:  # deleted meanwhile
                junk.append(entry_id)
                continue
            try:
                message = protocol.decode(fields, "reply")
                reply = _reply(message)
            except Exception as exc:
                log.warning("a reply on %s that is not one (%s): dropped", stream, exc)
                junk.append(entry_id)
                continue
            pair = (message["saga_id"], message["service"])
            with self._lock:
                last = self._last.get(pair)
                if last is not None and last[0] == message["command_id"]:
                    del self._last[pair]  # answered: the pair's next command may go
                dropped = message["command_id"] in self._dropped_replies
                self._dropped_replies.discard(message["command_id"])
            if dropped:  # an injected run_then_drop: the worker ran it, the reply is lost
                junk.append(entry_id)
                continue
            replies.append((reply, entry_id))
        if junk:
            self._ack(stream, junk)
        if replies:
            self._deliver(replies, lambda ids, s=stream: self._ack(s, ids))

    def _ack(self, stream: str, ids: list[str]) -> None:
        """Acknowledge replies (called once what they caused is committed): queued for the
        sender thread's next pipeline."""
        self._outbox.put(("xack", (stream, ids)))

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._reader.join(timeout)
        self._outbox.put(None)  # what is queued goes out first
        self._sender.join(timeout)
        with contextlib.suppress(Exception):  # best effort
            self.redis.close()


def _nothing(ids: list[str]) -> None:
    """The acknowledgement of a reply that never was on the broker."""


def _entry_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reply(message: dict[str, Any]) -> Any:
    from actors import Command, Reply

    if message.get("protocol") != protocol.PROTOCOL:
        raise protocol.ProtocolError(f"protocol {message.get('protocol')!r}")
    outcome = OUTCOME.get(message["outcome"])
    if outcome is None:
        raise protocol.ProtocolError(f"unknown outcome {message['outcome']!r}")
    command = Command(command_id=message["command_id"], saga_id=message["saga_id"],
                      step=message["step"], phase=message["phase"], name="",
                      attempt=int(message["attempt"]), key=message["key"], payload={})
    result = message.get("result")
    output = dict(result) if outcome == "succeeded" and isinstance(result, dict) else (
        {} if outcome == "succeeded" else None)
    error = None if outcome == "succeeded" else str(message.get("reason") or outcome)
    return Reply(command=command, outcome=outcome, output=output, error=error,
                 replayed=bool(message.get("replayed")), service=str(message["service"]),
                 instance=0)
