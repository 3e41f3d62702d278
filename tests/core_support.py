"""Driving one saga through the pure core (``sagas.engine.core``) by hand: replies and timers
delivered in an exact, chosen order, on a clock the test sets — for interleavings a runtime
cannot pin down (a late reply while the next attempt is in flight, a deadline and a reply at
one instant)."""

from __future__ import annotations

import textwrap
from typing import Any

from sagas import Flow, parse_flow
from sagas.engine import core
from sagas.events import Event
from sagas.language.compiler import compile_flow
from sagas.stores import SagaHeader, SagaRecord


class FakeEnv:
    """The core's environment: a clock the test sets (``t``), and a random draw fixed at 0.5."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def random(self, key: str) -> float:
        return 0.5


class CoreSaga:
    """One saga driven through ``sagas.engine.core``: its events, and every command the core gave.

    ``flow`` is a :class:`Flow` or the YAML text of one (indented as in a test: it is dedented).
    """

    def __init__(self, flow: Flow | str, saga_input: dict[str, Any] | None = None,
                 saga_id: str = "s-1") -> None:
        if isinstance(flow, str):
            flow = parse_flow(textwrap.dedent(flow), source="<core>")
        self.flow = flow
        self.compiled = compile_flow(flow)
        self.env = FakeEnv()
        self.saga_id = saga_id
        self.saga, events, commands = core.start(
            self.compiled, saga_id, {"n": 1} if saga_input is None else saga_input, self.env)
        self.events: list[Event] = list(events)
        self.commands: list[core.Command] = list(commands)

    @property
    def sent(self) -> list[core.Execute]:
        """The commands sent to services, in order."""
        return [c for c in self.commands if isinstance(c, core.Execute)]

    @property
    def timers(self) -> list[core.SetTimer]:
        """The timers set, in order."""
        return [c for c in self.commands if isinstance(c, core.SetTimer)]

    def send(self, signal: core.Signal) -> list[Event]:
        """Hand the core ``signal``; the events it recorded."""
        events, commands = core.handle(self.saga, signal, self.env)
        self.events += events
        self.commands += commands
        return events

    def reply(self, step: str, attempt: int | None = None, outcome: str = "succeeded", *,
              phase: str = "action") -> list[Event]:
        """The reply to ``step``'s attempt ``attempt`` (the first command sent for it; the last
        command sent for the step when ``attempt`` is None): output ``{"from": attempt}`` if it
        succeeded, else the error ``"<outcome>!"``."""
        sent = [c for c in self.sent if (c.step, c.phase) == (step, phase)]
        command = sent[-1] if attempt is None else next(c for c in sent if c.attempt == attempt)
        ok = outcome == "succeeded"
        return self.send(core.ReplyReceived(phase, step, command.attempt, outcome,
                                            {"from": command.attempt} if ok else None,
                                            None if ok else f"{outcome}!", command.command_id))

    def fire(self, kind: str, step: str | None = None, attempt: int | None = None,
             phase: str | None = "action") -> list[Event]:
        """Fire the latest timer of ``kind`` (for ``phase``/``step``/``attempt``) at its time."""
        timer = [t for t in self.timers if t.kind == kind and
                 (kind == "deadline" or (t.phase, t.step) == (phase, step)) and
                 (attempt is None or t.attempt == attempt)][-1]
        self.env.t = max(self.env.t, timer.at)
        return self.send(timer.fired())

    def types(self) -> list[str]:
        """The events as ``type`` or ``type:step`` strings."""
        return [f"{e.type}:{e.step}" if e.step else e.type for e in self.events]

    def of(self, kind: str, step: str | None = None, branch: str | None = None) -> list[Event]:
        """The events of type ``kind`` (of ``step``; about ``branch``)."""
        return [e for e in self.events if e.type == kind and (step is None or e.step == step)
                and (branch is None or e.data.get("branch") == branch)]

    def record(self, events: list[Event] | None = None) -> SagaRecord:
        """The saga as a store would hold it, with ``events`` (its own by default) as its log."""
        events = self.events if events is None else events
        header = SagaHeader(self.saga_id, self.flow.name, 1, self.flow.definition,
                            self.saga.input, self.saga.status, self.saga.reason, 0.0, 0.0,
                            events[-1].seq)
        return SagaRecord(header, self.flow.text, tuple(events))


BLOCK = """\
    saga: par_block
    services:
      s: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 1}
      timeout: 10s
    steps:
      - {name: prep, service: s, action: do, compensation: undo}
      - name: blk
        parallel:
          a:
            - {name: a1, service: s, action: do, compensation: undo}
          b:
            - {name: b1, service: s, action: do, effects: none}
    """
"""A flow for :class:`CoreSaga`: ``prep``, then block ``blk`` of branch ``a`` (``a1``, which
has a compensation) and branch ``b`` (``b1``, with no effects); one attempt, 10 s time-outs."""
