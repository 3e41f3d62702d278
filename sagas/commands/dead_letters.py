"""``saga dead-letters list|replay|purge``: the commands a broker's workers gave up on
(:mod:`sagas.remote.deadletters` does the work; this is the command around it).

``list`` shows the dead letters of one service (``--service``) or of every service that has
any; ``replay ID...|--all`` puts them back on their services' command streams, ``purge
ID...|--all`` deletes them. An id that is no dead letter (of ``--service``, or of any service)
is a usage problem naming it, before anything is done; so is a dead letter that is no command
(it cannot be replayed: purge it), unless ``--all`` is given, which replays the others and says
which were skipped. A broker that cannot be used is ``BrokerUnavailable`` (one line).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..remote.broker import BadBrokerUrl, connect, masked_url, unavailable_as_one_line
from ..remote.deadletters import (
    AmbiguousDeadLetter,
    DeadLetter,
    NotReplayable,
    UnknownDeadLetter,
    dead_services,
    find_dead_letters,
    purge,
    read_dead_letters,
    replay,
)
from ..remote.protocol import DEFAULT_PREFIX, command_stream
from .errors import UsageProblem
from .render import printable, wide_console

__all__ = ["ACTIONS", "DeadLetters", "dead_letters", "render_dead_letters"]

ACTIONS = ("list", "replay", "purge")


@dataclass
class DeadLetters:
    """What ``saga dead-letters ACTION`` did: the dead letters listed (``list``), replayed
    (``replay``: ``replayed_as`` maps each entry id to its new command entry's id) or purged
    (``purge``) on ``broker`` (its URL masked); ``skipped``: ``(letter, why)`` for those left
    as they were (not a command; gone meanwhile)."""

    action: str
    broker: str
    services: list[str]
    letters: list[DeadLetter]
    replayed_as: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[DeadLetter, str]] = field(default_factory=list)
    prefix: str = DEFAULT_PREFIX

    def to_json(self) -> dict[str, Any]:
        entries = []
        for letter in self.letters:
            entry = letter.to_json()
            if self.action == "replay":
                entry["replayed_as"] = self.replayed_as.get(letter.entry_id)
            entries.append(entry)
        return {"action": self.action, "broker": self.broker, "services": self.services,
                "dead_letters": entries,
                "skipped": [{"entry": letter.entry_id, "service": letter.service, "why": why}
                            for letter, why in self.skipped]}

    def render(self) -> str:
        return render_dead_letters(self)


def dead_letters(action: str, broker_url: str, service: str | None = None,
                 ids: Sequence[str] = (), every: bool = False, *,
                 prefix: str = DEFAULT_PREFIX) -> DeadLetters:
    """``saga dead-letters ACTION`` (``list``, ``replay`` or ``purge``) on the broker at
    ``broker_url``, for ``service`` (default: every service with dead letters), of the entry
    ``ids`` or ``every`` one."""
    if action not in ACTIONS:
        raise UsageProblem(f"the dead letters are listed, replayed or purged, not {action!r}")
    if action == "list" and (ids or every):
        raise UsageProblem("list takes no ID or --all")
    if action != "list" and bool(ids) == every:
        raise UsageProblem(f"{action} what? give the entry IDs (as list shows them) or --all")
    if service is not None and not service.strip():
        raise UsageProblem("name a service", "--service")
    try:
        client = connect(broker_url)
    except BadBrokerUrl as exc:
        raise UsageProblem(str(exc), "--broker") from None
    shown = masked_url(broker_url)
    try:
        with unavailable_as_one_line(shown, broker_url):
            return _act(client, action, shown, service, ids, every, prefix)
    finally:
        client.close()


def _act(client: Any, action: str, shown: str, service: str | None, ids: Sequence[str],
         every: bool, prefix: str) -> DeadLetters:
    services = [service] if service is not None else dead_services(client, prefix)
    if action == "list" or every:
        letters = read_dead_letters(client, services, prefix)
    else:
        try:
            letters = find_dead_letters(client, ids, services, prefix)
        except (UnknownDeadLetter, AmbiguousDeadLetter) as exc:
            raise UsageProblem(str(exc)) from None
    done = DeadLetters(action, shown, services, letters, prefix=prefix)
    if action == "list":
        return done
    if action == "purge":
        purged = {(letter.service, letter.entry_id) for letter in purge(client, letters)}
        done.letters = [letter for letter in letters
                        if (letter.service, letter.entry_id) in purged]
        done.skipped = [(letter, "gone meanwhile") for letter in letters
                        if (letter.service, letter.entry_id) not in purged]
        return done
    if every:  # the ones that are no command are skipped, said
        done.skipped = [(letter, f"not a command that can run ({why}): purge it")
                        for letter in letters
                        if (why := letter.why_not_replayable) is not None]
        letters = [letter for letter in letters if letter.why_not_replayable is None]
    try:
        replayed = replay(client, letters, prefix)
    except NotReplayable as exc:
        raise UsageProblem(str(exc)) from None
    done.letters = [letter for letter, new_id in replayed if new_id is not None]
    done.replayed_as = {letter.entry_id: new_id for letter, new_id in replayed
                        if new_id is not None}
    done.skipped += [(letter, "gone meanwhile (replayed or purged by another)")
                     for letter, new_id in replayed if new_id is None]
    return done


# -- text ------------------------------------------------------------------------------------


def render_dead_letters(done: DeadLetters) -> str:
    """The text of ``saga dead-letters``: a table of the dead letters (``list``), a line per
    dead letter replayed or purged; then what was skipped, and a summary line."""
    lines: list[str] = []
    count = len(done.letters)
    where = (f"{', '.join(done.services)}" if done.services else "no service")
    if done.action == "list":
        if done.letters:
            lines.append(_table(done.letters))
        lines.append(f"{count} dead letter{_s(count)} of {where} on {done.broker}"
                     if count else f"no dead letters of {where} on {done.broker}")
    elif done.action == "replay":
        for letter in done.letters:
            stream = command_stream(letter.service, done.prefix)
            lines.append(f"replayed {letter.service} {letter.entry_id} ({_what(letter)}) as "
                         f"{stream} {done.replayed_as[letter.entry_id]}")
        lines.append(f"{count} dead letter{_s(count)} replayed: the workers run "
                     + ("it again unless its key is" if count == 1 else
                        "them again unless their keys are") + " answered in their inbox")
    else:
        for letter in done.letters:
            lines.append(f"purged {letter.service} {letter.entry_id} ({_what(letter)})")
        lines.append(f"{count} dead letter{_s(count)} purged")
    for letter, why in done.skipped:
        lines.append(f"skipped {letter.service} {letter.entry_id}: {why}")
    return "\n".join(printable(line) if "\n" not in line else line for line in lines)


def _table(letters: Sequence[DeadLetter]) -> str:
    from rich.table import Table

    table = Table()
    for column in ("entry", "service", "saga", "step", "phase", "attempt", "handler",
                   "deliveries", "reason", "worker", "when"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(*(printable(_cell(value)) for value in (
            letter.entry_id, letter.service, letter.saga_id, letter.step, letter.phase,
            letter.attempt, letter.handler, letter.deliveries, letter.reason, letter.worker,
            _when(letter.when))))
    console = wide_console(160)
    with console.capture() as captured:
        console.print(table)
    return captured.get().rstrip("\n")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _what(letter: DeadLetter) -> str:
    if letter.command is None:
        return "not a command"
    return (f"saga {letter.saga_id}, step {letter.step}, {letter.phase} attempt "
            f"{letter.attempt}")


def _s(count: int) -> str:
    return "" if count == 1 else "s"

