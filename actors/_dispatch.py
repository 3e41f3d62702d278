"""The idempotent inbox: how one service turns a command into its reply (or replies).

Pure of threads: a :class:`Dispatcher` is owned by one service actor and called on its thread,
one command at a time. It is where the semantics of DESIGN §3 live:

Action (key ``saga_id:step``)
    tombstoned key         → ``rejected`` ("compensated: ..."), the handler does not run
    stored reply           → that reply, ``replayed=True``, the handler does not run
    otherwise              → run; ``succeeded`` and ``rejected`` are stored, ``error`` is not
Compensation (key ``saga_id:step:compensation``)
    stored success         → that reply, ``replayed=True``
    otherwise              → tombstone ``saga_id:step`` *then* run; only ``succeeded`` is stored
                             (a compensation's ``Rejected`` is a failed attempt: replied, not kept)

Faults (:mod:`actors._faults`) are applied here: ``reject``/``error`` replace the handler call (so
a ``reject`` is stored like a real ``Rejected``), ``drop``/``run_then_drop``/``duplicate`` act on
the delivery. Everything a handler raises is caught; only the inbox store or the fault injector
raising escapes (the actor then crashes and is restarted by its pool).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._errors import describe_exception, safe_repr
from ._json import dumps_compact, loads_compact
from ._messages import Command, Outcome, Reply, StoredReply
from ._service import Rejected

if TYPE_CHECKING:
    from ._faults import Fault, FaultInjector
    from ._inbox import InboxStore
    from ._service import Service

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

_Result = tuple[Outcome, "str | None", "str | None"]  # outcome, output as JSON text, error


def _json_default(obj: Any) -> Any:
    if isinstance(obj, MappingProxyType):  # frozen payload data handed back by a handler
        return dict(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class Dispatcher:
    """Runs one service object's commands through the inbox. Not thread-safe: one actor thread."""

    def __init__(
        self,
        service: Service,
        *,
        service_name: str,
        instance: int,
        inbox: InboxStore,
        faults: FaultInjector | None = None,
        around: Callable[[Command, str], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.service = service
        self.around = around  # wraps each handler call (e.g. a tracing span), if given
        self.service_name = service_name
        self.instance = instance
        self.inbox = inbox
        self.faults = faults
        self._handlers: dict[str, Callable[[Command], Any]] = {
            name: service.handler(name) for name in type(service).handler_names()
        }
        self._label = f"{type(service).__name__} ({service_name}[{instance}])"

    def process(self, command: Command) -> Iterator[Reply]:
        """The replies to send for one delivery of ``command``, produced one at a time.

        Usually one; none when a fault drops it; two for a ``duplicate`` fault (the second goes
        through the inbox again, so it is typically a replay). Raises only what the inbox store or
        the fault injector raises.
        """
        fault = self.faults.decide(command) if self.faults is not None else None
        kind = None if fault is None else fault.kind
        if kind == "drop":
            logger.debug("fault: dropped %s before it ran", command.key)
            return
        reply = self._once(command, fault)
        if kind == "run_then_drop":
            logger.debug("fault: dropped the %s reply to %s", reply.outcome, command.key)
            return
        yield reply
        if kind == "duplicate":
            yield self._once(command, None)

    def crash_reply(self, command: Command, exc: BaseException) -> Reply:
        """The ``error`` reply for a command whose processing crashed the actor."""
        return self._reply(
            command, "error", None, f"service actor crashed: {describe_exception(exc)}"
        )

    # -- the inbox -----------------------------------------------------------------------------

    def _once(self, command: Command, fault: Fault | None) -> Reply:
        handler = self._handlers.get(command.name)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "nothing"
            return self._reply(
                command,
                "error",
                None,
                f"unknown command {command.name!r}: {self._label} handles {known}",
            )
        inbox = self.inbox
        key = command.key
        if command.phase == "action":
            if inbox.is_tombstoned(key):
                return self._reply(
                    command,
                    "rejected",
                    None,
                    f"compensated: {key} was compensated before this action ran; not run",
                )
            stored = inbox.get(key)
            if stored is not None:
                return self._replay(command, stored)
            outcome, text, error = self._run(handler, command, fault)
            output = _load(text)
            if outcome != "error":
                # one parse for both: every inbox store keeps its own copy (as JSON text)
                inbox.put(key, StoredReply(outcome, output, error))
        else:
            stored = inbox.get(key)
            if stored is not None and stored.outcome == "succeeded":
                return self._replay(command, stored)
            inbox.tombstone(command.action_key)
            outcome, text, error = self._run(handler, command, fault)
            output = _load(text)
            if outcome == "succeeded":
                inbox.put(key, StoredReply(outcome, output, None))
        return self._reply(command, outcome, output, error)

    def _replay(self, command: Command, stored: StoredReply) -> Reply:
        output = None if stored.output is None else _load(json.dumps(stored.output))
        return self._reply(command, stored.outcome, output, stored.error, replayed=True)

    def _reply(
        self,
        command: Command,
        outcome: Outcome,
        output: dict[str, Any] | None,
        error: str | None,
        *,
        replayed: bool = False,
    ) -> Reply:
        return Reply(command, outcome, output, error, replayed, self.service_name, self.instance)

    # -- the handler call ----------------------------------------------------------------------

    def _run(
        self, handler: Callable[[Command], Any], command: Command, fault: Fault | None
    ) -> _Result:
        """Call the handler (or its injected fault) and classify what happened. Never raises."""
        if fault is not None:
            if fault.kind == "reject":
                return "rejected", None, fault.message or "injected rejection"
            if fault.kind == "error":
                return "error", None, f"InjectedFault: {fault.message or 'injected error'}"
        try:
            if self.around is None:
                value = handler(command)
            else:
                with self.around(command, self.service_name):
                    value = handler(command)
        except Rejected as rejected:
            return "rejected", None, _rejection_text(rejected)
        except BaseException as exc:  # a handler may raise anything: it never kills the actor
            logger.debug("%s: %r raised", self._label, command.name, exc_info=True)
            return "error", None, describe_exception(exc)
        return self._normalize(command, value)

    def _normalize(self, command: Command, value: Any) -> _Result:
        """A handler's return value as JSON text, or an ``error`` saying what was wrong."""
        if type(value) is not dict and not isinstance(value, Mapping):
            where = f"handler {command.name!r} of {self._label}"
            return (
                "error",
                None,
                f"{where} returned {type(value).__name__} {safe_repr(value)}, not a JSON object: "
                "return a dict (e.g. {})",
            )
        try:
            text = dumps_compact(value, default=_json_default)
        except BaseException as exc:  # hostile mappings may raise anything from items()
            where = f"handler {command.name!r} of {self._label}"
            return (
                "error",
                None,
                f"{where} returned a dict that is not JSON: {describe_exception(exc)}",
            )
        return "succeeded", text, None


def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else loads_compact(text)


def _rejection_text(rejected: Rejected) -> str:
    try:
        return " ".join(str(rejected).split()) or "rejected"
    except BaseException:  # a Rejected subclass with a hostile __str__
        return f"{type(rejected).__name__} (unprintable rejection)"
