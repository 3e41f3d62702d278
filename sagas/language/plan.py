"""Recovery plans: what happens if a step fails a given way — read off the compiled machine.

``saga plan`` and the property tests use this to state, before anything runs, which steps are
compensated and in which order, or why a saga would end ``failed``. It walks the same lookup
table the engine drives sagas with, so the plan cannot disagree with the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compiler import CHOICE_PREFIX, STEP_PREFIX, TERMINAL_STATES, CompiledFlow, step_state
from .model import Branch, Step

__all__ = ["KINDS", "Plan", "check_failable", "failable_steps", "plan", "plans", "route_plans"]

KINDS = ("rejected", "error", "timeout")
_TRIGGER = {"rejected": "rejected", "error": "exhausted", "timeout": "exhausted"}


@dataclass(frozen=True, slots=True)
class Plan:
    """If ``step`` fails with ``kind`` (after its retries): the compensations, then the end."""

    flow: str
    version: int
    step: str
    kind: str
    ran: tuple[str, ...]  # steps whose actions ran, the failing one last
    compensations: tuple[tuple[str, str], ...]  # (step, compensation action), in order
    status: str
    reason: str | None
    route: tuple[tuple[str, str], ...] = ()  # (choice, branch) taken before the step, in order

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "version": self.version,
            "fail": self.step,
            "kind": self.kind,
            "route": [{"choice": c, "branch": b} for c, b in self.route],
            "ran": list(self.ran),
            "compensations": [{"step": s, "compensation": c} for s, c in self.compensations],
            "status": self.status,
            "reason": self.reason,
        }

    def describe_route(self) -> str:
        """``by_size: large, region: eu``, or empty without choices."""
        return ", ".join(f"{choice}: {branch}" for choice, branch in self.route)


def plan(compiled: CompiledFlow, step: str, kind: str = "rejected",
         route: tuple[str, ...] | None = None) -> Plan:
    """The recovery plan if ``step`` fails with ``kind`` (``rejected``, ``error``, ``timeout``).

    ``error`` and ``timeout`` mean the step's attempts ran out that way. Raises ``KeyError`` for
    an unknown step and ``ValueError`` for an unknown kind or a ``delay`` step (a pause cannot
    fail: only a cancel or the deadline stops it, and that recovers as an exhausted step).

    In a flow with choices, ``route`` (the branches taken) picks the path; by default the first
    path on which ``step`` runs. A step in a parallel branch is planned as if the other
    branches had finished: every step they did is undone too, concurrently.
    """
    if kind not in _TRIGGER:
        raise ValueError(f"unknown failure kind {kind!r}: use one of {', '.join(KINDS)}")
    found = compiled.flow.step(step)  # KeyError for an unknown step
    if found.is_delay:
        raise ValueError(f"step {step!r} is a delay: it cannot fail")
    if found.is_parallel:
        raise ValueError(f"step {step!r} is a parallel block: plan one of its branches' steps")
    if found.is_wait and kind != "timeout":
        raise ValueError(f"step {step!r} waits for an event: it can only time out")
    track = compiled.track_of.get(step)
    block = compiled.flow.step(track.rsplit(".", 1)[0]) if track is not None else None
    main_target = block.name if block is not None else step
    if route is None or compiled.route_steps(route) == () or not any(
            s.name == main_target for s in compiled.route_steps(route)):
        route = compiled.routes_to(main_target)
    assert route is not None
    ran: list[str] = []
    state, picks = compiled.initial, 0
    taken: list[tuple[str, str]] = []
    while state != step_state(main_target):  # forward, along the route that reaches the step
        if state.startswith(CHOICE_PREFIX):
            picks += 1
            taken.append((state[len(CHOICE_PREFIX):], route[picks - 1]))
            move = compiled.next(state, "chosen", route[:picks])
        else:
            ran.extend(_ran(compiled, compiled.info[state].step))
            move = compiled.next(state, "succeeded", route[:picks])
        assert move is not None, f"no way forward from {state}"
        state = move[0]
    compensations: list[tuple[str, str]] = []
    if block is None:
        ran.append(step)
        move = compiled.next(state, _TRIGGER[kind], route[:picks])
    else:  # in a branch: the branch undoes itself, the others (assumed done) are undone, then
        # the steps before the block
        assert block.branches is not None and track is not None
        others = [b for b in block.branches if f"{block.name}.{b.name}" != track]
        branch = next(b for b in block.branches if f"{block.name}.{b.name}" == track)
        for other in others:
            ran.extend(s.name for s in other.steps)
        branch_state = compiled.track_initial[track]
        while branch_state != step_state(step):
            ran.append(branch_state[len(STEP_PREFIX):])
            found = compiled.next(branch_state, "succeeded", track)
            assert found is not None
            branch_state = found[0]
        ran.append(step)
        found = compiled.next(branch_state, _TRIGGER[kind], track)
        assert found is not None
        compensations.extend(_walk_back(compiled, found[0], track))
        for other in others:
            compensations.extend(_branch_undo(other))
        move = compiled.next(state, "exhausted", route[:picks])
    assert move is not None, f"no {kind} transition from {state}"
    state, reason = move
    while state not in TERMINAL_STATES:
        info = compiled.info[state]
        assert info.phase == "compensation"
        if info.step is block:
            pass  # its branches' compensations are listed above
        elif info.step.branches is not None:
            for branch in info.step.branches:
                compensations.extend(_branch_undo(branch))
        else:
            compensations.append((info.step.name, info.step.compensation or ""))
        move = compiled.next(state, "succeeded", route[:picks])
        assert move is not None
        state, reason = move
    return Plan(
        flow=compiled.flow.name,
        version=compiled.flow.version,
        step=step,
        kind=kind,
        ran=tuple(ran),
        compensations=tuple(compensations),
        status=state,
        reason=reason,
        route=tuple(taken),
    )


def _ran(compiled: CompiledFlow, step: Step) -> list[str]:
    """The actions that ran when ``step`` succeeded: a parallel block's are its branches'."""
    if step.branches is None:
        return [step.name]
    return [s.name for b in step.branches for s in b.steps]


def _branch_undo(branch: Branch) -> list[tuple[str, str]]:
    """Undoing a whole branch: its compensations, last step first."""
    return [(s.name, s.compensation) for s in reversed(branch.steps) if s.compensation]


def _walk_back(compiled: CompiledFlow, state: str, track: str) -> list[tuple[str, str]]:
    """The compensations a branch runs from ``state`` until it has ended."""
    found: list[tuple[str, str]] = []
    while state not in compiled.branch_terminals:
        info = compiled.info[state]
        found.append((info.step.name, info.step.compensation or ""))
        move = compiled.next(state, "succeeded", track)
        assert move is not None
        state = move[0]
    return found


def route_plans(compiled: CompiledFlow, step: str, kind: str = "rejected") -> list[Plan]:
    """The plans of ``step`` failing with ``kind`` along every route through the flow's
    choices that reaches it, one per distinct recovery (first route first)."""
    track = compiled.track_of.get(step)  # a branch step runs where its block runs
    main = track.rsplit(".", 1)[0] if track is not None else step
    routes = compiled.routes_with(main) or [None]
    found: list[Plan] = []
    seen = set()
    for route in routes:
        p = plan(compiled, step, kind, route=route)
        outcome = (p.route, p.compensations, p.status, p.reason)
        if outcome not in seen:
            seen.add(outcome)
            found.append(p)
    distinct = {(p.compensations, p.status, p.reason) for p in found}
    return found if len(distinct) > 1 else found[:1]


def plans(compiled: CompiledFlow) -> list[Plan]:
    """The plans for every step that can fail (not the delays, not a parallel block itself)
    and every kind it can fail with (a wait only times out), in step order; a step whose
    recovery depends on the branches taken before it has one plan per such route."""
    return [p for s in compiled.flow.steps if not s.is_delay and not s.is_parallel
            for kind in (("timeout",) if s.is_wait else KINDS)
            for p in route_plans(compiled, s.name, kind)]


def failable_steps(compiled: CompiledFlow) -> list[str]:
    """The steps that can fail, so have a plan: every step but delays and parallel blocks
    (a block fails through its branches' steps)."""
    return [s.name for s in compiled.flow.steps if not s.is_delay and not s.is_parallel]


def check_failable(compiled: CompiledFlow, step: str) -> None:
    """``ValueError`` saying why ``step`` has no plan of its own (unknown, a delay, a block)."""
    names = failable_steps(compiled)
    if step in names:
        return
    found = next((s for s in compiled.flow.steps if s.name == step), None)
    if found is not None and found.is_parallel:
        raise ValueError(f"step {step!r} is a parallel block: plan one of its branches' steps "
                         f"(steps that can fail: {', '.join(names)})")
    if found is not None:
        raise ValueError(f"step {step!r} is a delay, which cannot fail (steps that can: "
                         f"{', '.join(names)})")
    raise ValueError(f"no step {step!r} in flow {compiled.flow.name} (steps: {', '.join(names)})")
