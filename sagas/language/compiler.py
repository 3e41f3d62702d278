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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from transitions import Machine

from .model import Branch, Choice, Flow, Step
from .paths import Template, compile_template

__all__ = [
    "COMPENSATED",
    "COMPLETED",
    "FAILED",
    "MAX_PATHS",
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
CHOICE_PREFIX, BRANCH_PREFIX = "choice:", "branch:"


def step_state(name: str) -> str:
    return STEP_PREFIX + name


def compensation_state(name: str) -> str:
    return COMPENSATION_PREFIX + name


def choice_state(name: str) -> str:
    return CHOICE_PREFIX + name


@dataclass(frozen=True, slots=True)
class Edge:
    """A transition: in ``source``, on ``trigger``, go to ``dest`` (``reason`` when failing)."""

    source: str
    trigger: str
    dest: str
    reason: str | None = None
    label: str | None = None  # the branch a ``chosen`` edge stands for


class CompileError(Exception):
    """A flow compiled into a machine that breaks an invariant (a bug in the compiler)."""


@dataclass(frozen=True, slots=True)
class StateInfo:
    """What a non-terminal state does: attempt ``step``'s action or its compensation."""

    phase: str  # "action" | "compensation"
    step: Step
    index: int


class _Pick(NamedTuple):
    """In an expanded path: the choice ``choice`` took ``branch`` here."""

    choice: str
    branch: str


MAX_PATHS = 256
"""Routes through a flow's choices, at most (each is compiled into its own table; the loader
refuses a flow with more)."""


def count_routes(sequence: Sequence[Any]) -> int:
    """How many routes ``sequence``'s choices make (1 without a choice)."""
    total = 1
    for node in sequence:
        if isinstance(node, Choice):
            total *= sum(count_routes(branch.steps) for branch in node.branches)
    return total


def _expand(sequence: Sequence[Any]) -> list[tuple[tuple[str, ...], list[Any]]]:
    """Every route through ``sequence``'s choices: ``(branches taken, [Step | _Pick, ...])``."""
    routes: list[tuple[tuple[str, ...], list[Any]]] = [((), [])]
    for node in sequence:
        if isinstance(node, Choice):
            grown = []
            for key, elems in routes:
                for branch in node.branches:
                    for sub_key, sub_elems in _expand(branch.steps):
                        grown.append(((*key, branch.name, *sub_key),
                                      [*elems, _Pick(node.name, branch.name), *sub_elems]))
                        if len(grown) > MAX_PATHS:
                            raise CompileError(f"more than {MAX_PATHS} routes through the "
                                               "flow's choices")
            routes = grown
        else:
            routes = [(key, [*elems, node]) for key, elems in routes]
    return routes


class CompiledFlow:
    """A flow's machine and the lookup the engine uses on its hot path. Immutable.

    A flow without choices has one table. A flow with choices has one table per *route* (the
    branches taken so far), because compensation follows the path actually taken: the table of
    route ``("large",)`` undoes the steps of the ``large`` branch. Each branch of a ``parallel``
    block has a table of its own too, keyed by its track id ``<block>.<branch>``, ending in
    ``branch:<track>:completed`` (waiting for the others), ``:compensated`` or ``:failed``.
    """

    def __init__(self, flow: Flow):
        self.flow = flow
        routes = _expand(flow.sequence)
        self._routes = routes
        self._route_steps: dict[tuple[str, ...], tuple[Step, ...]] = {}
        self.initial = _state_at(routes[0][1], 0, COMPLETED)
        self.choices: Mapping[str, Choice] = MappingProxyType(_choices(flow.sequence))
        tables: dict[Any, dict[tuple[str, str], tuple[str, str | None]]] = {}
        all_edges: dict[tuple[str, str, str, str | None], Edge] = {}
        initials = [self.initial]
        dests: dict[tuple[str, str], set[str]] = {}
        per_route = []
        for key, elems in routes:
            edges = _sequence_edges(elems, COMPLETED, COMPENSATED, FAILED)
            table = self._table(edges, self.initial, {})
            for j in range(len(key) + 1):
                tables.setdefault(key[:j], table)
            per_route.append((elems, edges))
            for edge in edges:
                dests.setdefault((edge.source, edge.trigger), set()).add(edge.dest)
        for elems, edges in per_route:  # an edge that depends on the route says which
            for edge in edges:
                if edge.trigger != "chosen" and len(dests[(edge.source, edge.trigger)]) > 1:
                    edge = Edge(edge.source, edge.trigger, edge.dest, edge.reason,
                                "after " + ", ".join(f"{p.choice}: {p.branch}"
                                                     for p in _picks_before(elems, edge.source)))
                all_edges.setdefault((edge.source, edge.trigger, edge.dest, edge.label), edge)
        tracks: dict[str, tuple[Step, Branch]] = {}
        track_of: dict[str, str] = {}
        branch_terminals: list[str] = []
        self.undo_entry: dict[str, str] = {}  # track -> where undoing the whole branch starts
        track_initial: dict[str, str] = {}
        blocks: dict[str, tuple[str, ...]] = {}
        for block in flow.steps:
            if not block.is_parallel:
                continue
            assert block.branches is not None
            blocks[block.name] = tuple(f"{block.name}.{b.name}" for b in block.branches)
            for branch in block.branches:
                track = f"{block.name}.{branch.name}"
                tracks[track] = (block, branch)
                ends = tuple(f"{BRANCH_PREFIX}{track}:{end}" for end in TERMINAL_STATES)
                branch_terminals.extend(ends)
                edges = _sequence_edges(list(branch.steps), *ends)
                first = step_state(branch.steps[0].name)
                initials.append(first)
                track_initial[track] = first
                tables[track] = self._table(edges, first, all_edges)
                self.undo_entry[track] = _backward(list(branch.steps), len(branch.steps) - 1,
                                                   ends[1])
                for step in branch.steps:
                    track_of[step.name] = track
        self._tables = tables
        self.tracks: Mapping[str, tuple[Step, Branch]] = MappingProxyType(tracks)
        self.track_of: Mapping[str, str] = MappingProxyType(track_of)
        self.track_initial: Mapping[str, str] = MappingProxyType(track_initial)
        self.blocks: Mapping[str, tuple[str, ...]] = MappingProxyType(blocks)
        self.branch_terminals = frozenset(branch_terminals)
        self.states: tuple[str, ...] = tuple(dict.fromkeys(
            [state for step in flow.steps for state in
             ((step_state(step.name), compensation_state(step.name)) if step.undoable
              else (step_state(step.name),))]
            + [choice_state(name) for name in self.choices]
            + branch_terminals + list(TERMINAL_STATES)))
        order = {state: i for i, state in enumerate(self.states)}
        triggers = (*TRIGGERS, "chosen")
        self.edges: tuple[Edge, ...] = tuple(sorted(
            all_edges.values(),
            key=lambda e: (order[e.source], triggers.index(e.trigger), e.label or ""),
        ))
        self.machine = Machine(model=None, states=list(self.states), initial=self.initial,
                               auto_transitions=False, send_event=False)
        for edge in self.edges:
            self.machine.add_transition(edge.trigger, edge.source, edge.dest)
        info: dict[str, StateInfo] = {}
        for index, step in enumerate(flow.steps):
            info[step_state(step.name)] = StateInfo("action", step, index)
            if step.undoable:
                info[compensation_state(step.name)] = StateInfo("compensation", step, index)
        self.info = MappingProxyType(info)
        # each step's input: paths parsed once here, not on every attempt
        self.payload_of: Mapping[str, Template] = MappingProxyType({
            step.name: compile_template(step.input) for step in flow.steps
            if step.input is not None})
        self._check(initials)

    @staticmethod
    def _table(edges: list[Edge], initial: str, all_edges: dict[Any, Edge]) -> dict[
            tuple[str, str], tuple[str, str | None]]:
        """The lookup of one route (or branch), read back from its own machine."""
        states = list(dict.fromkeys([initial] + [s for e in edges for s in (e.source, e.dest)]))
        machine = Machine(model=None, states=states, initial=initial, auto_transitions=False,
                          send_event=False)
        for edge in edges:
            machine.add_transition(edge.trigger, edge.source, edge.dest)
            all_edges.setdefault((edge.source, edge.trigger, edge.dest, edge.label), edge)
        reasons = {(e.source, e.trigger): e.reason for e in edges}
        table: dict[tuple[str, str], tuple[str, str | None]] = {}
        for trigger, event in machine.events.items():
            for source, transitions in event.transitions.items():
                table[(source, trigger)] = (transitions[0].dest, reasons.get((source, trigger)))
        return table

    @property
    def definition(self) -> str:
        return self.flow.definition

    def next(self, state: str, trigger: str, route: Any = ()) -> tuple[str, str | None] | None:
        """``(dest, reason)`` for ``trigger`` in ``state``, or None when nothing happens.

        ``route`` names the table: the branches the saga's choices took so far (a tuple), or
        a parallel branch's track id (a text)."""
        return self._tables[route].get((state, trigger))

    def routes_to(self, step: str) -> tuple[str, ...] | None:
        """The first route (branches taken) on which ``step`` runs in the main sequence, or
        None when it runs in no route (it belongs to a parallel branch)."""
        routes = self.routes_with(step)
        return routes[0] if routes else None

    def route_steps(self, route: tuple[str, ...]) -> tuple[Step, ...]:
        """The main sequence's steps on the first route that begins with ``route`` (a
        parallel block is one step)."""
        cached = self._route_steps.get(route)
        if cached is None:
            for key, elems in self._routes:
                if key[:len(route)] == route:
                    cached = tuple(e for e in elems if isinstance(e, Step))
                    break
            else:
                cached = ()
            self._route_steps[route] = cached
        return cached

    def routes_with(self, step: str) -> list[tuple[str, ...]]:
        """Every full route on which ``step`` runs in the main sequence (none for a step of a
        parallel branch: see :meth:`routes_to` of its block)."""
        return [key for key, elems in self._routes
                if any(isinstance(e, Step) and e.name == step for e in elems)]

    def is_terminal(self, state: str) -> bool:
        return state in TERMINAL_STATES

    def _check(self, initials: list[str]) -> None:
        """Every state reaches an end; every state is reachable from a start."""
        incoming: dict[str, list[str]] = {s: [] for s in self.states}
        outgoing: dict[str, list[str]] = {s: [] for s in self.states}
        for edge in self.edges:
            incoming[edge.dest].append(edge.source)
            outgoing[edge.source].append(edge.dest)
        ends = set(TERMINAL_STATES) | self.branch_terminals
        can_end = set(ends)
        queue = deque(ends)
        while queue:
            for source in incoming[queue.popleft()]:
                if source not in can_end:
                    can_end.add(source)
                    queue.append(source)
        stuck = [s for s in self.states if s not in can_end]
        if stuck:
            raise CompileError(f"flow {self.flow.name!r}: states that cannot end: {stuck}")
        seen = set(initials)
        queue = deque(initials)
        while queue:
            for dest in outgoing[queue.popleft()]:
                if dest not in seen:
                    seen.add(dest)
                    queue.append(dest)
        unreachable = [s for s in self.states if s not in seen and s not in ends]
        if unreachable:
            raise CompileError(f"flow {self.flow.name!r}: unreachable states: {unreachable}")


def _choices(sequence: Sequence[Any]) -> dict[str, Choice]:
    found: dict[str, Choice] = {}
    for node in sequence:
        if isinstance(node, Choice):
            found[node.name] = node
            for branch in node.branches:
                found.update(_choices(branch.steps))
    return found


def _picks_before(elems: list[Any], state: str) -> list[_Pick]:
    """The choices made on a route before it reaches ``state``."""
    picks = []
    for j, element in enumerate(elems):
        if _state_at(elems, j, "") == state or (
                not isinstance(element, _Pick) and compensation_state(element.name) == state):
            break
        if isinstance(element, _Pick):
            picks.append(element)
    return picks


def _state_at(elems: list[Any], j: int, completed: str) -> str:
    """The state entered at element ``j`` of an expanded route (``completed`` past its end)."""
    if j >= len(elems):
        return completed
    element = elems[j]
    if isinstance(element, _Pick):
        return choice_state(element.choice)
    return step_state(element.name)


def _backward(steps: list[Step], index: int, compensated: str) -> str:
    """The first compensation to run when every step up to ``index`` is to be undone."""
    for j in range(index, -1, -1):
        if steps[j].undoable:
            return compensation_state(steps[j].name)
    return compensated


def _sequence_edges(elems: list[Any], completed: str, compensated: str,
                    failed: str) -> list[Edge]:
    """The edges of one expanded route (or parallel branch) — DESIGN.md §4.2–4.3."""
    steps = [e for e in elems if not isinstance(e, _Pick)]
    position = {step.name: i for i, step in enumerate(steps)}
    pivot = next((i for i, step in enumerate(steps) if step.pivot), None)

    def backward_from(index: int) -> str:
        return _backward(steps, index, compensated)

    edges: list[Edge] = []
    for j, element in enumerate(elems):
        following = _state_at(elems, j + 1, completed)
        if isinstance(element, _Pick):
            edges.append(Edge(choice_state(element.choice), "chosen", following,
                              label=element.branch))
            continue
        step, i = element, position[element.name]
        state = step_state(step.name)
        edges.append(Edge(state, "succeeded", following))
        if not step.calls_service:  # a delay or a wait is never rejected: it is exhausted
            # by a cancel, the deadline, or (a wait) its timeout; a parallel block when one
            # of its branches fails (so it is compensated: its other branches stop, and every
            # branch undoes what it did)
            if pivot is None or i < pivot:
                edges.append(Edge(state, "exhausted", backward_from(i)))
            else:
                edges.append(Edge(state, "exhausted", failed, "forward_recovery"))
        elif pivot is None or i < pivot:
            edges.append(Edge(state, "rejected", backward_from(i - 1)))
            edges.append(Edge(state, "exhausted", backward_from(i)))
        elif i == pivot:
            edges.append(Edge(state, "rejected", backward_from(i - 1)))
            edges.append(Edge(state, "exhausted", failed, "pivot_unknown"))
        else:
            edges.append(Edge(state, "rejected", failed, "forward_recovery"))
            edges.append(Edge(state, "exhausted", failed, "forward_recovery"))
        if step.undoable:
            comp = compensation_state(step.name)
            edges.append(Edge(comp, "succeeded", backward_from(i - 1)))
            if step.on_compensation_failure == "park":
                edges.append(Edge(comp, "exhausted", failed, "compensation_failed"))
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
