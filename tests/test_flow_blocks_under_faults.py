"""Flows with ``choice`` and ``parallel`` blocks keep their guarantees under faults.

Hypothesis writes runnable flows (plain steps with and without compensations, choices on
``$.input.n`` / ``$.input.m`` with 1-3 branches and maybe a default, empty branches included,
parallel blocks of 2-3 branches of 1-3 steps before the pivot, a pivot or none), an input and a
fault schedule (``sagas.testing.fault_schedules``: errors, rejections, timeouts, late replies,
duplicates, redeliveries, a runtime crash and resume). Each saga runs in the deterministic
harness (``run_schedule``: the real core, the real inbox, the services below) and then:

* ``check_invariants``: the §4 audit, termination, ``saga plan`` for one-fault schedules,
  semantic atomicity (the ledger is as before when the saga is compensated);
* each choice took the first branch whose condition holds of the input (else the default),
  recorded once; no step off the route ran (no ``step.started``, no handler call);
* a compensated saga compensated every step that ran and has a compensation (its action was
  started and not rejected) exactly once, along the route taken, and nothing else; a completed
  saga ran every step of its route and undid nothing;
* compensations run in reverse step order: along the main sequence, and within each parallel
  branch; a block's branches are undone before the steps before the block;
* a parallel block starts every branch before any branch step has a result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from hypothesis import given, note, settings
from hypothesis import strategies as st

from actors import Service, handles
from sagas import parse_flow
from sagas.testing import Schedule, check_invariants, fault_schedules, run_schedule
from tests.test_flow_machine_and_plan import CONDITION, IDENT, LABEL, SMALL

OUTCOMES = ("step.succeeded", "step.failed", "step.timed_out")


class Ledger(Service):
    """Every step's service: ``do`` records an effect (deduplicated on the key), ``undo``
    removes it (safe when the action never ran), ``peek`` has no effect."""

    def __init__(self) -> None:
        super().__init__()
        self.effects: dict[str, str] = {}

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        self.effects.setdefault(command.key, command.step)
        return {"step": command.step}

    @handles("peek")
    def peek(self, command: Any) -> dict[str, Any]:
        return {"step": command.step}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        self.effects.pop(command.key.removesuffix(":compensation"), None)
        return {"undone": command.step}

    def snapshot(self) -> dict[str, str]:
        return dict(self.effects)


# -- the flows ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    name: str
    branches: tuple[tuple[str, Any, tuple[str, ...]], ...]  # (label, condition | None, steps)


@dataclass(frozen=True)
class Parallel:
    name: str
    branches: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Runnable:
    text: str
    items: tuple[Any, ...]  # step name | Choice | Parallel
    compensable: frozenset[str]

    @property
    def order(self) -> list[str]:
        """Every step (and block) in the order written."""
        found: list[str] = []
        for item in self.items:
            if isinstance(item, Choice):
                found.extend(s for _, _, steps in item.branches for s in steps)
            elif isinstance(item, Parallel):
                found.append(item.name)
                found.extend(s for _, steps in item.branches for s in steps)
            else:
                found.append(item)
        return found


@st.composite
def runnable_flows(draw: Any) -> Runnable:
    used: set[str] = set()

    def fresh() -> str:
        name = draw(IDENT.filter(lambda n: n not in used))
        used.add(name)
        return name

    compensable: set[str] = set()

    def plain(before_pivot: bool, pivot: bool = False) -> dict[str, Any]:
        name = fresh()
        step: dict[str, Any] = {"name": name, "service": "svc", "action": "do"}
        if pivot:
            step["pivot"] = True
        elif before_pivot:
            if draw(st.integers(0, 3)):
                step["compensation"] = "undo"
                compensable.add(name)
            else:
                step.update(action="peek", effects="none")
        if draw(st.integers(0, 3)) == 0:
            step["retry"] = {"attempts": draw(st.integers(1, 3))}
        return step

    count = draw(st.integers(1, 6))
    pivot = draw(st.none() | st.integers(0, count - 1))
    steps: list[dict[str, Any]] = []
    items: list[Any] = []
    for i in range(count):
        before_pivot = pivot is None or i < pivot
        what = draw(st.sampled_from([0, 1, 1, 2, 3])) if i != pivot else 3
        if what == 0 and sum(isinstance(x, Choice) for x in items) < 2:
            name = fresh()
            labels = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
            written, branches = [], []
            for label in labels:
                body = [plain(before_pivot) for _ in range(draw(st.integers(0, 3)))]
                condition = draw(CONDITION)
                written.append({"name": label, "when": condition, "steps": body})
                branches.append((label, condition, tuple(s["name"] for s in body)))
            choice: dict[str, Any] = {"name": name, "choice": written}
            default: tuple[str, ...] = ()
            if draw(st.booleans()):
                body = [plain(before_pivot) for _ in range(draw(st.integers(0, 2)))]
                choice["default"] = body
                default = tuple(s["name"] for s in body)
            branches.append(("default", None, default))
            steps.append(choice)
            items.append(Choice(name, tuple(branches)))
        elif what == 1 and before_pivot and sum(isinstance(x, Parallel) for x in items) < 2:
            name = fresh()
            labels = draw(st.lists(IDENT, min_size=2, max_size=3, unique=True))
            written_branches = {label: [plain(True) for _ in range(draw(st.integers(1, 3)))]
                                for label in labels}
            steps.append({"name": name, "parallel": written_branches})
            items.append(Parallel(name, tuple((label, tuple(s["name"] for s in body))
                                              for label, body in written_branches.items())))
        else:
            step = plain(before_pivot, i == pivot)
            steps.append(step)
            items.append(step["name"])
    if not any(isinstance(x, (str, Parallel)) or any(b[2] for b in x.branches)
               for x in items):  # a flow holds a step somewhere (some routes may run none)
        step = plain(pivot is None)
        steps.append(step)
        items.append(step["name"])
    document = {
        "saga": "generated",
        "services": {"svc": "tests.test_flow_blocks_under_faults:Ledger"},
        "defaults": {"retry": {"attempts": draw(st.integers(1, 3)), "backoff": "1s",
                               "jitter": False},
                     "timeout": "5s",
                     "on_compensation_failure": draw(st.sampled_from(["park", "retry_forever"]))},
        "steps": steps,
    }
    return Runnable(yaml.safe_dump(document, sort_keys=False), tuple(items),
                    frozenset(compensable))


INPUTS = st.fixed_dictionaries({}, optional={"n": SMALL, "m": SMALL})


# -- a reference for conditions (DESIGN: data, no eval) ------------------------------------------
_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def holds(condition: dict[str, Any], saga_input: dict[str, Any]) -> bool:
    if "all" in condition:
        return all(holds(c, saga_input) for c in condition["all"])
    if "any" in condition:
        return any(holds(c, saga_input) for c in condition["any"])
    if "not" in condition:
        return not holds(condition["not"], saga_input)
    field = condition["path"].removeprefix("$.input.")
    (op, value), = ((k, v) for k, v in condition.items() if k != "path")
    actual = saga_input.get(field, _MISSING)
    if op == "exists":
        return (actual is not _MISSING) == value
    if actual is _MISSING:
        return op == "ne"
    if op == "eq":
        return _same(actual, value)
    if op == "ne":
        return not _same(actual, value)
    if op == "in":
        return any(_same(actual, v) for v in value)
    return {"gt": actual > value, "ge": actual >= value, "lt": actual < value,
            "le": actual <= value}[op]


def chosen(choice: Choice, saga_input: dict[str, Any]) -> str:
    return next(label for label, condition, _ in choice.branches
                if condition is None or holds(condition, saga_input))


# -- the checks -----------------------------------------------------------------------------------
@st.composite
def schedules(draw: Any, flow: Runnable, loaded: Any, max_faults: int = 3) -> Schedule:
    """``fault_schedules``, and often a parallel branch step rejected on top (so blocks are
    undone, and halted, as often as they complete)."""
    schedule = draw(fault_schedules(loaded, max_faults=max_faults))
    inside = [s for item in flow.items if isinstance(item, Parallel)
              for _, steps in item.branches for s in steps]
    if inside and draw(st.booleans()):
        step = draw(st.sampled_from(inside))
        faults = {**schedule.faults, ("action", step, 1): draw(st.sampled_from(
            ["reject", "reject", "error", "timeout"]))}
        schedule = Schedule(faults, schedule.crash_after, schedule.persistent)
    return schedule


def check_run(flow: Runnable, run: Any) -> None:
    check_invariants(run)
    events = run.events
    order = flow.order
    started = {e.step for e in events if e.type == "step.started"}
    invoked = {step for _, step, _ in run.invocations}

    # the route: each choice decided once, by its conditions on the input; nothing off it ran
    made = [(e.step, e.data["branch"]) for e in events if e.type == "choice.made"]
    assert len({c for c, _ in made}) == len(made), made
    taken = dict(made)
    route: list[str] = []  # the main sequence taken: steps and blocks
    for item in flow.items:
        if isinstance(item, Choice):
            for label, _, steps in item.branches:
                if taken.get(item.name) != label:
                    off = set(steps) & (started | invoked)
                    assert not off, f"{off} ran off the route {made}"
            if item.name in taken:
                assert taken[item.name] == chosen(item, run.input), (item.name, run.input)
                route.extend(item.branches[[b[0] for b in item.branches].index(
                    taken[item.name])][2])
        else:
            route.append(item if isinstance(item, str) else item.name)
    blocks = {item.name: item for item in flow.items if isinstance(item, Parallel)}
    in_branch = {s: (name, label, steps) for name, block in blocks.items()
                 for label, steps in block.branches for s in steps}

    def first(kind: str, step: str) -> int | None:
        return next((i for i, e in enumerate(events) if e.type == kind and e.step == step), None)

    # parallel: every branch starts before any branch step has a result
    for name, block in blocks.items():
        if name not in started:
            continue
        inside = {s for _, steps in block.branches for s in steps}
        results = [i for i, e in enumerate(events) if e.type in OUTCOMES and e.step in inside]
        assert results, name
        for label, steps in block.branches:
            begun = first("step.started", steps[0])
            assert begun is not None and begun < results[0], (name, label)

    undone = [e.step for e in events if e.type == "compensation.succeeded"]
    if run.status == "completed":
        assert not undone
        for step in route:
            assert first("step.succeeded", step) is not None, step
        for step in in_branch:
            if in_branch[step][0] in route:
                assert first("step.succeeded", step) is not None, step
    if run.status != "compensated":
        return

    # compensated: exactly the steps that ran (not rejected) and have a compensation, once
    rejected = {e.step for e in events if e.type == "step.failed" and e.data.get("kind")
                == "rejected"}
    should = {s for s in started if s in flow.compensable and s not in rejected}
    plain_undone = [s for s in undone if s not in blocks]
    assert sorted(plain_undone) == sorted(should), (plain_undone, should)
    for name in blocks:
        assert undone.count(name) <= 1

    # in reverse step order: the main sequence, and each parallel branch
    begun = [e.step for e in events if e.type == "compensation.started"]
    firsts = list(dict.fromkeys(begun))
    main = [order.index(s) for s in firsts if s not in in_branch]
    assert main == sorted(main, reverse=True), firsts
    for name, block in blocks.items():
        done = first("compensation.succeeded", name)
        for _, steps in block.branches:
            mine = [order.index(s) for s in firsts if s in steps]
            assert mine == sorted(mine, reverse=True), (name, firsts)
            for s in steps:
                ended = first("compensation.succeeded", s)
                assert ended is None or (done is not None and ended < done), (s, name)
        for s in firsts:  # the steps before the block are undone after it
            if s not in in_branch and order.index(s) < order.index(name) and done is not None:
                assert first("compensation.started", s) > done, (s, name)


@pytest.mark.slow  # 100 generated flows under faults
@settings(max_examples=100, deadline=None)
@given(flow=runnable_flows(), saga_input=INPUTS, data=st.data())
def test_generated_blocks_keep_their_guarantees(flow: Runnable, saga_input: dict[str, Any],
                                               data: st.DataObject) -> None:
    note(flow.text)
    loaded = parse_flow(flow.text, source="generated.yaml")
    schedule = data.draw(schedules(flow, loaded), label="schedule")
    run = run_schedule(loaded, saga_input, schedule, services={"svc": Ledger})
    note(run.history())
    check_run(flow, run)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CI"), reason="about a minute: runs in CI (CI=1)")
@settings(max_examples=500, deadline=None)
@given(flow=runnable_flows(), saga_input=INPUTS, data=st.data())
def test_generated_blocks_keep_their_guarantees_long(flow: Runnable, saga_input: dict[str, Any],
                                                    data: st.DataObject) -> None:
    loaded = parse_flow(flow.text, source="generated.yaml")
    schedule = data.draw(schedules(flow, loaded, max_faults=4), label="schedule")
    run = run_schedule(loaded, saga_input, schedule, services={"svc": Ledger})
    note(flow.text)
    note(run.history())
    check_run(flow, run)


EMPTY_ROUTE = """\
saga: optional_only
services: {svc: tests.test_flow_blocks_under_faults:Ledger}
steps:
  - name: maybe
    choice:
      - name: flagged
        when: {path: $.input.n, eq: 1}
        steps: [{name: extra, service: svc, action: do, compensation: undo}]
"""


def test_a_route_without_steps_completes_cleanly() -> None:
    flow = parse_flow(EMPTY_ROUTE, source="optional_only.yaml")
    run = run_schedule(flow, {"n": 2}, services={"svc": Ledger})
    assert [e.type for e in run.events] == ["saga.started", "choice.made", "saga.completed"]
    check_invariants(run)
