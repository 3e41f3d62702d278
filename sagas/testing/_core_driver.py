"""Driving one saga through the pure core by hand: :class:`CoreDriver`.

``run_schedule`` and :class:`~sagas.testing.SagaTestEnvironment` deliver replies and timers in
the order the services and the clock produce them. When a test must pin down one interleaving —
a late reply while the next attempt is in flight, a deadline and a reply at the same instant, a
cancel during a backoff, a restart between two events — it drives the core itself: the driver
hands ``sagas.engine.core`` each signal the test chooses, in that order, on a clock the test
moves, and keeps the saga's events and every command the core answered with. Nothing else runs:
no service, no store, no thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..engine import core
from ..engine.inputs import validate_input
from ..events import Event
from ..language.compiler import CompiledFlow, compile_flow
from ..language.loader import load_flow
from ..language.model import Flow
from ..stores import SagaHeader, SagaRecord

__all__ = ["CoreDriver"]

START = 1_000.0
"""The driver's clock when the test gives no ``start``."""

OUTCOMES = ("succeeded", "rejected", "error")


class CoreDriver:
    """One saga of ``flow`` (a :class:`Flow`, or the path of a flow file), driven through the
    pure core one signal at a time.

    Creating the driver starts the saga (``core.start``) at time ``start``, with ``input``
    (checked against the flow's input schema, as ``Runtime.start`` does; default ``{}``).
    Each of :meth:`reply`, :meth:`fire`, :meth:`cancel`, :meth:`retry` and :meth:`send_event`
    then hands the core one signal (:meth:`send` hands it any) and returns the events the core
    recorded for it; :meth:`restart` rebuilds the saga from its log, as a new process would.
    :attr:`events` is the saga's log so far, :attr:`commands` every command the core gave
    (:attr:`sent`, :attr:`timers` and :attr:`awaits` pick them by kind), :attr:`saga` the core's
    state of the saga.

    Time stands still unless the test moves it (:meth:`advance`, :meth:`advance_to`, or
    :meth:`fire`, which moves the clock to the timer's time); every jitter draw is ``draw``. The
    driver is itself the core's environment (``now()``, ``random(key)``), so it can be passed to
    any function of ``sagas.engine.core`` that takes one.
    """

    def __init__(self, flow: Flow | str | os.PathLike[str], input: Any = None, *,
                 saga_id: str = "saga-1", start: float = START, draw: float = 0.5) -> None:
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"CoreDriver needs 0 <= draw < 1, got {draw}")
        self.flow: Flow = flow if isinstance(flow, Flow) else load_flow(flow)
        self.compiled: CompiledFlow = compile_flow(self.flow)
        self.saga_id = saga_id
        self._now = float(start)
        self._draw = draw
        saga_input = validate_input(self.flow, {} if input is None else input)
        self.saga: core.Saga
        self.saga, events, commands = core.start(self.compiled, saga_id, saga_input, self)
        self.events: list[Event] = list(events)
        self.commands: list[core.Command] = list(commands)

    def __repr__(self) -> str:
        return (f"CoreDriver({self.flow.name!r}, saga_id={self.saga_id!r}, "
                f"status={self.status!r}, events={len(self.events)}, now={self._now})")

    # -- the core's environment, and the clock -----------------------------------------------------
    def now(self) -> float:
        """The driver's clock (the core reads it for every event's time)."""
        return self._now

    def random(self, key: str) -> float:
        """The jitter draw: always ``draw``, whatever ``key``."""
        return self._draw

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` (>= 0) forward. No timer fires by itself: :meth:`fire`
        fires one."""
        if seconds < 0:
            raise ValueError(f"CoreDriver.advance needs seconds >= 0, got {seconds}")
        self._now += seconds

    def advance_to(self, t: float) -> None:
        """Move the clock to ``t`` (never back)."""
        if t < self._now:
            raise ValueError(f"CoreDriver.advance_to({t}) would move the clock back from "
                             f"{self._now}")
        self._now = float(t)

    # -- the saga ----------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The saga's status: ``running``, ``compensating``, ``completed``, ``compensated`` or
        ``failed``."""
        return self.saga.status

    @property
    def reason(self) -> str | None:
        """Why a ``failed`` saga failed (``compensation_failed``, ``pivot_unknown``, ...)."""
        return self.saga.reason

    @property
    def sent(self) -> list[core.Execute]:
        """The attempts sent to services, in order."""
        return [c for c in self.commands if isinstance(c, core.Execute)]

    @property
    def timers(self) -> list[core.SetTimer]:
        """The timers set, in order (those the core has since dropped included)."""
        return [c for c in self.commands if isinstance(c, core.SetTimer)]

    @property
    def awaits(self) -> list[core.Await]:
        """The external events the saga waited for (``wait_for`` steps), in order."""
        return [c for c in self.commands if isinstance(c, core.Await)]

    def types(self) -> list[str]:
        """The events, as ``type`` or ``type:step`` strings."""
        return [f"{e.type}:{e.step}" if e.step else e.type for e in self.events]

    def of(self, type: str, step: str | None = None, branch: str | None = None) -> list[Event]:
        """The events of type ``type`` (of ``step``; about parallel branch ``branch``, e.g.
        ``block.a``)."""
        return [e for e in self.events if e.type == type and (step is None or e.step == step)
                and (branch is None or e.data.get("branch") == branch)]

    def record(self, events: Sequence[Event] | None = None) -> SagaRecord:
        """The saga as a store holds it — header, flow text and log (``events``; by default
        its own) — e.g. for ``sagas.audit.audit_saga``."""
        log = tuple(self.events if events is None else events)
        header = SagaHeader(saga_id=self.saga_id, flow=self.flow.name, version=self.flow.version,
                            definition=self.flow.definition, input=self.saga.input,
                            status=self.saga.status, reason=self.saga.reason,
                            started_at=log[0].at, updated_at=log[-1].at, last_seq=log[-1].seq)
        return SagaRecord(header, self.flow.text, log)

    # -- signals -----------------------------------------------------------------------------------
    def send(self, signal: core.Signal) -> list[Event]:
        """Hand the core ``signal``; the events it recorded (nothing, once the saga has ended,
        but what a :class:`~sagas.engine.core.Retry` starts)."""
        events, commands = core.handle(self.saga, signal, self)
        self.events.extend(events)
        self.commands.extend(commands)
        return list(events)

    def reply(self, step: str, attempt: int | None = None, outcome: str = "succeeded", *,
              phase: str = "action", output: dict[str, Any] | None = None,
              error: str | None = None) -> list[Event]:
        """Answer attempt ``attempt`` of ``step``'s action (its compensation with
        ``phase="compensation"``) as its service would; by default the attempt sent last.

        ``outcome`` is ``succeeded`` (with ``output``; default ``{"attempt": N}``), ``rejected``
        or ``error`` (with the message ``error``). The attempt must have been sent; it need not
        be in flight any more: a late reply is the point of many tests.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        command = self._attempt(step, phase, attempt)
        if outcome == "succeeded":
            result = {"attempt": command.attempt} if output is None else output
            signal = core.ReplyReceived(phase, step, command.attempt, outcome, result, None,
                                        command.command_id)
        else:
            signal = core.ReplyReceived(phase, step, command.attempt, outcome, None,
                                        error or f"{step} {outcome}", command.command_id)
        return self.send(signal)

    def fire(self, kind: str, step: str | None = None, attempt: int | None = None, *,
             phase: str = "action") -> list[Event]:
        """Fire the timer of ``kind`` set last — the ``deadline``, or the ``timeout``,
        ``backoff`` or ``delay`` of ``step``'s ``phase`` (of attempt ``attempt``; of any) —
        moving the clock to its time first if that is later. A timer the core has since dropped
        fires too: the core must ignore it, and a test may check that it does."""
        matching = [t for t in self.timers if t.kind == kind
                    and (kind == "deadline" or (t.phase, t.step) == (phase, step))
                    and (attempt is None or t.attempt == attempt)]
        if not matching:
            what = "deadline timer" if kind == "deadline" else \
                f"{kind} timer of {phase} {step!r}" + (f" #{attempt}" if attempt else "")
            raise LookupError(f"no {what} was set; timers set: {self._timers_set()}")
        timer = matching[-1]
        self._now = max(self._now, timer.at)
        return self.send(timer.fired())

    def cancel(self, requested_by: str | None = None) -> list[Event]:
        """Cancel the saga (``saga cancel``)."""
        return self.send(core.Cancel(requested_by))

    def retry(self, requested_by: str | None = None) -> list[Event]:
        """Re-drive a ``failed`` saga where it stopped (``saga retry``)."""
        return self.send(core.Retry(requested_by))

    def send_event(self, event: str, key: str, data: dict[str, Any] | None = None, *,
                   event_id: str | None = None) -> list[Event]:
        """Deliver the external event ``(event, key)`` (``saga send``) with ``data``; a saga
        that waits for it (see :attr:`awaits`) takes it, any other ignores it."""
        signal = core.EventReceived(event, key, {} if data is None else data,
                                    event_id or f"{event}/{key}")
        return self.send(signal)

    def restart(self) -> list[Event]:
        """Do what a new process does with the saga after a crash: rebuild it from its log
        alone (``core.replay``) and put it back in motion (``core.resume``) at the driver's
        time — an attempt past its time-out is recorded as timed out, one within it is sent
        again, backoff and the deadline are re-armed. Returns the events that recorded; the
        commands it gave come after the earlier ones in :attr:`commands` (so :meth:`reply` and
        :meth:`fire` take them by default)."""
        self.saga = core.replay(self.saga_id, self.compiled, self.events)
        events, commands = core.resume(self.saga, self)
        self.events.extend(events)
        self.commands.extend(commands)
        return list(events)

    # -- helpers -----------------------------------------------------------------------------------
    def _attempt(self, step: str, phase: str, attempt: int | None) -> core.Execute:
        sent = [c for c in self.sent if (c.step, c.phase) == (step, phase)]
        if attempt is None and sent:
            return sent[-1]
        found = next((c for c in sent if c.attempt == attempt), None)
        if found is None:
            which = "an attempt" if attempt is None else f"attempt {attempt}"
            raise LookupError(f"{which} of {phase} {step!r} was never sent (attempts sent: "
                              f"{[c.attempt for c in sent]})")
        return found

    def _timers_set(self) -> list[str]:
        return [t.kind if t.kind == "deadline" else f"{t.kind} {t.phase} {t.step} #{t.attempt}"
                for t in self.timers]
