"""The dead letters: commands the workers gave up on, in ``<prefix>:dead:<service>``.

A worker dead-letters a command delivered more than ``max_deliveries`` times (its handler
crashed or hung its workers) and an entry that is no command of the protocol (see
:mod:`.worker`). A dead letter's fields: ``body`` (the command entry's body, as it was),
``reason`` (why), ``deliveries``, ``worker`` (who gave up) and ``entry`` (the command entry's id
on its stream). A command dead-lettered was answered ``error`` to its saga at the same time
(when it said where to reply), so the saga counted a failed attempt and went on by its retry
policy.

What an operator does with them (``saga dead-letters``):

- :func:`read_dead_letters` lists them (every service's: the streams found by ``SCAN``);
- :func:`replay` puts each back on its service's command stream, a new entry with the same
  body (so the same idempotency key: if the saga's own retry was answered meanwhile, the
  worker answers from its inbox without running the handler again), and deletes it from the
  dead letters, both in one ``MULTI``/``EXEC`` per entry (``WATCH``\\ ed, so that two replays
  at once put it back once);
- :func:`purge` deletes them.

No click here: :mod:`sagas.commands.dead_letters` is the command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import protocol

__all__ = [
    "AmbiguousDeadLetter",
    "DeadLetter",
    "NotReplayable",
    "UnknownDeadLetter",
    "dead_services",
    "find_dead_letters",
    "purge",
    "read_dead_letters",
    "replay",
]

PAGE = 1000
"""Entries read per ``XRANGE``."""
WATCH_TRIES = 20
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


class UnknownDeadLetter(LookupError):
    """Entry ids that are no dead letter (``ids``: each of them)."""

    def __init__(self, ids: Sequence[str], where: str) -> None:
        self.ids = list(ids)
        shown = ", ".join(self.ids)
        super().__init__(f"no dead letter {shown} in {where}" if len(self.ids) == 1 else
                         f"no dead letters {shown} in {where}")


class AmbiguousDeadLetter(LookupError):
    """An entry id found in the dead letters of more than one service."""


class NotReplayable(ValueError):
    """A dead letter whose body is no command of this protocol: replayed, it would only be
    dead-lettered again."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter stream. ``command`` is its body as a JSON object (``None``
    when it is not one); ``deliveries`` ``None`` when the entry does not say."""

    service: str
    stream: str
    entry_id: str
    body: str
    reason: str
    deliveries: int | None
    worker: str
    command_entry: str
    command: dict[str, Any] | None

    @classmethod
    def of(cls, service: str, stream: str, entry_id: str, fields: Any) -> DeadLetter:
        fields = {_text(k): _text(v) for k, v in (fields or {}).items()}
        body = fields.get("body", "")
        try:
            command = json.loads(body)
        except ValueError:
            command = None
        deliveries = fields.get("deliveries", "")
        return cls(service=service, stream=stream, entry_id=entry_id, body=body,
                   reason=fields.get("reason", ""),
                   deliveries=int(deliveries) if deliveries.isdigit() else None,
                   worker=fields.get("worker", ""), command_entry=fields.get("entry", ""),
                   command=command if isinstance(command, dict) else None)

    def _field(self, name: str) -> Any:
        return None if self.command is None else self.command.get(name)

    @property
    def when(self) -> float:
        """When it was dead-lettered (Unix seconds: its entry id's milliseconds)."""
        return int(self.entry_id.partition("-")[0]) / 1000

    @property
    def key(self) -> Any:
        return self._field("key")

    @property
    def saga_id(self) -> Any:
        return self._field("saga_id")

    @property
    def step(self) -> Any:
        return self._field("step")

    @property
    def phase(self) -> Any:
        return self._field("phase")

    @property
    def attempt(self) -> Any:
        return self._field("attempt")

    @property
    def handler(self) -> Any:
        return self._field("handler")

    @property
    def why_not_replayable(self) -> str | None:
        """Why replaying it would only dead-letter it again, or ``None``: it can be."""
        try:
            message = protocol.decode({"body": self.body}, "command")
        except protocol.ProtocolError as exc:
            return str(exc)
        if message.get("protocol") != protocol.PROTOCOL:
            return f"protocol version {message.get('protocol')!r} is not {protocol.PROTOCOL}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry_id, "service": self.service, "stream": self.stream,
                "saga_id": self.saga_id, "step": self.step, "phase": self.phase,
                "attempt": self.attempt, "handler": self.handler, "key": self.key,
                "deliveries": self.deliveries, "reason": self.reason, "worker": self.worker,
                "when": self.when, "command_entry": self.command_entry, "body": self.body}


def dead_services(client: Any, prefix: str = protocol.DEFAULT_PREFIX) -> list[str]:
    """The services that have a dead-letter stream (``SCAN … TYPE stream``), sorted."""
    head = protocol.dead_stream("", prefix)
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", head) + "*"
    found = {_text(key)[len(head):] for key in client.scan_iter(match=pattern, count=1000,
                                                                  _type="stream")}
    return sorted(found)


def read_dead_letters(client: Any, services: Iterable[str],
                      prefix: str = protocol.DEFAULT_PREFIX) -> list[DeadLetter]:
    """Every dead letter of ``services``, service by service, oldest first."""
    letters: list[DeadLetter] = []
    for service in services:
        stream = protocol.dead_stream(service, prefix)
        start = "-"
        while True:
            page = client.xrange(stream, start, "+", count=PAGE)
            letters.extend(DeadLetter.of(service, stream, _text(entry_id), fields)
                           for entry_id, fields in page)
            if len(page) < PAGE:
                break
            start = "(" + _text(page[-1][0])
    return letters


def find_dead_letters(client: Any, ids: Sequence[str], services: Sequence[str],
                      prefix: str = protocol.DEFAULT_PREFIX) -> list[DeadLetter]:
    """The dead letters ``ids`` (entry ids, ``MILLIS-SEQ``) in the streams of ``services``,
    in the order given (an id given twice, once). :class:`UnknownDeadLetter` naming every id
    found in none of them (or that is no entry id), :class:`AmbiguousDeadLetter` for one
    found in several."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, list[DeadLetter]] = {}
    malformed = [entry_id for entry_id in wanted if not ENTRY_ID.fullmatch(entry_id)]
    pipe = client.pipeline(transaction=False)
    pairs = [(entry_id, service) for entry_id in wanted if entry_id not in malformed
             for service in services]
    for entry_id, service in pairs:
        pipe.xrange(protocol.dead_stream(service, prefix), entry_id, entry_id, count=1)
    for (entry_id, service), page in zip(pairs, pipe.execute() if pairs else [], strict=True):
        for got_id, fields in page:
            found.setdefault(entry_id, []).append(DeadLetter.of(
                service, protocol.dead_stream(service, prefix), _text(got_id), fields))
    missing = [entry_id for entry_id in wanted if entry_id not in found]
    if missing:
        where = (protocol.dead_stream(services[0], prefix) if len(services) == 1 else
                 "the dead letters of " + (", ".join(services) or "any service"))
        raise UnknownDeadLetter(missing, where)
    for entry_id, letters in found.items():
        if len(letters) > 1:
            raise AmbiguousDeadLetter(
                f"dead letter {entry_id} is in the dead letters of "
                f"{', '.join(letter.service for letter in letters)}: say which (--service)")
    return [found[entry_id][0] for entry_id in wanted]


def replay(client: Any, letters: Iterable[DeadLetter],
           prefix: str = protocol.DEFAULT_PREFIX) -> list[tuple[DeadLetter, str | None]]:
    """Put each of ``letters`` back on its service's command stream and delete it from the
    dead letters, in one ``MULTI``/``EXEC`` each; with the new entry's id, or ``None`` for one
    no longer there (replayed or purged meanwhile). :class:`NotReplayable` for one whose
    body is no command (before any is replayed)."""
    letters = list(letters)
    for letter in letters:
        why = letter.why_not_replayable
        if why is not None:
            raise NotReplayable(f"dead letter {letter.entry_id} of {letter.service} is not a "
                                f"command that can run ({why}): purge it instead")
    done: list[tuple[DeadLetter, str | None]] = []
    for letter in letters:
        done.append((letter, _replay_one(client, letter, prefix)))
    return done


def _replay_one(client: Any, letter: DeadLetter, prefix: str) -> str | None:
    from redis.exceptions import WatchError

    target = protocol.command_stream(letter.service, prefix)
    for _ in range(WATCH_TRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(letter.stream)  # a dead letter added meanwhile: try again
                if not pipe.xrange(letter.stream, letter.entry_id, letter.entry_id, count=1):
                    return None
                pipe.multi()
                pipe.xadd(target, {"body": letter.body})
                pipe.xdel(letter.stream, letter.entry_id)
                new_id, _ = pipe.execute()
                return _text(new_id)
            except WatchError:
                continue
    raise RuntimeError(f"dead letter {letter.entry_id} of {letter.service}: its stream kept "
                       f"changing; {WATCH_TRIES} tries, not replayed")


def purge(client: Any, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Delete ``letters`` (one ``MULTI``); those that were still there."""
    letters = list(letters)
    if not letters:
        return []
    pipe = client.pipeline(transaction=True)
    for letter in letters:
        pipe.xdel(letter.stream, letter.entry_id)
    return [letter for letter, gone in zip(letters, pipe.execute(), strict=True) if gone]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
