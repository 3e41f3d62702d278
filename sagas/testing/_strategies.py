"""Hypothesis strategies for property-testing flows: fault schedules and saga inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from ..model import Flow
from ._harness import FAULTS, Schedule

__all__ = ["batches", "fault_schedules", "inputs"]


def fault_points(flow: Flow, max_attempt: int = 3) -> list[tuple[str, str, int]]:
    """Every ``(phase, step, attempt)`` a fault can hit: the actions, and the compensations of
    steps that have one, up to ``max_attempt`` attempts (or the step's own limit)."""
    points = []
    for step in flow.steps:
        if step.is_delay or step.is_parallel:
            continue  # a pause calls no service, nor does a block (its branches' steps do)
        if step.is_wait:  # a fault on a wait: its event never comes, so it times out
            points.append(("action", step.name, 1))
            continue
        attempts = min(step.retry.attempts, max_attempt)
        phases = ("action", "compensation") if step.compensation else ("action",)
        for phase in phases:
            points.extend((phase, step.name, n) for n in range(1, attempts + 1))
    return points


def fault_schedules(flow: Flow, *, max_faults: int = 3, kinds: Sequence[str] = FAULTS,
                    crashes: bool = True, max_attempt: int = 3) -> st.SearchStrategy[Schedule]:
    """Schedules of up to ``max_faults`` fault groups (of ``kinds``) over the flow's steps and
    attempts, plus, if ``crashes``, maybe one runtime crash and resume.

    A group is one fault on one attempt, or the same fault on every attempt of one step's
    action or compensation (a step that keeps failing, so recovery is exercised). Shrinks
    towards fewer faults and no crash.
    """
    points = fault_points(flow, max_attempt)
    targets = sorted({(phase, step) for phase, step, _ in points})
    attempts = {target: [n for p, s, n in points if (p, s) == target] for target in targets}
    kind = st.sampled_from(list(kinds))
    single = st.tuples(st.sampled_from(points), kind).map(lambda pk: {pk[0]: pk[1]})
    persistent = st.tuples(st.sampled_from(targets), kind).map(
        lambda tk: {(tk[0][0], tk[0][1], n): tk[1] for n in attempts[tk[0]]})
    options = [single, persistent]
    # weight the two situations where recovery bugs hide: a step that says no (so the saga
    # compensates), and trouble while compensating
    if "reject" in kinds:
        options.append(st.sampled_from([s.name for s in flow.steps
                                        if s.calls_service or s.is_wait]).map(
            lambda name: {("action", name, 1): "reject"}))
    undoable = [t for t in targets if t[0] == "compensation"]
    if undoable:
        options.append(st.tuples(st.sampled_from(undoable), kind).map(
            lambda tk: {(tk[0][0], tk[0][1], 1): tk[1]}))
    groups = st.lists(st.one_of(*options), max_size=max_faults)

    def merge(parts: list[dict[tuple[str, str, int], str]]) -> dict[tuple[str, str, int], str]:
        merged: dict[tuple[str, str, int], str] = {}
        for part in parts:
            merged.update(part)
        return merged

    crash = st.none() | st.integers(min_value=1, max_value=6 * len(flow.steps) + 6) \
        if crashes else st.none()
    return st.builds(Schedule, groups.map(merge), crash)


def inputs(flow: Flow, examples: Sequence[Any] = (),
           strategy: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Saga inputs: from ``strategy`` if given, else drawn from ``examples`` if any, else
    generated from the flow's input JSON Schema (``hypothesis-jsonschema``), else ``{}``."""
    if strategy is not None:
        return strategy
    if examples:
        return st.sampled_from(list(examples))
    if flow.input_schema is None:
        return st.just({})
    from hypothesis_jsonschema import from_schema

    return from_schema(dict(flow.input_schema))


def batches(flow: Flow, *, max_sagas: int = 4, max_faults: int = 2,
            examples: Sequence[Any] = (), strategy: st.SearchStrategy[Any] | None = None,
            ) -> st.SearchStrategy[tuple[list[tuple[Any, Schedule]], int | None]]:
    """Batches of concurrent sagas for :func:`~sagas.testing.run_batch`: a list of
    ``(input, schedule)`` and a crash point (or None) for the whole batch."""
    one = st.tuples(inputs(flow, examples, strategy),
                    fault_schedules(flow, max_faults=max_faults, crashes=False))
    crash = st.none() | st.integers(min_value=1, max_value=6 * len(flow.steps) * max_sagas)
    return st.tuples(st.lists(one, min_size=2, max_size=max_sagas), crash)
