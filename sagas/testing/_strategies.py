"""Hypothesis strategies for property-testing flows: fault schedules and saga inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from ..language.model import Flow
from ._harness import FAULTS, PERSISTENT_FAULTS, Schedule

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
                    crashes: bool = True, max_attempt: int = 3,
                    min_faults: int = 1) -> st.SearchStrategy[Schedule]:
    """Schedules of ``min_faults`` to ``max_faults`` faults (of ``kinds``) over the flow's
    steps and attempts, plus, if ``crashes``, maybe one runtime crash and resume.

    A fault strikes one attempt, or is *persistent*: every attempt of one action or
    compensation, however many it has (one fault, never split when shrinking). Failures
    that make a saga compensate (a step that says no) and trouble while compensating are
    drawn more often: that is where recovery bugs hide. Shrinks towards fewer faults and no
    crash. For covering every single fault systematically, see :func:`fault_sweep`.
    """
    points = fault_points(flow, max_attempt)
    if not points:  # no step calls a service: only the runtime can crash
        if not crashes:
            return st.just(Schedule())
        return st.builds(lambda crash: Schedule(crash_after=crash),
                         st.integers(min_value=1, max_value=6 * len(flow.steps) + 6))
    targets = sorted({(phase, step) for phase, step, _ in points
                      if flow.step(step).calls_service})
    kind = st.sampled_from(list(kinds))
    lasting = [k for k in PERSISTENT_FAULTS if k in kinds]
    single = st.tuples(st.just("once"), st.sampled_from(points), kind)
    options = [single]
    if targets and lasting:
        options.append(st.tuples(st.just("every"), st.sampled_from(targets),
                                 st.sampled_from(lasting)))
    if "reject" in kinds:
        options.append(st.tuples(st.just("once"), st.sampled_from(
            [("action", s.name, 1) for s in flow.steps if s.calls_service or s.is_wait]),
            st.just("reject")))
    undoable = [p for p in points if p[0] == "compensation" and p[2] == 1]
    if undoable:
        options.append(st.tuples(st.just("once"), st.sampled_from(undoable), kind))
    groups = st.lists(st.one_of(*options), min_size=min_faults, max_size=max_faults)

    def build(parts: list[tuple[str, Any, str]], crash: int | None) -> Schedule:
        faults: dict[tuple[str, str, int], str] = {}
        persistent: dict[tuple[str, str], str] = {}
        for how, where, what in parts:
            if how == "every":
                persistent[where] = what
            else:
                faults[where] = what
        return Schedule(faults, crash, persistent)

    crash = st.none() | st.integers(min_value=1, max_value=6 * len(flow.steps) + 6) \
        if crashes else st.none()
    return st.builds(build, groups, crash)


def inputs(flow: Flow, examples: Sequence[Any] = (),
           strategy: st.SearchStrategy[Any] | None = None, *, routes: bool = True,
           services: Mapping[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Saga inputs: from ``strategy`` if given, else drawn from ``examples`` if any, else
    inputs that reach the flow's routes (the happy path, each choice branch, each business
    "no" the services give: see :func:`explore_routes`; found on first use, with
    ``services``) mixed with inputs generated from the input JSON Schema
    (``hypothesis-jsonschema``), else ``{}``."""
    if strategy is not None:
        return strategy
    if examples:
        return st.sampled_from(list(examples))
    if flow.input_schema is None:
        return st.just({})
    from hypothesis_jsonschema import from_schema

    drawn = from_schema(dict(flow.input_schema))
    if not routes:
        return drawn

    def reaching() -> st.SearchStrategy[Any]:
        from ._routes import explore_routes

        found = [route.input for route in explore_routes(flow, services=services)]
        return st.sampled_from(found) if found else drawn

    return st.one_of(st.deferred(reaching), drawn)


def batches(flow: Flow, *, max_sagas: int = 4, max_faults: int = 2,
            examples: Sequence[Any] = (), strategy: st.SearchStrategy[Any] | None = None,
            ) -> st.SearchStrategy[tuple[list[tuple[Any, Schedule]], int | None]]:
    """Batches of concurrent sagas for :func:`~sagas.testing.run_batch`: a list of
    ``(input, schedule)`` and a crash point (or None) for the whole batch."""
    one = st.tuples(inputs(flow, examples, strategy),
                    fault_schedules(flow, max_faults=max_faults, crashes=False))
    crash = st.none() | st.integers(min_value=1, max_value=6 * len(flow.steps) * max_sagas)
    return st.tuples(st.lists(one, min_size=2, max_size=max_sagas), crash)
