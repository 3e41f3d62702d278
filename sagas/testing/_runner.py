"""``saga test``: property-test a flow with its services, covering the fault space first.

For each route the inputs reach (:mod:`._routes`) it runs, in this order, until an invariant
breaks or the budget of runs is spent:

1. the input without faults (and once more, to learn whether the services are deterministic:
   then "effects as without faults" is checked against it);
2. every single fault point along the route (:func:`._sweep.single_faults`), the routes taking
   turns;
3. the recovery pairs (:func:`._sweep.recovery_pairs`), then other pairs;
4. random schedules of up to ``max_faults`` faults (hypothesis), on the routes' inputs (and, with
   no example inputs, on inputs drawn from the schema).

No (input, schedule) runs twice; no schedule is empty. A counterexample is made as small as it
goes: its faults are dropped one at a time while it still breaks an invariant (a persistent
fault is one fault and is never split).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ..language.model import Flow
from ._guard import DEFAULT_HANDLER_TIMEOUT, HandlerHung, guarded
from ._harness import HarnessRun, Schedule, hung_run, run_schedule
from ._invariants import InvariantViolation, check_invariants
from ._replay import load_counterexamples, save_counterexample
from ._routes import Route, explore_routes, field_values, mutants, service_constants
from ._strategies import fault_schedules, inputs
from ._sweep import other_pairs, recovery_pairs, single_faults

__all__ = ["RANDOM_EXAMPLES", "FlowTestReport", "fault_sweep", "test_flow"]

RANDOM_EXAMPLES = 400  # after the sweep, by default: half other pairs, half random schedules
Invariants = tuple[Callable[[Mapping[str, Any]], Any], ...]


@dataclass
class FlowTestReport:
    """What a property test of a flow did, and the smallest counterexample if one was found."""

    flow: str
    examples: int = 0  # runs with faults
    routes: list[Route] = field(default_factory=list)
    inputs_searched: int = 0  # runs without faults spent finding the routes
    singles_total: int = 0
    singles_tried: int = 0
    recovery_pairs: int = 0
    other_pairs: int = 0
    random: int = 0
    replayed: int = 0  # counterexamples kept from earlier runs (--replay-db), tried first
    budget: int | None = None
    seconds: float = 0.0
    invariants: set[str] = field(default_factory=set)
    not_checked: set[str] = field(default_factory=set)
    failure: InvariantViolation | None = None
    reference: HarnessRun | None = None  # the counterexample's route without faults

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def complete(self) -> bool:
        """Whether every single fault point was tried (or a counterexample ended the search);
        not when no input could be made to run the flow at all."""
        if self.failure is not None:
            return True
        return bool(self.routes) and self.singles_tried >= self.singles_total

    @property
    def counterexample(self) -> HarnessRun | None:
        return None if self.failure is None else self.failure.run

    @property
    def paths(self) -> set[tuple[Any, ...]]:
        """The routes reached (kept for scripts written against earlier reports)."""
        return {r.signature for r in self.routes}

    def describe(self) -> str:
        lines = [f"{self.flow}: {self.examples} runs with faults, "
                 f"{len(self.routes)} route{'s' if len(self.routes) != 1 else ''} "
                 f"({self.seconds:.1f}s)"]
        searched = f" (searched {self.inputs_searched} inputs)" if self.inputs_searched else ""
        lines.append(f"  routes{searched}:")
        for route in self.routes:
            lines.append(f"    {route.describe()}: {json.dumps(route.input, sort_keys=True)}")
        stopped = (" (the search stopped at the counterexample)"
                   if self.failure and self.singles_tried < self.singles_total else "")
        lines.append(f"  single-fault points covered: {self.singles_tried} of "
                     f"{self.singles_total}{stopped}")
        if self.replayed:
            lines.append(f"  kept counterexamples replayed: {self.replayed}")
        lines.append(f"  pairs tried: {self.recovery_pairs + self.other_pairs} "
                     f"({self.recovery_pairs} recovery pairs, {self.other_pairs} others); "
                     f"random schedules: {self.random}")
        if self.invariants:
            lines.append(f"  invariants checked: {', '.join(sorted(self.invariants))}")
        if self.not_checked:
            lines.append(f"  not checked: {', '.join(sorted(self.not_checked))}")
        run = self.counterexample
        if run is None or self.failure is None:
            if self.complete:
                lines.append("ok: every invariant held")
            elif not self.routes:
                lines.append("incomplete: no input valid for the flow's schema could be made; "
                             "give examples with --input")
            else:
                lines.append(f"incomplete: --examples {self.budget} tried {self.singles_tried} "
                             f"of {self.singles_total} single-fault points; every invariant "
                             f"held in those (use --examples {self.singles_total} or more, or "
                             "leave it out)")
            return "\n".join(lines)
        size = run.schedule.size
        lines.append(f"counterexample ({size} fault point{'s' if size != 1 else ''}, "
                     "made as small as it goes):")
        lines.append(f"  input: {json.dumps(run.input, sort_keys=True)}")
        lines.append("  faults:")
        lines.extend("    " + line for line in run.schedule.describe().splitlines())
        message = str(self.failure).split("\nschedule:")[0]
        lines.append(f"  broken: {message}")
        lines.append(f"  ended: {run.status}" + (f" ({run.reason})" if run.reason else ""))
        lines.extend(_state_lines(run.snapshots_before, run.snapshots_after))
        reference = self.reference
        if (reference is not None and self.failure.invariant == "effects as without faults"):
            lines.append(f"  the same input without faults ({reference.status}) left:")
            lines.extend(f"    {name}: {_json(value)}"
                         for name, value in reference.snapshots_after.items()
                         if value != run.snapshots_after.get(name))
        lines.append("  history: (!! marks where a fault struck)")
        lines.extend("  " + line for line in run.history().splitlines())
        return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _state_lines(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The services' snapshots before and after the run: those that changed in full."""
    if not before:
        return ["  services: no snapshot taken"]
    lines = ["  services (snapshot() before -> after):"]
    same = []
    for name, value in before.items():
        if after.get(name) == value:
            same.append(name)
        else:
            lines.append(f"    {name}: {_json(value)}")
            lines.append(f"    {' ' * len(name)}  -> {_json(after.get(name))}")
    if same:
        lines.append(f"    unchanged: {', '.join(same)}")
    return lines


class _Found(BaseException):
    """Stops the search: a run broke an invariant. (A BaseException, so that hypothesis stops
    at once instead of shrinking: the search makes its counterexamples small itself.)"""


@dataclass
class _Search:
    flow: Flow
    services: Mapping[str, Any] | None
    invariants: Invariants
    seed: int
    report: FlowTestReport
    budget: int
    references: dict[str, HarnessRun | None] = field(default_factory=dict)
    done: set[tuple[str, Any]] = field(default_factory=set)
    failures: list[InvariantViolation] = field(default_factory=list)

    def check(self, run: HarnessRun, reference: HarnessRun | None) -> None:
        try:
            checked = check_invariants(run, invariants=self.invariants, reference=reference)
        except InvariantViolation as violation:
            self.failures.append(violation)
            raise _Found from None
        self.report.invariants.update(checked.invariants)
        self.report.not_checked.update(checked.not_checked)

    def left(self) -> int:
        return self.budget - self.report.examples

    def attempt(self, saga_input: Any, schedule: Schedule) -> bool:
        """Run one (input, schedule) unless it ran before; whether it ran."""
        text = json.dumps(saga_input, sort_keys=True)
        key = (text, schedule.key)
        if key in self.done or schedule.size == 0:
            return False
        self.done.add(key)
        reference = self.reference(saga_input, text)
        run = run_schedule(self.flow, saga_input, schedule, services=self.services,
                           seed=self.seed, handler_timeout=None)
        self.report.examples += 1
        self.check(run, reference)
        return True

    def reference(self, saga_input: Any, text: str,
                  baseline: HarnessRun | None = None) -> HarnessRun | None:
        """The run of ``saga_input`` without faults, if the services are deterministic (two
        such runs leave the same snapshots): what "effects as without faults" compares
        with. Made once per input; the first one is checked like any run."""
        if text in self.references:
            return self.references[text]
        if baseline is None:
            baseline = run_schedule(self.flow, saga_input, Schedule(), services=self.services,
                                    seed=self.seed, handler_timeout=None)
            self.check(baseline, None)
        again = run_schedule(self.flow, saga_input, Schedule(), services=self.services,
                             seed=self.seed, handler_timeout=None)
        after = baseline.snapshots_after
        unstable = sorted(name for name, value in after.items()
                          if again.snapshots_after.get(name) != value)
        for name in unstable:
            self.report.not_checked.add(f"effects as without faults on {name} (its "
                                        "snapshot() differs between two runs without faults)")
        found: HarnessRun | None = baseline
        if unstable:  # compare the services that are deterministic, if any
            stable = frozenset(after) - set(unstable)
            found = None if not stable else baseline
            baseline.stable = stable
        self.references[text] = found
        return found


def _round_robin(queues: list[Iterator[Any]]) -> Iterator[Any]:
    live = list(queues)
    while live:
        for queue in list(live):
            item = next(queue, None)
            if item is None:
                live.remove(queue)
            else:
                yield item


def test_flow(flow: Flow, *, examples: int | None = None, seed: int = 0,
              input_examples: Sequence[Any] = (), services: Mapping[str, Any] | None = None,
              invariants: Iterable[Callable[[Mapping[str, Any]], Any]] = (),
              max_faults: int = 3, handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
              random_examples: int = RANDOM_EXAMPLES,
              replay: str | os.PathLike[str] | None = None,
              exit_if_stuck: bool = False) -> FlowTestReport:
    """Property-test ``flow`` (see the module's docstring); stop at the first broken invariant
    and make it as small as it goes.

    ``examples`` is the budget of runs with faults; by default every single fault point and
    recovery pair, then ``random_examples`` more. ``input_examples`` replaces the search for
    inputs. A call into a service that runs longer than ``handler_timeout`` wall-clock seconds
    is a counterexample; with ``exit_if_stuck``, a process starved by one that holds the
    interpreter is ended (exit status 1, see ``_guard.guarded``). ``replay`` is a directory
    where counterexamples are kept and tried first next time (default none: nothing kept; the
    same ``seed`` gives the same run).
    """
    report = FlowTestReport(f"{flow.name} v{flow.version}", budget=examples)
    started = time.monotonic()
    search = _Search(flow, services, tuple(invariants), seed, report, budget=0)
    try:
        guarded(lambda: _search(search, examples, input_examples, max_faults,
                                random_examples, replay), handler_timeout,
                exit_if_stuck=exit_if_stuck)
    except HandlerHung as hung:
        run = hung_run(hung, flow)
        assert run is not None
        report.failure = InvariantViolation("handlers return", run.hung or str(hung), run)
    if replay is not None and report.failure is not None:
        run = report.failure.run
        save_counterexample(replay, flow, run.input, run.schedule)
    report.seconds = time.monotonic() - started
    return report


test_flow.__test__ = False  # type: ignore[attr-defined]  # not a pytest test itself


def _search(search: _Search, examples: int | None, input_examples: Sequence[Any],
            max_faults: int, random_examples: int,
            replay: str | os.PathLike[str] | None) -> None:
    report = search.report
    try:
        _sweep(search, examples, input_examples, random_examples, replay)
        if search.left() > 0 and report.routes:
            _random(search, input_examples, max_faults)  # (nothing to draw from otherwise)
    except _Found:
        pass
    if search.failures:
        failure = min(search.failures, key=lambda f: (f.run.schedule.size, len(f.run.events)))
        text = json.dumps(failure.run.input, sort_keys=True)
        reference = search.references.get(text)
        report.failure = _minimize(failure, search, reference)
        report.reference = reference


def _sweep(search: _Search, examples: int | None, input_examples: Sequence[Any],
           random_examples: int, replay: str | os.PathLike[str] | None) -> None:
    flow, report = search.flow, search.report

    def baseline_checked(run: HarnessRun) -> None:
        report.inputs_searched += 0 if input_examples else 1
        search.check(run, None)

    routes = explore_routes(flow, services=search.services, examples=input_examples,
                            seed=search.seed, on_run=baseline_checked)
    report.routes = routes
    singles = {id(route): single_faults(flow, route.baseline) for route in routes}
    pairs = {id(route): recovery_pairs(flow, route.baseline) for route in routes}
    report.singles_total = sum(len(points) for points in singles.values())
    search.budget = examples if examples is not None else (
        report.singles_total + sum(len(p) for p in pairs.values()) + random_examples)
    for route in routes:  # are the services deterministic? then compare with this run
        search.reference(route.input, json.dumps(route.input, sort_keys=True), route.baseline)

    if replay is not None:  # earlier counterexamples first (on top of the budget)
        kept = load_counterexamples(replay, flow)
        search.budget += len(kept)
        for saga_input, schedule in kept:
            if _valid(flow, saga_input):
                report.replayed += 1
                search.attempt(saga_input, schedule)

    def tagged(route: Route, items: Iterable[Any]) -> Iterator[tuple[Route, Any]]:
        return ((route, item) for item in items)

    for route, point in _round_robin([tagged(r, singles[id(r)]) for r in routes]):
        if search.left() <= 0:
            return
        search.attempt(route.input, point.schedule())
        report.singles_tried += 1
    for route, schedule in _round_robin([tagged(r, pairs[id(r)]) for r in routes]):
        if search.left() <= 0:
            return
        if search.attempt(route.input, schedule):
            report.recovery_pairs += 1
    others = max(0, search.left() // 2)
    share = others // max(1, len(routes)) + 1
    for route, schedule in _round_robin([
            tagged(r, other_pairs(singles[id(r)], search.seed, share)) for r in routes]):
        if search.left() <= 0 or report.other_pairs >= others:
            return
        if search.attempt(route.input, schedule):
            report.other_pairs += 1


def _random(search: _Search, input_examples: Sequence[Any], max_faults: int) -> None:
    flow, report = search.flow, search.report
    chosen = [route.input for route in report.routes]
    saga_inputs = st.sampled_from(chosen) if chosen else inputs(flow, input_examples)
    if not input_examples and flow.input_schema is not None and chosen:
        # and, now and then, a route's input with one field changed to a telling value
        values = field_values(flow, service_constants(flow))
        nearby = [m for value in chosen for m in mutants(value, values) if _valid(flow, m)]
        if nearby:
            saga_inputs = st.one_of(saga_inputs, st.sampled_from(nearby))
    budget = search.left()

    @settings(max_examples=budget, deadline=None, database=None,
              verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False,
              phases=[Phase.generate])  # no shrinking: the first failure ends the search
    @hypothesis_seed(search.seed)
    @given(schedule=fault_schedules(flow, max_faults=max_faults), saga_input=saga_inputs)
    def prop(schedule: Schedule, saga_input: Any) -> None:
        if search.left() > 0 and _valid(flow, saga_input) \
                and search.attempt(saga_input, schedule):
            report.random += 1

    prop()


def _valid(flow: Flow, value: Any) -> bool:
    from ..engine.inputs import validate_input

    try:
        validate_input(flow, value)
    except Exception:
        return False
    return True


def _minimize(failure: InvariantViolation, search: _Search,
              reference: HarnessRun | None) -> InvariantViolation:
    """Drop faults (and the crash) one at a time while the run still breaks an invariant."""
    run = failure.run
    if run.hung is not None:
        return failure
    changed = True
    while changed:
        changed = False
        for part in run.schedule.parts():
            candidate = run.schedule.without(part)
            attempt = run_schedule(run.flow, run.input, candidate, services=search.services,
                                   seed=search.seed, handler_timeout=None)
            try:
                check_invariants(attempt, invariants=search.invariants, reference=reference)
            except InvariantViolation as smaller:
                failure, run, changed = smaller, attempt, True
                break
    return failure


def fault_sweep(flow: Flow, *, services: Mapping[str, Any] | None = None,
                examples: Sequence[Any] = (), seed: int = 0,
                pairs: bool = True) -> list[tuple[Any, Schedule]]:
    """Every single fault point (and, with ``pairs``, every recovery pair) along each route the
    inputs reach, as ``(input, schedule)``: for ``pytest.mark.parametrize``. ``examples``
    replaces the search for inputs (see :mod:`sagas.testing`)."""
    routes = explore_routes(flow, services=services, examples=examples, seed=seed)
    sweep: list[tuple[Any, Schedule]] = []
    for route in routes:
        sweep += [(route.input, point.schedule())
                  for point in single_faults(flow, route.baseline)]
        if pairs:
            sweep += [(route.input, schedule) for schedule in recovery_pairs(flow, route.baseline)]
    return sweep
