"""Compiling a flow into its state machine (one per flow definition, never one per saga).

States: ``step:<name>`` while a step's action is being attempted, ``compensation:<name>`` while
its compensation is, and the terminal ``completed``, ``compensated`` and ``failed``. Triggers are
a step's *final* outcome, after retries:

* ``succeeded`` — the action (or compensation) returned a result;
* ``rejected`` — a business "no": by contract the action had no effect;
* ``exhausted`` — attempts ran out on errors or timeouts (also a deadline or a cancel before the
  pivot): the outcome is unknown, the effect may have happened.

The recovery rules of DESIGN.md §4.2–4.3 are encoded in the edges built here, once. The edges
are loaded into a :class:`transitions.Machine` (``auto_transitions=False``, no models, no string
callbacks: YAML names never reach its callback resolution), and the engine and ``saga plan`` both
read the lookup table extracted from that machine, so there is one implementation of recovery.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from types import MappingProxyType

from transitions import Machine

from .model import Flow, Step

__all__ = [
    "COMPENSATED",
    "COMPLETED",
    "FAILED",
    "TERMINAL_STATES",
    "TRIGGERS",
    "CompiledFlow",
    "Edge",
    "compensation_state",
    "compile_flow",
    "step_state",
]

COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
TERMINAL_STATES = (COMPLETED, COMPENSATED, FAILED)
TRIGGERS = ("succeeded", "rejected", "exhausted")
STEP_PREFIX, COMPENSATION_PREFIX = "step:", "compensation:"


def step_state(name: str) -> str:
    return STEP_PREFIX + name


def compensation_state(name: str) -> str:
    return COMPENSATION_PREFIX + name


@dataclass(frozen=True, slots=True)
class Edge:
    """A transition: in ``source``, on ``trigger``, go to ``dest`` (``reason`` when failing)."""

    source: str
    trigger: str
    dest: str
    reason: str | None = None


class CompileError(Exception):
    """A flow compiled into a machine that breaks an invariant (a bug in the compiler)."""


@dataclass(frozen=True, slots=True)
class StateInfo:
    """What a non-terminal state does: attempt ``step``'s action or its compensation."""

    phase: str  # "action" | "compensation"
    step: Step
    index: int


class CompiledFlow:
    """A flow's machine and the lookup the engine uses on its hot path. Immutable."""

    def __init__(self, flow: Flow):
        self.flow = flow
        edges = _edges(flow)
        self.initial = step_state(flow.steps[0].name)
        self.states: tuple[str, ...] = tuple(
            [step_state(s.name) for s in flow.steps]
            + [compensation_state(s.name) for s in flow.steps if s.compensation]
            + list(TERMINAL_STATES)
        )
        self.machine = Machine(
            model=None,
            states=list(self.states),
            initial=self.initial,
            auto_transitions=False,
            send_event=False,
        )
        for edge in edges:
            self.machine.add_transition(edge.trigger, edge.source, edge.dest)
        reasons = {(e.source, e.trigger): e.reason for e in edges}
        table: dict[tuple[str, str], tuple[str, str | None]] = {}
        for trigger, event in self.machine.events.items():
            for source, transitions in event.transitions.items():
                dest = transitions[0].dest
                table[(source, trigger)] = (dest, reasons.get((source, trigger)))
        self._table = table
        order = {state: i for i, state in enumerate(self.states)}
        self.edges: tuple[Edge, ...] = tuple(sorted(
            (Edge(source, trigger, dest, reason)
             for (source, trigger), (dest, reason) in table.items()),
            key=lambda e: (order[e.source], TRIGGERS.index(e.trigger)),
        ))
        info: dict[str, StateInfo] = {}
        for index, step in enumerate(flow.steps):
            info[step_state(step.name)] = StateInfo("action", step, index)
            if step.compensation:
                info[compensation_state(step.name)] = StateInfo("compensation", step, index)
        self.info = MappingProxyType(info)
        self._check()

    @property
    def definition(self) -> str:
        return self.flow.definition

    def next(self, state: str, trigger: str) -> tuple[str, str | None] | None:
        """``(dest, reason)`` for ``trigger`` in ``state``, or None when nothing happens."""
        return self._table.get((state, trigger))

    def is_terminal(self, state: str) -> bool:
        return state in TERMINAL_STATES

    def _check(self) -> None:
        """Every state reaches a terminal state; every state is reachable from the start."""
        incoming: dict[str, list[str]] = {s: [] for s in self.states}
        outgoing: dict[str, list[str]] = {s: [] for s in self.states}
        for edge in self.edges:
            incoming[edge.dest].append(edge.source)
            outgoing[edge.source].append(edge.dest)
        can_end = set(TERMINAL_STATES)
        queue = deque(TERMINAL_STATES)
        while queue:
            for source in incoming[queue.popleft()]:
                if source not in can_end:
                    can_end.add(source)
                    queue.append(source)
        stuck = [s for s in self.states if s not in can_end]
        if stuck:
            raise CompileError(f"flow {self.flow.name!r}: states that cannot end: {stuck}")
        seen = {self.initial}
        queue = deque([self.initial])
        while queue:
            for dest in outgoing[queue.popleft()]:
                if dest not in seen:
                    seen.add(dest)
                    queue.append(dest)
        unreachable = [s for s in self.states if s not in seen and s not in TERMINAL_STATES]
        if unreachable:
            raise CompileError(f"flow {self.flow.name!r}: unreachable states: {unreachable}")


def _edges(flow: Flow) -> list[Edge]:
    steps = flow.steps
    pivot = flow.pivot_index

    def backward_from(index: int) -> str:
        """The first compensation to run when every step up to ``index`` is to be undone."""
        for j in range(index, -1, -1):
            if steps[j].compensation:
                return compensation_state(steps[j].name)
        return COMPENSATED

    edges: list[Edge] = []
    for i, step in enumerate(steps):
        state = step_state(step.name)
        following = step_state(steps[i + 1].name) if i + 1 < len(steps) else COMPLETED
        edges.append(Edge(state, "succeeded", following))
        if not step.calls_service:  # a delay or a wait is never rejected: it is exhausted by
            # a cancel, the deadline, or (a wait) its timeout
            if pivot is None or i < pivot:
                edges.append(Edge(state, "exhausted", backward_from(i)))
            else:
                edges.append(Edge(state, "exhausted", FAILED, "forward_recovery"))
        elif pivot is None or i < pivot:
            edges.append(Edge(state, "rejected", backward_from(i - 1)))
            edges.append(Edge(state, "exhausted", backward_from(i)))
        elif i == pivot:
            edges.append(Edge(state, "rejected", backward_from(i - 1)))
            edges.append(Edge(state, "exhausted", FAILED, "pivot_unknown"))
        else:
            edges.append(Edge(state, "rejected", FAILED, "forward_recovery"))
            edges.append(Edge(state, "exhausted", FAILED, "forward_recovery"))
        if step.compensation:
            comp = compensation_state(step.name)
            edges.append(Edge(comp, "succeeded", backward_from(i - 1)))
            if step.on_compensation_failure == "park":
                edges.append(Edge(comp, "exhausted", FAILED, "compensation_failed"))
    return edges


_cache: dict[str, CompiledFlow] = {}


def compile_flow(flow: Flow) -> CompiledFlow:
    """The compiled machine of ``flow``, built once per definition (sha256) and then shared.

    Safe from several threads: two threads compiling one new definition at once both build it,
    and one of the two (equal) machines is kept.
    """
    compiled = _cache.get(flow.definition)
    if compiled is None:
        if len(_cache) > 256:
            _cache.clear()
        compiled = _cache.setdefault(flow.definition, CompiledFlow(flow))
    return compiled
