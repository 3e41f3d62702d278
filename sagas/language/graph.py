"""Diagrams of a compiled flow's state machine: Mermaid ``stateDiagram-v2`` and Graphviz DOT.

Both are drawn from the machine's own states and transitions, so the picture is the engine.
"""

from __future__ import annotations

import re

from .compiler import (
    BRANCH_PREFIX,
    CHOICE_PREFIX,
    COMPENSATION_PREFIX,
    STEP_PREFIX,
    TERMINAL_STATES,
    CompiledFlow,
    Edge,
)
from .model import format_duration

__all__ = ["FORMATS", "render", "to_dot", "to_mermaid"]

FORMATS = ("mermaid", "dot")


def _label(compiled: CompiledFlow, state: str) -> str:
    info = compiled.info.get(state)
    if state.startswith(CHOICE_PREFIX):
        return f"{state[len(CHOICE_PREFIX):]}: choose a branch"
    if state.startswith(BRANCH_PREFIX):
        track, _, end = state[len(BRANCH_PREFIX):].rpartition(":")
        meaning = {"completed": "done, waits for the others", "compensated": "undone",
                   "failed": "compensation failed"}[end]
        return f"branch {track}: {meaning}"
    if info is None:
        return state
    step = info.step
    if step.branches is not None:
        names = ", ".join(b.name for b in step.branches)
        if state.startswith(STEP_PREFIX):
            return f"{step.name}: run {names} at once"
        return f"undo {step.name}: undo {names} at once, each in reverse"
    if step.is_delay and step.delay is not None:
        return f"{step.name}: wait {format_duration(step.delay)}"
    if step.is_wait:
        return f"{step.name}: wait for {step.wait_event} ({step.wait_key})"
    if state.startswith(STEP_PREFIX):
        extra = " (pivot)" if step.pivot else ""
        return f"{step.name}{extra}: {step.service}.{step.action}"
    return f"undo {step.name}: {step.service}.{step.compensation}"


def _edge_label(compiled: CompiledFlow, edge: Edge) -> str:
    if edge.trigger == "chosen":
        choice = compiled.choices[edge.source[len(CHOICE_PREFIX):]]
        branch = next(b for b in choice.branches if b.name == edge.label)
        return f"{branch.name}: {branch.when.describe()}" if branch.when else "default"
    text = f"{edge.trigger} [{edge.reason}]" if edge.reason else edge.trigger
    return f"{text} ({edge.label})" if edge.label else text


def _forks(compiled: CompiledFlow) -> list[tuple[str, str, str]]:
    """Where a parallel block starts its branches, and where undoing it starts each branch's
    undo: drawn dashed, as they are not transitions of one machine but the branches' starts."""
    forks = []
    for track, (block, branch) in compiled.tracks.items():
        forks.append((STEP_PREFIX + block.name, compiled.track_initial[track],
                      f"starts {branch.name}"))
        undo = compiled.undo_entry[track]
        if block.undoable and undo.startswith(COMPENSATION_PREFIX):
            forks.append((COMPENSATION_PREFIX + block.name, undo, f"undoes {branch.name}"))
    return forks


def mermaid_id(state: str) -> str:
    """A Mermaid-safe identifier for a state name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", state)


def to_mermaid(compiled: CompiledFlow) -> str:
    lines = ["stateDiagram-v2"]
    if compiled.flow.description:
        description = " ".join(compiled.flow.description.split())
        lines.append(f"    %% {compiled.flow.name} v{compiled.flow.version}: {description}")
    for state in compiled.states:
        lines.append(f'    state "{_label(compiled, state)}" as {mermaid_id(state)}')
        if state.startswith(CHOICE_PREFIX):
            lines.append(f"    state {mermaid_id(state)} <<choice>>")
    lines.append(f"    [*] --> {mermaid_id(compiled.initial)}")
    for edge in compiled.edges:
        lines.append(f"    {mermaid_id(edge.source)} --> {mermaid_id(edge.dest)} : "
                     f"{_edge_label(compiled, edge)}")
    for source, dest, text in _forks(compiled):
        lines.append(f"    {mermaid_id(source)} --> {mermaid_id(dest)} : {text}")
    for state in TERMINAL_STATES:
        lines.append(f"    {mermaid_id(state)} --> [*]")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(compiled: CompiledFlow) -> str:
    lines = [f"digraph {_quote(compiled.flow.name)} {{", "    rankdir=LR;",
             '    node [shape=box, style=rounded, fontname="Helvetica"];',
             '    edge [fontname="Helvetica", fontsize=10];',
             '    start [shape=point, width=0.15, label=""];']
    for state in compiled.states:
        attrs = [f"label={_quote(_label(compiled, state))}"]
        if state in TERMINAL_STATES:
            attrs.append("shape=doublecircle")
            attrs.append({"completed": "color=darkgreen", "compensated": "color=darkorange",
                          "failed": "color=red"}[state])
        elif state.startswith(COMPENSATION_PREFIX):
            attrs.append("color=darkorange")
        lines.append(f"    {_quote(state)} [{', '.join(attrs)}];")
    lines.append(f"    start -> {_quote(compiled.initial)};")
    for edge in compiled.edges:
        lines.append(f"    {_quote(edge.source)} -> {_quote(edge.dest)} "
                     f"[label={_quote(_edge_label(compiled, edge))}];")
    for source, dest, text in _forks(compiled):
        lines.append(f"    {_quote(source)} -> {_quote(dest)} [label={_quote(text)}, "
                     "style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(compiled: CompiledFlow, fmt: str = "mermaid") -> str:
    if fmt == "mermaid":
        return to_mermaid(compiled)
    if fmt == "dot":
        return to_dot(compiled)
    raise ValueError(f"unknown graph format {fmt!r}: use one of {', '.join(FORMATS)}")
