"""``saga test``: property-test a flow with its declared services under generated faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from ..model import Flow
from ._harness import FAULTS, HarnessRun, Schedule, run_schedule
from ._invariants import InvariantViolation, check_invariants
from ._strategies import fault_points, fault_schedules, inputs

__all__ = ["FlowTestReport", "test_flow"]


@dataclass
class FlowTestReport:
    """What a property test of a flow did, and the shrunk counterexample if one was found."""

    flow: str
    examples: int = 0
    invariants: set[str] = field(default_factory=set)
    not_checked: set[str] = field(default_factory=set)
    paths: set[tuple[Any, ...]] = field(default_factory=set)
    failure: InvariantViolation | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def counterexample(self) -> HarnessRun | None:
        return None if self.failure is None else self.failure.run

    def describe(self) -> str:
        lines = [f"{self.flow}: {self.examples} examples, "
                 f"{len(self.paths)} distinct fault paths covered"]
        lines.append(f"  invariants checked: {', '.join(sorted(self.invariants)) or 'none'}")
        if self.not_checked:
            lines.append(f"  not checked: {', '.join(sorted(self.not_checked))}")
        run = self.counterexample
        if run is None or self.failure is None:
            lines.append("ok: every invariant held")
            return "\n".join(lines)
        size = run.schedule.size
        lines.append(f"counterexample ({size} fault{'s' if size != 1 else ''}, shrunk):")
        lines.append(f"  input: {json.dumps(run.input, sort_keys=True)}")
        lines.append("  schedule:")
        lines.extend("    " + line for line in run.schedule.describe().splitlines())
        message = str(self.failure).split("\nschedule:")[0]
        lines.append(f"  broken: {message}")
        lines.append(f"  ended: {run.status}" + (f" ({run.reason})" if run.reason else ""))
        lines.append("  history:")
        lines.extend("  " + line for line in run.history().splitlines())
        return "\n".join(lines)


def test_flow(flow: Flow, *, examples: int = 100, seed: int = 0,
              input_examples: Sequence[Any] = (), services: Mapping[str, Any] | None = None,
              invariants: Iterable[Callable[[Mapping[str, Any]], Any]] = (),
              max_faults: int = 3) -> FlowTestReport:
    """Property-test ``flow``; stop at the first broken invariant and shrink it.

    With example inputs, every schedule of one or two faults is tried first (systematically,
    on the first example); then ``examples`` generated (schedule, input) pairs are searched.
    The same ``seed`` gives the same run."""
    report = FlowTestReport(f"{flow.name} v{flow.version}")
    invariants = tuple(invariants)
    failures: list[InvariantViolation] = []

    @settings(max_examples=examples, deadline=None, database=None,
              verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(schedule=fault_schedules(flow, max_faults=max_faults),
           saga_input=inputs(flow, input_examples))
    def prop(schedule: Any, saga_input: Any) -> None:
        run = run_schedule(flow, saga_input, schedule, services=services, seed=seed)
        try:
            checked = check_invariants(run, invariants=invariants)
        except InvariantViolation as violation:
            failures.append(violation)
            raise
        if not failures:
            report.examples += 1
            report.invariants.update(checked.invariants)
            report.not_checked.update(checked.not_checked)
            report.paths.add(tuple((e.type, e.step) for e in run.events))

    try:
        if input_examples:
            _exhaustive(flow, input_examples[0], services, invariants, seed, report, failures)
        prop()
    except InvariantViolation:
        # hypothesis replays its shrunk example last; then drop each fault it can do without
        report.failure = _minimize(failures[-1], services, invariants, seed)
    return report


def _exhaustive(flow: Flow, saga_input: Any, services: Mapping[str, Any] | None,
                invariants: tuple[Callable[[Mapping[str, Any]], Any], ...], seed: int,
                report: FlowTestReport, failures: list[InvariantViolation]) -> None:
    """Every schedule of one or two faults (on first attempts, and a step failing all its
    attempts), with the first example input: small, systematic, before the random search."""
    points = fault_points(flow)
    singles = [{point: kind} for point in points for kind in FAULTS]
    for step in flow.steps:
        if not step.calls_service:
            continue
        for kind in ("error", "timeout"):
            singles.append({("action", step.name, n): kind
                            for n in range(1, min(step.retry.attempts, 3) + 1)})
    firsts = [s for s in singles if all(key[2] == 1 for key in s) or len(s) > 1]
    schedules = [Schedule(s) for s in singles]
    schedules += [Schedule({**a, **b}) for i, a in enumerate(firsts) for b in firsts[i + 1:]
                  if not set(a) & set(b)]
    for schedule in schedules:
        run = run_schedule(flow, saga_input, schedule, services=services, seed=seed)
        try:
            checked = check_invariants(run, invariants=invariants)
        except InvariantViolation as violation:
            failures.append(violation)
            raise
        report.examples += 1
        report.invariants.update(checked.invariants)
        report.not_checked.update(checked.not_checked)
        report.paths.add(tuple((e.type, e.step) for e in run.events))


def _minimize(failure: InvariantViolation, services: Mapping[str, Any] | None,
              invariants: tuple[Callable[[Mapping[str, Any]], Any], ...],
              seed: int) -> InvariantViolation:
    """Remove faults (and the crash) one at a time while the run still breaks an invariant."""
    run = failure.run
    changed = True
    while changed:
        changed = False
        schedule = run.schedule
        candidates = [Schedule({k: v for k, v in schedule.faults.items() if k != key},
                               schedule.crash_after) for key in sorted(schedule.faults)]
        if schedule.crash_after is not None:
            candidates.append(Schedule(schedule.faults, None))
        for candidate in candidates:
            attempt = run_schedule(run.flow, run.input, candidate, services=services, seed=seed)
            try:
                check_invariants(attempt, invariants=invariants)
            except InvariantViolation as smaller:
                failure, run, changed = smaller, attempt, True
                break
    return failure


test_flow.__test__ = False  # type: ignore[attr-defined]  # not a pytest test itself
