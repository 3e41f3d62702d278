"""A saga on its flow's diagram: the compiled state machine's states and transitions (what
``saga graph`` draws), laid out in columns, with what the saga's log says of each: the states
it went through, the transitions it took, the state it is in now or the one it failed at.

Drawn from the stored flow text (the definition the saga runs on), parsed without importing
its services: the console never runs code a stored flow names.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from ..events import (
    BRANCH_COMPENSATED,
    BRANCH_COMPLETED,
    BRANCH_FAILED,
    CHOICE_MADE,
    TERMINAL_EVENTS,
    Event,
)
from ..language.compiler import CompiledFlow, compile_flow
from ..language.graph import mermaid_id, to_mermaid
from ..language.loader import parse_flow
from ..stores import TERMINAL, SagaRecord

__all__ = ["compiled_definition", "saga_diagram"]

_LANES = {"step": 0, "choice": 1, "branch": 2, "compensation": 3, "terminal": 4}
_BRANCH_END = {BRANCH_COMPLETED: "completed", BRANCH_COMPENSATED: "compensated",
               BRANCH_FAILED: "failed"}
_STATE_LINE = re.compile(r'^\s*state "(.*)" as (\S+)$')
_EDGE_LINE = re.compile(r"^\s*(\S+) --> (\S+) : (.*)$")

_compiled: dict[str, CompiledFlow] = {}
_compiled_lock = threading.Lock()


def compiled_definition(sha256: str, text: str) -> CompiledFlow:
    """The compiled machine of a stored definition (parsed once per sha256; its services are
    not imported). ``FlowErrors`` if the text no longer validates."""
    with _compiled_lock:
        found = _compiled.get(sha256)
    if found is None:
        found = compile_flow(parse_flow(text, source=f"<definition {sha256[:12]}>"))
        with _compiled_lock:
            if len(_compiled) > 128:
                _compiled.clear()
            _compiled[sha256] = found
    return found


def _kind(state: str) -> str:
    head = state.split(":", 1)[0]
    return head if head in ("step", "compensation", "choice", "branch") else "terminal"


def _labels(compiled: CompiledFlow, mermaid: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The states' labels and the transitions (with theirs) as ``saga graph`` writes them."""
    by_id = {mermaid_id(state): state for state in compiled.states}
    labels: dict[str, str] = {}
    drawn: list[tuple[str, str, str]] = []
    for line in mermaid.splitlines():
        if (state := _STATE_LINE.match(line)) is not None:
            labels[by_id.get(state.group(2), state.group(2))] = state.group(1)
        elif (edge := _EDGE_LINE.match(line)) is not None:
            drawn.append((by_id.get(edge.group(1), edge.group(1)),
                          by_id.get(edge.group(2), edge.group(2)), edge.group(3)))
    edges: list[dict[str, Any]] = []
    for index, (source, dest, text) in enumerate(drawn):
        if index < len(compiled.edges):  # the machine's transitions, in order, then the forks
            edge = compiled.edges[index]
            edges.append({"source": edge.source, "dest": edge.dest, "trigger": edge.trigger,
                          "branch": edge.label if edge.trigger == "chosen" else None,
                          "label": text, "fork": False})
        else:
            edges.append({"source": source, "dest": dest, "trigger": None, "branch": None,
                          "label": text, "fork": True})
    return labels, edges


def _final(events: Sequence[Event], index: int) -> bool:
    """Whether the failure at ``events[index]`` was its step's last word in that phase (no
    ``retrying`` of the same step and phase follows before its next attempt starts)."""
    failed = events[index]
    phase = failed.type.split(".", 1)[0]
    for later in events[index + 1:]:
        if later.step == failed.step and later.type.split(".", 1)[0] == phase:
            return not later.type.endswith(".retrying")
    return True


def _walk(events: Sequence[Event]) -> tuple[dict[str, str], set[tuple[str, str, str | None]],
                                            list[str], list[dict[str, Any]], list[str]]:
    """What the log says: each state's status, the (state, trigger, branch) transitions
    taken, the states in the order first entered, the choices made and parallel branches
    ended, and the states that failed, in order."""
    status: dict[str, str] = {}
    taken: set[tuple[str, str, str | None]] = set()
    route: list[str] = []
    choices: list[dict[str, Any]] = []
    failures: list[str] = []

    def enter(state: str) -> None:
        if state not in route:
            route.append(state)

    for index, event in enumerate(events):
        kind, _, what = event.type.partition(".")
        if kind in ("step", "compensation") and event.step is not None:
            state = f"{kind}:{event.step}"
            enter(state)
            if what == "started":
                status[state] = "active"
            elif what == "retrying":
                status[state] = "retrying"
            elif what == "succeeded":
                status[state] = "succeeded"
                taken.add((state, "succeeded", None))
            elif what in ("failed", "timed_out"):
                rejected = what == "failed" and event.data.get("kind") == "rejected"
                if rejected or _final(events, index):
                    status[state] = "failed"
                    taken.add((state, "rejected" if rejected else "exhausted", None))
                    failures.append(state)
                else:
                    status[state] = "retrying"
        elif event.type == CHOICE_MADE and event.step is not None:
            state = f"choice:{event.step}"
            enter(state)
            status[state] = "succeeded"
            branch = event.data.get("branch")
            taken.add((state, "chosen", branch if isinstance(branch, str) else None))
            choices.append({"choice": event.step, "branch": branch, "seq": event.seq})
        elif event.type in _BRANCH_END and isinstance(event.data.get("branch"), str):
            state = f"branch:{event.data['branch']}:{_BRANCH_END[event.type]}"
            enter(state)
            status[state] = "visited"
            choices.append({"branch_of": event.step, "track": event.data["branch"],
                            "ended": _BRANCH_END[event.type], "seq": event.seq})
        elif event.type in TERMINAL_EVENTS:
            state = TERMINAL_EVENTS[event.type]
            enter(state)
            status[state] = "visited"
    return status, taken, route, choices, failures


def _ranks(states: Sequence[str], initial: str, edges: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each state's column: the longest path to it from the initial state (the machine is
    acyclic: retries happen inside a state), states out of reach after the others."""
    outgoing: dict[str, list[str]] = {}
    incoming: dict[str, int] = dict.fromkeys(states, 0)
    for edge in edges:
        outgoing.setdefault(edge["source"], []).append(edge["dest"])
        incoming[edge["dest"]] = incoming.get(edge["dest"], 0) + 1
        incoming.setdefault(edge["source"], 0)
    rank = dict.fromkeys(incoming, 0)
    ready = [state for state, count in incoming.items() if count == 0]
    seen = 0
    while ready:  # Kahn's order: every state after all of its predecessors
        state = ready.pop()
        seen += 1
        for dest in outgoing.get(state, ()):
            rank[dest] = max(rank[dest], rank[state] + 1)
            incoming[dest] -= 1
            if incoming[dest] == 0:
                ready.append(dest)
    if seen < len(rank):  # not acyclic after all: give up on columns, keep the order
        rank = {state: index for index, state in enumerate(rank)}
    if initial in rank and rank[initial] != 0:
        rank[initial] = 0
    return rank


def _layout(states: Sequence[str], initial: str,
            edges: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(column, row) of each state: columns by :func:`_ranks`; in a column the steps first,
    then choices, branch ends, compensations and the saga's ends."""
    ranks = _ranks(states, initial, edges)
    order = {state: index for index, state in enumerate(states)}
    columns: dict[int, list[str]] = {}
    for state in sorted(ranks, key=lambda s: (_LANES[_kind(s)], order.get(s, len(order)))):
        columns.setdefault(ranks[state], []).append(state)
    return {state: (column, row) for column, members in columns.items()
            for row, state in enumerate(members)}


def saga_diagram(record: SagaRecord) -> dict[str, Any]:
    """The diagram of ``record``'s flow with the saga on it (see the module docstring)::

        {"saga_id", "flow", "version", "definition", "status", "reason", "mermaid",
         "initial", "columns", "rows",
         "nodes": [{"id", "label", "kind", "step", "column", "row", "status", "marked"}],
         "edges": [{"source", "dest", "trigger", "branch", "label", "fork", "taken"}],
         "marked": {"states": [...], "why": "current" | "failed" | "ended"},
         "route": [state, ...], "choices": [...], "error": null}

    A node's ``status`` is ``null`` (not reached), ``active`` (an attempt in flight),
    ``retrying`` (waiting to try again), ``succeeded``, ``failed`` (rejected, or out of
    attempts / timed out for good) or ``visited`` (an end reached). ``marked``: the states
    the saga is in now (in flight), the state it failed at (``failed``, or the failure that
    made it compensate), or its end. ``route``: the states in the order the saga entered
    them. A definition that no longer parses gives ``error`` and no nodes."""
    header = record.header
    shape: dict[str, Any] = {
        "saga_id": header.saga_id, "flow": header.flow, "version": header.version,
        "definition": header.definition, "status": header.status, "reason": header.reason,
        "mermaid": None, "initial": None, "columns": 0, "rows": 0, "nodes": [], "edges": [],
        "marked": {"states": [], "why": None}, "route": [], "choices": [], "error": None}
    try:
        compiled = compiled_definition(header.definition, record.definition_text)
    except Exception as exc:  # a stored text this version no longer accepts: say why
        shape["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return shape
    mermaid = to_mermaid(compiled)
    labels, edges = _labels(compiled, mermaid)
    states = list(dict.fromkeys([*compiled.states, *(e["source"] for e in edges),
                                 *(e["dest"] for e in edges)]))
    status, taken, route, choices, failures = _walk(record.events)
    for edge in edges:
        if edge["fork"]:
            edge["taken"] = edge["source"] in status and edge["dest"] in status
        else:
            edge["taken"] = (edge["source"], edge["trigger"], edge["branch"]) in taken \
                and edge["dest"] in status
    if header.status not in TERMINAL:
        marked = [s for s in route if status.get(s) in ("active", "retrying")]
        why = "current"
    elif header.status == "completed":
        marked, why = ["completed"], "ended"
    else:
        marked = failures[-1:] if header.status == "failed" else failures[:1]
        why = "failed" if marked else "ended"
        marked = marked or [header.status]
    places = _layout(states, compiled.initial, edges)
    shape.update({
        "mermaid": mermaid, "initial": compiled.initial,
        "columns": 1 + max((c for c, _ in places.values()), default=-1),
        "rows": 1 + max((r for _, r in places.values()), default=-1),
        "nodes": [{"id": state, "label": labels.get(state, state), "kind": _kind(state),
                   "step": state.split(":", 1)[1] if _kind(state) in ("step", "compensation")
                   else None,
                   "column": places[state][0], "row": places[state][1],
                   "status": status.get(state), "marked": state in marked}
                  for state in states],
        "edges": edges, "marked": {"states": marked, "why": why}, "route": route,
        "choices": choices})
    return shape
