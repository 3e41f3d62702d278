"""Recovery plans: what happens if a step fails a given way — read off the compiled machine.

``saga plan`` and the property tests use this to state, before anything runs, which steps are
compensated and in which order, or why a saga would end ``failed``. It walks the same lookup
table the engine drives sagas with, so the plan cannot disagree with the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compiler import STEP_PREFIX, TERMINAL_STATES, CompiledFlow, step_state

__all__ = ["KINDS", "Plan", "plan", "plans"]

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

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "version": self.version,
            "fail": self.step,
            "kind": self.kind,
            "ran": list(self.ran),
            "compensations": [{"step": s, "compensation": c} for s, c in self.compensations],
            "status": self.status,
            "reason": self.reason,
        }


def plan(compiled: CompiledFlow, step: str, kind: str = "rejected") -> Plan:
    """The recovery plan if ``step`` fails with ``kind`` (``rejected``, ``error``, ``timeout``).

    ``error`` and ``timeout`` mean the step's attempts ran out that way. Raises ``KeyError`` for
    an unknown step and ``ValueError`` for an unknown kind or a ``delay`` step (a pause cannot
    fail: only a cancel or the deadline stops it, and that recovers as an exhausted step).
    """
    if kind not in _TRIGGER:
        raise ValueError(f"unknown failure kind {kind!r}: use one of {', '.join(KINDS)}")
    found = compiled.flow.step(step)  # KeyError for an unknown step
    if found.is_delay:
        raise ValueError(f"step {step!r} is a delay: it cannot fail")
    if found.is_wait and kind != "timeout":
        raise ValueError(f"step {step!r} waits for an event: it can only time out")
    target = step_state(step)
    state = compiled.initial
    ran: list[str] = []
    while state != target:
        ran.append(state[len(STEP_PREFIX):])
        move = compiled.next(state, "succeeded")
        assert move is not None, f"no way forward from {state}"
        state = move[0]
    ran.append(step)
    move = compiled.next(state, _TRIGGER[kind])
    assert move is not None, f"no {kind} transition from {state}"
    state, reason = move
    compensations: list[tuple[str, str]] = []
    while state not in TERMINAL_STATES:
        info = compiled.info[state]
        assert info.phase == "compensation"
        compensations.append((info.step.name, info.step.compensation or ""))
        move = compiled.next(state, "succeeded")
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
    )


def plans(compiled: CompiledFlow) -> list[Plan]:
    """The plan for every step that can fail (not the delays) and every kind it can fail with
    (a wait only times out), in step order."""
    return [plan(compiled, s.name, kind) for s in compiled.flow.steps if not s.is_delay
            for kind in (("timeout",) if s.is_wait else KINDS)]
