"""Any valid flow compiles to the machine DESIGN.md §4.2-4.3 describes, and ``saga plan`` and
``saga graph`` agree with it.

Hypothesis writes valid flow YAML (random step counts, compensations present or absent, pivot
anywhere or nowhere, retry settings, inputs, key order, block or flow style, delays, waits, and
``choice`` and ``parallel`` blocks). Each must load and compile, and then:

* every state of the compiled ``transitions`` machine reaches a terminal state (or, in a
  parallel branch, a branch end);
* a step without a compensation gets no compensation state;
* compensations run in reverse step order (along the route taken through the choices; within
  each parallel branch);
* ``saga plan`` agrees, for every (step, kind) and every route through the choices, with the
  machine *and* with the reference model below, written from the text of DESIGN.md §4.2-4.3
  (not from ``sagas.language.plan``), and ``saga plan --json`` with the first route to each step;
* ``saga graph`` draws every state and every transition.

A parallel branch step is planned as if the other branches had finished: the failing branch's
own compensations (by the normal rules), then every compensable step of the other branches (each
branch in reverse, branch after branch in declaration order), then the steps before the block
in reverse.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, note
from hypothesis import strategies as st

from cli import main
from sagas.language.compiler import compile_flow
from sagas.language.loader import parse_flow
from sagas.language.model import Choice
from sagas.language.plan import plan

KINDS = ("rejected", "error", "timeout")
TERMINAL = ("completed", "compensated", "failed")


# -- the reference model: DESIGN.md §4.2-4.3 ------------------------------------------------------
@dataclass(frozen=True)
class SpecStep:
    name: str
    compensation: str | None
    pivot: bool
    on_compensation_failure: str  # park | retry_forever
    delay: bool = False  # a timed pause: never fails, nothing to compensate
    wait: bool = False  # a wait for an external event: only times out, nothing to compensate
    block: bool = False  # a parallel block (as a step of the main sequence): cannot fail itself

    @property
    def kinds(self) -> tuple[str, ...]:
        """How it can fail: every kind for a service call, a timeout for a wait, never for a
        delay (or a parallel block: its branches' steps fail)."""
        return () if self.delay or self.block else ("timeout",) if self.wait else KINDS


Branches = tuple[tuple[str, tuple[SpecStep, ...]], ...]


@dataclass(frozen=True)
class SpecChoice:
    """A choice: its branches in declaration order, then ``default`` (empty when not written)."""

    name: str
    branches: Branches

    def branch(self, label: str) -> tuple[SpecStep, ...]:
        return dict(self.branches)[label]


@dataclass(frozen=True)
class SpecParallel:
    """A parallel block: the block step and its branches in declaration order."""

    block: SpecStep
    branches: Branches

    @property
    def name(self) -> str:
        return self.block.name

    @property
    def steps(self) -> list[SpecStep]:
        return [s for _, steps in self.branches for s in steps]


Item = Union[SpecStep, SpecChoice, SpecParallel]  # noqa: UP007 (a runtime alias, py3.10)
Unit = Union[SpecStep, SpecParallel]  # noqa: UP007


@dataclass(frozen=True)
class Shape:
    """What a generated flow is: its top-level sequence."""

    items: tuple[Item, ...]

    @property
    def flat(self) -> list[SpecStep]:
        """Every step in the order written (a block before its branches' steps)."""
        found: list[SpecStep] = []
        for item in self.items:
            if isinstance(item, SpecChoice):
                found.extend(s for _, steps in item.branches for s in steps)
            elif isinstance(item, SpecParallel):
                found.append(item.block)
                found.extend(item.steps)
            else:
                found.append(item)
        return found

    @property
    def choices(self) -> list[SpecChoice]:
        return [i for i in self.items if isinstance(i, SpecChoice)]

    @property
    def parallels(self) -> list[SpecParallel]:
        return [i for i in self.items if isinstance(i, SpecParallel)]

    def routes(self) -> list[tuple[str, ...]]:
        """Every route: one branch per choice, the first choice varying slowest."""
        return list(itertools.product(*[[b for b, _ in c.branches] for c in self.choices]))

    def sequence(self, route: tuple[str, ...]) -> list[Unit]:
        """The main sequence along ``route``: steps and parallel blocks."""
        picks = iter(route)
        units: list[Unit] = []
        for item in self.items:
            if isinstance(item, SpecChoice):
                units.extend(item.branch(next(picks)))
            else:
                units.append(item)
        return units

    def on_route(self, name: str, route: tuple[str, ...]) -> bool:
        return any(u.name == name or (isinstance(u, SpecParallel)
                                      and any(s.name == name for s in u.steps))
                   for u in self.sequence(route))

    def taken(self, name: str, route: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """The ``(choice, branch)`` pairs ``route`` takes before it reaches step ``name``
        (the choice holding it included)."""
        picks = []
        for item, branch in zip(self.choices, route, strict=True):
            picks.append((item.name, branch))
            if any(s.name == name for s in item.branch(branch)):
                break
        else:
            position = next(i for i, x in enumerate(self.items) if x.name == name or (
                isinstance(x, SpecParallel) and any(s.name == name for s in x.steps)))
            before = [x.name for x in self.items[:position] if isinstance(x, SpecChoice)]
            return tuple(p for p in picks if p[0] in before)
        return tuple(picks)

    def first_route(self, name: str) -> tuple[str, ...]:
        return next(r for r in self.routes() if self.on_route(name, r))


def route_plans(shape: Shape, name: str, kind: str) -> list[tuple[Any, ...]]:
    """``saga plan --json``'s entries for ``name`` failing with ``kind``: one per route through
    the choices before it (``(choice, branch)`` taken, first route first) when the recovery
    differs between them, else one, on the first route."""
    found: dict[tuple[tuple[str, str], ...], Outcome] = {}
    for route in shape.routes():
        if shape.on_route(name, route):
            found.setdefault(shape.taken(name, route), reference(shape, name, kind, route))
    entries = [(name, kind, taken, outcome) for taken, outcome in found.items()]
    distinct = {(json.dumps(o.compensations), o.status, o.reason) for o in found.values()}
    return entries if len(distinct) > 1 else entries[:1]


@dataclass(frozen=True)
class Outcome:
    ran: list[str]
    compensations: list[tuple[str, str]]  # (step, compensation action), in the order they run
    status: str
    reason: str | None


def _ran(unit: Unit) -> list[str]:
    """The actions that ran when ``unit`` succeeded: a block's are its branches' steps."""
    return [s.name for s in unit.steps] if isinstance(unit, SpecParallel) else [unit.name]


def _undo(unit: Unit) -> list[tuple[str, str]]:
    """Undoing ``unit`` after it succeeded: a block undoes every branch, each in reverse,
    branch after branch in declaration order."""
    if isinstance(unit, SpecParallel):
        return [(s.name, s.compensation) for _, steps in unit.branches
                for s in reversed(steps) if s.compensation]
    return [(unit.name, unit.compensation)] if unit.compensation else []


def reference(shape: Shape, name: str, kind: str, route: tuple[str, ...] = ()) -> Outcome:
    """What DESIGN.md says happens when step ``name`` fails with ``kind`` (``rejected``, or its
    attempts run out on ``error``s / ``timeout``s) and everything else succeeds, the choices
    taking ``route``."""
    units = shape.sequence(route)
    index = next(i for i, u in enumerate(units) if u.name == name or (
        isinstance(u, SpecParallel) and any(s.name == name for s in u.steps)))
    before = units[:index]
    ran_before = [n for u in before for n in _ran(u)]
    undo_before = [c for u in reversed(before) for c in _undo(u)]
    unit = units[index]
    if isinstance(unit, SpecParallel):
        # a branch step fails: its branch undoes what it started (not a rejected step), the
        # other branches (as if they had finished) undo everything, then the steps before
        label, own = next((b, steps) for b, steps in unit.branches
                          if any(s.name == name for s in steps))
        j = next(k for k, s in enumerate(own) if s.name == name)
        others = [steps for b, steps in unit.branches if b != label]
        ran = ran_before + [s.name for steps in others for s in steps] + \
            [s.name for s in own[: j + 1]]
        started = list(own[:j]) + ([own[j]] if kind != "rejected" else [])
        undo = [(s.name, s.compensation) for s in reversed(started) if s.compensation]
        undo += [(s.name, s.compensation) for steps in others for s in reversed(steps)
                 if s.compensation]
        return Outcome(ran, undo + undo_before, "compensated", None)  # type: ignore[arg-type]
    pivot = next((i for i, u in enumerate(units) if isinstance(u, SpecStep) and u.pivot), None)
    ran = [*ran_before, name]
    # §4.3: after the pivot has succeeded, recovery is forward; a later step that is rejected or
    # runs out ends the saga failed (forward_recovery), nothing compensated.
    if pivot is not None and index > pivot:
        return Outcome(ran, [], "failed", "forward_recovery")  # type: ignore[arg-type]
    # §4.3: the pivot running out on errors or timeouts: outcome unknown, failed, nothing undone.
    if pivot is not None and index == pivot and kind != "rejected":
        return Outcome(ran, [], "failed", "pivot_unknown")  # type: ignore[arg-type]
    # §4.2 (and a rejected pivot, §4.3): backward recovery. A step is compensated iff its action
    # was started and its final outcome was not rejected; one at a time, in reverse step order.
    own_undo = _undo(unit) if kind != "rejected" else []
    return Outcome(ran, own_undo + undo_before, "compensated", None)  # type: ignore[arg-type]


# -- generating valid flows -----------------------------------------------------------------------
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
LABEL = IDENT.filter(lambda s: s != "default" and not re.fullmatch(r"branch\d+", s))
DURATION = st.sampled_from(["10ms", "250ms", "1s", "5s", "2m", "1h", 1, 2.5])
RETRY = st.fixed_dictionaries({}, optional={
    "attempts": st.integers(1, 6),
    "backoff": DURATION,
    "multiplier": st.sampled_from([1, 1.5, 2, 3]),
    "max_backoff": DURATION,
    "jitter": st.booleans(),
})
ON_FAILURE = st.sampled_from(["park", "retry_forever"])
DELAY = st.sampled_from(["10ms", "5s", "2m", "1h", 1, 2.5])
FIELDS = ("n", "m")  # conditions read $.input.n and $.input.m
SMALL = st.integers(-2, 6)
COMPARISON = st.one_of(
    st.tuples(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), SMALL),
    st.tuples(st.just("in"), st.lists(SMALL, min_size=1, max_size=3)),
    st.tuples(st.just("exists"), st.booleans()),
)
LEAF = st.builds(lambda field, test: {"path": f"$.input.{field}", test[0]: test[1]},
                 st.sampled_from(FIELDS), COMPARISON)
CONDITION = st.recursive(LEAF, lambda inner: st.one_of(
    st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=2)),
    st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=2)),
    st.builds(lambda x: {"not": x}, inner)), max_leaves=3)


def shuffled(draw: Any, mapping: dict[str, Any]) -> dict[str, Any]:
    order = draw(st.permutations(list(mapping)))
    return {key: mapping[key] for key in order}


@st.composite
def flows(draw: Any, blocks: bool = True) -> tuple[str, Shape]:
    """A valid flow's text and its :class:`Shape`; ``blocks`` allows choices and parallels."""
    count = draw(st.integers(1, 8))
    used: set[str] = set()

    def fresh() -> str:
        name = draw(IDENT.filter(lambda n: n not in used))
        used.add(name)
        return name

    services = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    pivot = draw(st.none() | st.integers(0, count - 1))
    defaults: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "retry": RETRY, "timeout": DURATION, "on_compensation_failure": ON_FAILURE}))
    earlier: list[str] = []  # top-level steps before this one: their outputs may be read

    def plain(before_pivot: bool, is_pivot: bool = False, top: bool = False,
              ) -> tuple[dict[str, Any], SpecStep]:
        name = fresh()
        step: dict[str, Any] = {"name": name, "service": draw(st.sampled_from(services)),
                                "action": draw(IDENT)}
        compensation = draw(st.none() | IDENT) if before_pivot else None
        if compensation:
            step["compensation"] = compensation
        elif draw(st.booleans()):
            step["effects"] = "none"
        if is_pivot:
            step["pivot"] = True
        elif draw(st.integers(0, 4)) == 0:
            step["pivot"] = False
        if draw(st.booleans()):
            step["retry"] = draw(RETRY)
        if draw(st.booleans()):
            step["timeout"] = draw(DURATION)
        if draw(st.booleans()):
            step["on_compensation_failure"] = draw(ON_FAILURE)
        if top and draw(st.booleans()):
            sources = ["$.input.x", "$.input.y.z", *(f"$.steps.{n}.out" for n in earlier)]
            payload = draw(st.dictionaries(
                IDENT, st.sampled_from(sources) | st.integers() | st.lists(
                    st.sampled_from(sources), max_size=2), max_size=3))
            step["input"] = payload
        spec = SpecStep(name, compensation, is_pivot, step.get(
            "on_compensation_failure", defaults.get("on_compensation_failure", "park")))
        return shuffled(draw, step), spec

    def choice(before_pivot: bool) -> tuple[dict[str, Any], SpecChoice]:
        name = fresh()
        labels = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
        written, branches = [], []
        for number, label in enumerate(labels, start=1):
            body = [plain(before_pivot) for _ in range(draw(st.integers(0, 3)))]
            branch: dict[str, Any] = {"when": draw(CONDITION), "steps": [d for d, _ in body]}
            if draw(st.integers(0, 3)):
                branch["name"] = label
            else:  # unnamed: branch<number>
                label = f"branch{number}"
            written.append(shuffled(draw, branch))
            branches.append((label, tuple(s for _, s in body)))
        document: dict[str, Any] = {"name": name, "choice": written}
        default: tuple[SpecStep, ...] = ()
        if draw(st.booleans()):
            body = [plain(before_pivot) for _ in range(draw(st.integers(0, 2)))]
            document["default"] = [d for d, _ in body]
            default = tuple(s for _, s in body)
        branches.append(("default", default))
        return shuffled(draw, document), SpecChoice(name, tuple(branches))

    def parallel() -> tuple[dict[str, Any], SpecParallel]:
        name = fresh()
        labels = draw(st.lists(IDENT, min_size=2, max_size=3, unique=True))
        written, branches = {}, []
        for label in labels:
            body = [plain(True) for _ in range(draw(st.integers(1, 3)))]
            written[label] = [d for d, _ in body]
            branches.append((label, tuple(s for _, s in body)))
        return (shuffled(draw, {"name": name, "parallel": written}),
                SpecParallel(SpecStep(name, None, False, "park", block=True), tuple(branches)))

    steps: list[Any] = []
    items: list[Item] = []
    for i in range(count):
        before_pivot = pivot is None or i < pivot
        what = draw(st.integers(0, 9)) if blocks and i != pivot else 9
        if what == 0 and len([x for x in items if isinstance(x, SpecChoice)]) < 2:
            document, item = choice(before_pivot)
            steps.append(document)
            items.append(item)
            continue
        if what == 1 and before_pivot and len([
                x for x in items if isinstance(x, SpecParallel)]) < 2:
            document, block = parallel()
            steps.append(document)
            items.append(block)
            continue
        if i != pivot and draw(st.integers(0, 4)) == 0:  # a delay
            name = fresh()
            steps.append(shuffled(draw, {"name": name, "delay": draw(DELAY)}))
            items.append(SpecStep(name, None, False, "park", delay=True))
            continue
        if i != pivot and draw(st.integers(0, 5)) == 0:  # a wait for an event
            name = fresh()
            wait: dict[str, Any] = {"name": name, "wait_for": {
                "event": draw(st.sampled_from(["PaymentConfirmed", "Shipped", "a.b-c_1"])),
                "key": draw(st.sampled_from(["$.input.x", "fixed-key", 42]))}}
            if draw(st.booleans()):
                wait["timeout"] = draw(DELAY)
            steps.append(shuffled(draw, wait))
            items.append(SpecStep(name, None, False, "park", wait=True))
            continue
        document, spec = plain(before_pivot, i == pivot, top=True)
        steps.append(document)
        items.append(spec)
        earlier.append(spec.name)
    if not any(isinstance(i, SpecStep) for i in Shape(tuple(items)).flat):
        # only empty choices: a flow needs a step
        document, spec = plain(pivot is None, top=True)
        steps.append(document)
        items.append(spec)
    document = {
        "saga": draw(IDENT),
        "services": {s: draw(st.sampled_from([
            "flows.shop:Inventory", "pkg.mod:Class",
            {"class": "a.b.c:D", "instances": draw(st.integers(1, 4))}])) for s in services},
        "steps": steps,
    }
    if draw(st.booleans()):
        document["version"] = draw(st.integers(1, 9))
    if draw(st.booleans()):
        document["description"] = draw(st.sampled_from(["A flow", "é ü — ✓", "x: y # z"]))
    if draw(st.booleans()):
        document["input"] = {"type": "object", "properties": {"x": {"type": "string"}}}
    if defaults:
        document["defaults"] = defaults
    if draw(st.booleans()):
        document["deadline"] = draw(DURATION)
    document = shuffled(draw, document)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True,
                          default_flow_style=draw(st.sampled_from([False, None, True])))
    return text, Shape(tuple(items))


# -- reading the compiled machine ------------------------------------------------------------------
def machine_edges(compiled: Any) -> set[tuple[str, str, str]]:
    """(state, trigger, destination), read from the transitions Machine itself."""
    return {(source, trigger, transition.dest)
            for trigger, event in compiled.machine.events.items()
            for source, transitions in event.transitions.items()
            for transition in transitions}


def machine_table(compiled: Any) -> dict[tuple[str, str], str]:
    """(state, trigger) -> destination, for a machine without route-dependent edges."""
    table = {}
    for source, trigger, dest in machine_edges(compiled):
        assert (source, trigger) not in table, (source, trigger)
        table[(source, trigger)] = dest
    return table


def walk(compiled: Any, step: str, kind: str, route: tuple[str, ...] = ()) -> Outcome:
    """Drive the machine: every step succeeds up to ``step`` (the choices taking ``route``),
    which fails with ``kind``; every compensation then succeeds. A branch step's own track is
    driven; the block's other branches undo everything (from their undo entry)."""
    trigger = "rejected" if kind == "rejected" else "exhausted"
    picks = 0

    def move(state: str, on: str, where: Any = None) -> tuple[str, str | None]:
        found = compiled.next(state, on, route[:picks] if where is None else where)
        assert found is not None, (state, on, where, route[:picks])
        return found

    def undo_track(state: str, track: str) -> list[tuple[str, str]]:
        undone = []
        while not state.startswith("branch:"):
            info = compiled.info[state]
            assert info.phase == "compensation", state
            undone.append((info.step.name, info.step.compensation))
            state = move(state, "succeeded", track)[0]
        assert state == f"branch:{track}:compensated", state
        return undone

    track = compiled.track_of.get(step)
    block = track.rsplit(".", 1)[0] if track is not None else None
    state, ran = compiled.initial, []
    while state != f"step:{block or step}":
        assert state not in TERMINAL, (step, route, state)
        if state.startswith("choice:"):
            picks += 1
            state = move(state, "chosen")[0]
            continue
        info = compiled.info[state]
        ran.extend([s.name for b in info.step.branches for s in b.steps]
                   if info.step.branches else [info.step.name])
        state = move(state, "succeeded")[0]
    compensations: list[tuple[str, str]] = []
    if track is not None:
        others = [t for t in compiled.blocks[block] if t != track]
        for other in others:
            ran.extend(s.name for s in compiled.tracks[other][1].steps)
        branch_state = compiled.track_initial[track]
        while branch_state != f"step:{step}":
            ran.append(branch_state.removeprefix("step:"))
            branch_state = move(branch_state, "succeeded", track)[0]
        ran.append(step)
        compensations += undo_track(move(branch_state, trigger, track)[0], track)
        for other in others:
            compensations += undo_track(compiled.undo_entry[other], other)
        state, reason = move(state, "exhausted")
    else:
        ran.append(step)
        state, reason = move(state, trigger)
    while state not in TERMINAL:
        info = compiled.info[state]
        assert info.phase == "compensation", state
        if info.step.name == block:
            pass  # undone above
        elif info.step.branches:
            for t in compiled.blocks[info.step.name]:
                compensations += undo_track(compiled.undo_entry[t], t)
        else:
            compensations.append((info.step.name, info.step.compensation))
        state, reason = move(state, "succeeded")
    return Outcome(ran, compensations, state, reason)


def as_outcome(document: dict[str, Any]) -> Outcome:
    return Outcome(document["ran"],
                   [(c["step"], c["compensation"]) for c in document["compensations"]],
                   document["status"], document["reason"])


def plan_outcome(found: Any) -> Outcome:
    return Outcome(list(found.ran), [tuple(c) for c in found.compensations],  # type: ignore[misc]
                   found.status, found.reason)


def check_order(shape: Shape, outcome: Outcome) -> None:
    """No step undone twice; the main sequence's steps undone in reverse step order, and each
    parallel branch's steps in reverse step order."""
    names = [s.name for s in shape.flat]
    undone = [names.index(step) for step, _ in outcome.compensations]
    assert len(set(undone)) == len(undone), outcome
    branch_of = {s.name: (block.name, label) for block in shape.parallels
                 for label, steps in block.branches for s in steps}
    groups: dict[Any, list[int]] = {}
    for (step, _), index in zip(outcome.compensations, undone, strict=True):
        groups.setdefault(branch_of.get(step, "main"), []).append(index)
    for order in groups.values():
        assert order == sorted(order, reverse=True), outcome
    blocks = {block.name: {s.name for s in block.steps} for block in shape.parallels}
    main = [i for (step, _), i in zip(outcome.compensations, undone, strict=True)
            if step not in branch_of]
    for block, inside in blocks.items():  # a block is undone as a whole, between its neighbours
        where = [k for k, (step, _) in enumerate(outcome.compensations) if step in inside]
        if where:
            assert where == list(range(where[0], where[-1] + 1)), outcome
            position = names.index(block)
            later = [k for k, (step, _) in enumerate(outcome.compensations)
                     if step not in branch_of and names.index(step) > position]
            earlier = [k for k, (step, _) in enumerate(outcome.compensations)
                       if step not in branch_of and names.index(step) < position]
            assert all(k < where[0] for k in later) and all(k > where[-1] for k in earlier)
    assert main == sorted(main, reverse=True), outcome


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated_flows")


def check_loaded(loaded: Any, shape: Shape) -> None:
    """The loader read what was written: every step, block and choice."""
    spec = shape.flat
    assert [s.name for s in loaded.steps] == [s.name for s in spec]
    assert [s.compensation for s in loaded.steps] == [s.compensation for s in spec]
    assert [s.pivot for s in loaded.steps] == [s.pivot for s in spec]
    assert [s.on_compensation_failure for s in loaded.steps if s.calls_service] == [
        s.on_compensation_failure for s in spec if not (s.delay or s.wait or s.block)]
    assert [s.is_delay for s in loaded.steps] == [s.delay for s in spec]
    assert [s.is_wait for s in loaded.steps] == [s.wait for s in spec]
    assert [s.is_parallel for s in loaded.steps] == [s.block for s in spec]
    layout = []
    for node in loaded.sequence:
        if isinstance(node, Choice) or node.branches is not None:
            layout.append((node.name, [(b.name, [s.name for s in b.steps])
                                       for b in node.branches]))
        else:
            layout.append(node.name)
    assert layout == [
        (i.name, [(b, [s.name for s in steps]) for b, steps in i.branches])
        if isinstance(i, (SpecChoice, SpecParallel)) else i.name for i in shape.items]


def check_structure(compiled: Any, shape: Shape) -> None:
    """The states and edges of the machine, against the shape."""
    spec = shape.flat
    names = [s.name for s in spec]
    edges = machine_edges(compiled)
    states = set(compiled.machine.states)
    # a block has a compensation state when a branch step has a compensation (or always:
    # undoing a block also stops its branches; the model says which, and the plans below
    # check what is undone either way)
    undoable = {s.name for s in spec if s.compensation} | {
        b.name for b in shape.parallels if any(s.compensation for s in b.steps)
        or compiled.flow.step(b.name).undoable}
    tracks = [(b, label, steps) for b in shape.parallels for label, steps in b.branches]
    ends = {f"branch:{b.name}.{label}:{end}" for b, label, _ in tracks for end in TERMINAL}

    # the states: one per step (and block), one per compensation that exists, one per choice,
    # three ends per parallel branch, and the three terminal ones
    first = shape.sequence(shape.routes()[0])
    if isinstance(shape.items[0], SpecChoice):
        assert compiled.initial == f"choice:{shape.items[0].name}"
    else:
        assert compiled.initial == f"step:{first[0].name}"
    assert states == ({f"step:{n}" for n in names} | {f"compensation:{n}" for n in undoable}
                      | {f"choice:{c.name}" for c in shape.choices} | ends | set(TERMINAL)), (
        states ^ ({f"step:{n}" for n in names} | {f"compensation:{n}" for n in undoable}
                  | {f"choice:{c.name}" for c in shape.choices} | ends | set(TERMINAL)))
    for s in spec:
        if s.name not in undoable:
            assert all(dest != f"compensation:{s.name}" for _, _, dest in edges)
    # the same edges in the machine as in the engine's lookup
    assert edges == {(e.source, e.trigger, e.dest) for e in compiled.edges}
    if not shape.choices:
        machine_table(compiled)  # no route-dependent edge: one destination per trigger

    # no way out of an end; every other state reaches one
    assert not [e for e in edges if e[0] in TERMINAL or e[0] in ends]
    can_end = set(TERMINAL) | ends
    changed = True
    while changed:
        changed = False
        for source, _, dest in edges:
            if dest in can_end and source not in can_end:
                can_end.add(source)
                changed = True
    assert states <= can_end, f"cannot end: {states - can_end}"

    # a choice's branch leads to its first step, or past the choice
    for position, item in enumerate(shape.items):
        if not isinstance(item, SpecChoice):
            continue
        following = shape.items[position + 1] if position + 1 < len(shape.items) else None
        after = ("completed" if following is None else f"choice:{following.name}"
                 if isinstance(following, SpecChoice) else f"step:{following.name}")
        for _, steps in item.branches:
            dest = f"step:{steps[0].name}" if steps else after
            assert (f"choice:{item.name}", "chosen", dest) in edges

    # along every route: a compensation's success hands over to the nearest earlier
    # compensation, or ends compensated; running out parks the saga (failed) unless it retries
    # forever
    for route in shape.routes():
        units = shape.sequence(route)
        for index, unit in enumerate(units):
            if unit.name not in undoable:
                continue
            state = f"compensation:{unit.name}"
            earlier = [e for e in units[:index] if e.name in undoable]
            assert compiled.next(state, "succeeded", route) == (
                f"compensation:{earlier[-1].name}" if earlier else "compensated", None)
            failure = "park" if isinstance(unit, SpecParallel) else unit.on_compensation_failure
            if failure == "park":
                assert compiled.next(state, "exhausted", route) == (
                    "failed", "compensation_failed")
            else:
                assert compiled.next(state, "exhausted", route) is None
            assert compiled.next(state, "rejected", route) is None
    # in a parallel branch: the same, ending the branch
    for block, label, steps in tracks:
        track = f"{block.name}.{label}"
        for index, s in enumerate(steps):
            following = f"step:{steps[index + 1].name}" if index + 1 < len(steps) else \
                f"branch:{track}:completed"
            assert compiled.next(f"step:{s.name}", "succeeded", track)[0] == following
            if not s.compensation:
                continue
            state = f"compensation:{s.name}"
            earlier = [e for e in steps[:index] if e.compensation]
            assert compiled.next(state, "succeeded", track)[0] == (
                f"compensation:{earlier[-1].name}" if earlier else f"branch:{track}:compensated")
            if s.on_compensation_failure == "park":
                assert compiled.next(state, "exhausted", track) == (
                    f"branch:{track}:failed", "compensation_failed")
            else:
                assert compiled.next(state, "exhausted", track) is None


@given(flow=flows(), data=st.data())
def test_generated_flow_machine_and_plan(workdir: Path, flow: tuple[str, Shape],
                                         data: st.DataObject) -> None:
    text, shape = flow
    note(text)
    loaded = parse_flow(text, source="generated.yaml")
    check_loaded(loaded, shape)
    compiled = compile_flow(loaded)
    check_structure(compiled, shape)
    spec = shape.flat
    routes = shape.routes()

    # a delay or a wait is never rejected; a cancel or the deadline exhausts it like a step
    # without a compensation
    for s in spec:
        if s.delay or s.wait:
            route = shape.first_route(s.name)
            assert compiled.next(f"step:{s.name}", "rejected", route) is None
            assert walk(compiled, s.name, "error", route) == reference(
                shape, s.name, "error", route)

    # every (step, kind, route): the machine and `sagas.language.plan` agree with DESIGN,
    # compensations in reverse step order
    for s in spec:
        for kind in s.kinds:  # a delay cannot fail: no plan (--fail refuses it)
            for route in routes:
                if not shape.on_route(s.name, route):
                    continue
                expected = reference(shape, s.name, kind, route)
                outcome = walk(compiled, s.name, kind, route)
                assert outcome == expected, (s.name, kind, route)
                check_order(shape, outcome)
                assert plan_outcome(plan(compiled, s.name, kind, route=route)) == expected, (
                    s.name, kind, route)
            # without a route: the first route on which the step runs
            assert plan_outcome(plan(compiled, s.name, kind)) == reference(
                shape, s.name, kind, shape.first_route(s.name))

    # saga plan --json: every (step, kind) in one document (the first route to each step), and
    # one chosen (step, kind)
    path = workdir / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["flow"] == loaded.name and document["version"] == loaded.version
    got = [(entry["fail"], entry["kind"],
            tuple((r["choice"], r["branch"]) for r in entry["route"]), as_outcome(entry))
           for entry in document["plans"]]
    wanted = [plan for s in spec for kind in s.kinds for plan in route_plans(shape, s.name, kind)]
    assert got == wanted, [(a, b) for a, b in zip(got, wanted, strict=False) if a != b][:1]

    failing = [s for s in spec if s.kinds]
    if failing:
        chosen = data.draw(st.sampled_from(failing), label="--fail")
        name = chosen.name
        kind = data.draw(st.sampled_from(chosen.kinds), label="--kind")
        result = runner.invoke(main, ["plan", str(path), "--fail", name, "--kind", kind,
                                      "--json"])
        assert result.exit_code == 0, result.output
        single = json.loads(result.stdout)
        assert (single["flow"], single["fail"], single["kind"]) == (loaded.name, name, kind)
        assert as_outcome(single) == reference(shape, name, kind, shape.first_route(name))
        assert [(r["choice"], r["branch"]) for r in single["route"]] == list(
            shape.taken(name, shape.first_route(name)))

    # the Mermaid diagram shows every state and every transition of the machine
    result = runner.invoke(main, ["graph", str(path)])
    assert result.exit_code == 0, result.output
    check_mermaid(result.stdout, compiled, shape)


def mermaid_id(state: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", state)


def check_mermaid(text: str, compiled: Any, shape: Shape) -> None:
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    declared, edges = set(), set()
    for line in lines[1:]:
        if not line or line.startswith("%%"):
            continue
        if m := re.fullmatch(r'state "[^"]*" as (\w+)', line):
            declared.add(m[1])
        elif m := re.fullmatch(r"state (\w+) <<choice>>", line):
            assert m[1] in declared and m[1].startswith("choice_"), line
        elif m := re.fullmatch(r"(\[\*\]|\w+) --> (\[\*\]|\w+)(?: : (.+))?", line):
            label = m[3]
            if label is None:
                edges.add((m[1], m[2], None, None, None))
            elif m[1].startswith("choice_"):  # `branch: condition`, or `default`
                edges.add((m[1], m[2], "chosen", None, label.split(":")[0]))
            else:
                if fork := re.fullmatch(r"(starts|undoes) (\w+)", label):
                    edges.add((m[1], m[2], fork[1], None, fork[2]))
                    continue
                parts = re.fullmatch(r"(\w+)(?: \[(\w+)\])?(?: \((after [^()]+)\))?", label)
                assert parts, f"unexpected edge label: {line!r}"
                edges.add((m[1], m[2], parts[1], parts[2], parts[3]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    assert declared == {mermaid_id(s) for s in compiled.machine.states}
    expected = {(mermaid_id(e.source), mermaid_id(e.dest), e.trigger, e.reason, e.label)
                for e in compiled.edges}
    assert {(s, d, t) for s, d, t, _, _ in expected} == {
        (mermaid_id(s), mermaid_id(d), t) for s, t, d in machine_edges(compiled)}
    for block in shape.parallels:  # dashed: where a block starts, and undoes, its branches
        for label, steps in block.branches:
            expected.add((mermaid_id(f"step:{block.name}"), mermaid_id(f"step:{steps[0].name}"),
                          "starts", None, label))
            undoable = [s for s in steps if s.compensation]
            if undoable:
                expected.add((mermaid_id(f"compensation:{block.name}"),
                              mermaid_id(f"compensation:{undoable[-1].name}"), "undoes", None,
                              label))
    expected.add(("[*]", mermaid_id(compiled.initial), None, None, None))
    expected |= {(mermaid_id(t), "[*]", None, None, None) for t in TERMINAL}
    assert edges == expected
