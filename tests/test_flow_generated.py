"""Generated valid flows: the compiled machine and ``saga plan`` against DESIGN.md §4.2-4.3.

Hypothesis writes valid flow YAML (random step counts, compensations present or absent, pivot
anywhere or nowhere, retry settings, inputs, key order, block or flow style). Each must load and
compile, and then:

* every state of the compiled ``transitions`` machine reaches a terminal state;
* a step without a compensation gets no compensation state;
* compensations run in reverse step order;
* ``saga plan --json`` agrees, for every (step, kind), with the machine *and* with the reference
  model below, written from the text of DESIGN.md §4.2-4.3 (not from ``sagas.plan``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, note
from hypothesis import strategies as st

from cli import main
from sagas.compiler import compile_flow
from sagas.loader import parse_flow

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

    @property
    def kinds(self) -> tuple[str, ...]:
        """How it can fail: every kind for a service call, a timeout for a wait, never for a
        delay."""
        return () if self.delay else ("timeout",) if self.wait else KINDS


@dataclass(frozen=True)
class Outcome:
    ran: list[str]
    compensations: list[tuple[str, str]]  # (step, compensation action), in the order they run
    status: str
    reason: str | None


def reference(steps: list[SpecStep], index: int, kind: str) -> Outcome:
    """What DESIGN.md says happens when ``steps[index]`` fails with ``kind`` (``rejected``, or its
    attempts run out on ``error``s / ``timeout``s) and everything else succeeds."""
    pivot = next((i for i, s in enumerate(steps) if s.pivot), None)
    ran = [s.name for s in steps[: index + 1]]
    # §4.3: after the pivot has succeeded, recovery is forward; a later step that is rejected or
    # runs out ends the saga failed (forward_recovery), nothing compensated.
    if pivot is not None and index > pivot:
        return Outcome(ran, [], "failed", "forward_recovery")
    # §4.3: the pivot running out on errors or timeouts: outcome unknown, failed, nothing undone.
    if pivot is not None and index == pivot and kind != "rejected":
        return Outcome(ran, [], "failed", "pivot_unknown")
    # §4.2 (and a rejected pivot, §4.3): backward recovery. A step is compensated iff its action
    # was started and its final outcome was not rejected; one at a time, in reverse step order.
    started_not_rejected = list(range(index)) + ([index] if kind != "rejected" else [])
    undo = [(steps[i].name, steps[i].compensation) for i in reversed(started_not_rejected)
            if steps[i].compensation]
    return Outcome(ran, undo, "compensated", None)  # type: ignore[arg-type]


# -- generating valid flows -----------------------------------------------------------------------
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
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


def shuffled(draw: Any, mapping: dict[str, Any]) -> dict[str, Any]:
    order = draw(st.permutations(list(mapping)))
    return {key: mapping[key] for key in order}


@st.composite
def flows(draw: Any) -> tuple[str, list[SpecStep]]:
    count = draw(st.integers(1, 8))
    names = draw(st.lists(IDENT, min_size=count, max_size=count, unique=True))
    services = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    pivot = draw(st.none() | st.integers(0, count - 1))
    defaults: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "retry": RETRY, "timeout": DURATION, "on_compensation_failure": ON_FAILURE}))
    steps, spec = [], []
    for i, name in enumerate(names):
        before_pivot = pivot is None or i < pivot
        if i != pivot and draw(st.integers(0, 4)) == 0:  # a delay (issue 7)
            steps.append(shuffled(draw, {"name": name, "delay": draw(DELAY)}))
            spec.append(SpecStep(name, None, False, "park", delay=True))
            continue
        if i != pivot and draw(st.integers(0, 5)) == 0:  # a wait for an event (issue 7)
            wait: dict[str, Any] = {"name": name, "wait_for": {
                "event": draw(st.sampled_from(["PaymentConfirmed", "Shipped", "a.b-c_1"])),
                "key": draw(st.sampled_from(["$.input.x", "fixed-key", 42]))}}
            if draw(st.booleans()):
                wait["timeout"] = draw(DELAY)
            steps.append(shuffled(draw, wait))
            spec.append(SpecStep(name, None, False, "park", wait=True))
            continue
        step: dict[str, Any] = {"name": name, "service": draw(st.sampled_from(services)),
                                "action": draw(IDENT)}
        compensation = draw(st.none() | IDENT) if before_pivot else None
        if compensation:
            step["compensation"] = compensation
        elif draw(st.booleans()):
            step["effects"] = "none"
        if i == pivot:
            step["pivot"] = True
        elif draw(st.integers(0, 4)) == 0:
            step["pivot"] = False
        if draw(st.booleans()):
            step["retry"] = draw(RETRY)
        if draw(st.booleans()):
            step["timeout"] = draw(DURATION)
        if draw(st.booleans()):
            step["on_compensation_failure"] = draw(ON_FAILURE)
        if draw(st.booleans()):
            sources = ["$.input.x", "$.input.y.z", *(f"$.steps.{n}.out" for n in names[:i])]
            payload = draw(st.dictionaries(
                IDENT, st.sampled_from(sources) | st.integers() | st.lists(
                    st.sampled_from(sources), max_size=2), max_size=3))
            step["input"] = payload
        steps.append(shuffled(draw, step))
        spec.append(SpecStep(name, compensation, i == pivot, step.get(
            "on_compensation_failure", defaults.get("on_compensation_failure", "park"))))
    document: dict[str, Any] = {
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
    return text, spec


# -- reading the compiled machine ------------------------------------------------------------------
def machine_table(compiled: Any) -> dict[tuple[str, str], str]:
    """(state, trigger) -> destination, read from the transitions Machine itself."""
    table = {}
    for trigger, event in compiled.machine.events.items():
        for source, transitions in event.transitions.items():
            assert len(transitions) == 1, (source, trigger)
            table[(source, trigger)] = transitions[0].dest
    return table


def walk(compiled: Any, table: dict[tuple[str, str], str], step: str, kind: str) -> Outcome:
    """Drive the machine: every step succeeds up to ``step``, which fails with ``kind``; every
    compensation then succeeds."""
    state = compiled.initial
    ran = []
    while state != f"step:{step}":
        ran.append(state.removeprefix("step:"))
        state = table[(state, "succeeded")]
    ran.append(step)
    trigger = "rejected" if kind == "rejected" else "exhausted"
    previous, state = state, table[(state, trigger)]
    reason = compiled.next(previous, trigger)[1]
    compensations = []
    while state not in TERMINAL:
        assert state.startswith("compensation:"), state
        info = compiled.info[state]
        compensations.append((info.step.name, info.step.compensation))
        previous, state = state, table[(state, "succeeded")]
        reason = compiled.next(previous, "succeeded")[1]
    return Outcome(ran, compensations, state, reason)


def as_outcome(document: dict[str, Any]) -> Outcome:
    return Outcome(document["ran"],
                   [(c["step"], c["compensation"]) for c in document["compensations"]],
                   document["status"], document["reason"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated_flows")


@given(flow=flows(), data=st.data())
def test_generated_flow_machine_and_plan(workdir: Path, flow: tuple[str, list[SpecStep]],
                                         data: st.DataObject) -> None:
    text, spec = flow
    note(text)
    loaded = parse_flow(text, source="generated.yaml")
    assert [s.name for s in loaded.steps] == [s.name for s in spec]
    assert [s.compensation for s in loaded.steps] == [s.compensation for s in spec]
    assert [s.pivot for s in loaded.steps] == [s.pivot for s in spec]
    assert [s.on_compensation_failure for s in loaded.steps if s.calls_service] == [
        s.on_compensation_failure for s in spec if not (s.delay or s.wait)]
    assert [s.is_delay for s in loaded.steps] == [s.delay for s in spec]
    assert [s.is_wait for s in loaded.steps] == [s.wait for s in spec]

    compiled = compile_flow(loaded)
    table = machine_table(compiled)
    states = list(compiled.machine.states)
    names = [s.name for s in spec]

    # the states: one per step, one per compensation that exists, and the three terminal ones
    assert compiled.initial == f"step:{names[0]}"
    assert set(states) == (
        {f"step:{n}" for n in names}
        | {f"compensation:{s.name}" for s in spec if s.compensation}
        | set(TERMINAL))
    for s in spec:
        if not s.compensation:
            assert f"compensation:{s.name}" not in states
            assert all(dest != f"compensation:{s.name}" for dest in table.values())

    # no way out of a terminal state; every other state reaches one
    assert not [key for key in table if key[0] in TERMINAL]
    can_end = set(TERMINAL)
    changed = True
    while changed:
        changed = False
        for (source, _), dest in table.items():
            if dest in can_end and source not in can_end:
                can_end.add(source)
                changed = True
    assert set(states) <= can_end, f"cannot end: {set(states) - can_end}"

    # a compensation's success hands over to the nearest earlier compensation, or ends
    # compensated; running out parks the saga (failed) unless it retries forever
    for index, s in enumerate(spec):
        if not s.compensation:
            continue
        state = f"compensation:{s.name}"
        earlier = [e for e in spec[:index] if e.compensation]
        assert table[(state, "succeeded")] == (
            f"compensation:{earlier[-1].name}" if earlier else "compensated")
        if s.on_compensation_failure == "park":
            assert table[(state, "exhausted")] == "failed"
            assert compiled.next(state, "exhausted")[1] == "compensation_failed"
        else:
            assert (state, "exhausted") not in table
        assert (state, "rejected") not in table

    # a delay is never rejected; a cancel or the deadline exhausts it like a step without a
    # compensation
    for index, s in enumerate(spec):
        if s.delay or s.wait:
            assert (f"step:{s.name}", "rejected") not in table
            assert walk(compiled, table, s.name, "error") == reference(spec, index, "error")

    # every (step, kind): the machine agrees with DESIGN, compensations in reverse step order
    machine = {}
    for index, name in enumerate(names):
        for kind in spec[index].kinds:  # a delay cannot fail: no plan (--fail refuses it)
            outcome = walk(compiled, table, name, kind)
            assert outcome == reference(spec, index, kind), (name, kind)
            order = [names.index(step) for step, _ in outcome.compensations]
            assert order == sorted(order, reverse=True) and len(set(order)) == len(order)
            machine[(name, kind)] = outcome

    # saga plan --json: every (step, kind) in one document, and one chosen (step, kind)
    path = workdir / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["flow"] == loaded.name and document["version"] == loaded.version
    seen = set()
    for entry in document["plans"]:
        key = (entry["fail"], entry["kind"])
        assert as_outcome(entry) == machine[key], key
        seen.add(key)
    assert seen == set(machine)

    failing = [s for s in spec if s.kinds]
    if not failing:
        return
    chosen = data.draw(st.sampled_from(failing), label="--fail")
    name = chosen.name
    kind = data.draw(st.sampled_from(chosen.kinds), label="--kind")
    result = runner.invoke(main, ["plan", str(path), "--fail", name, "--kind", kind, "--json"])
    assert result.exit_code == 0, result.output
    single = json.loads(result.stdout)
    assert (single["flow"], single["fail"], single["kind"]) == (loaded.name, name, kind)
    assert as_outcome(single) == reference(spec, names.index(name), kind)

    # the Mermaid diagram shows every state and every transition of the machine
    result = runner.invoke(main, ["graph", str(path)])
    assert result.exit_code == 0, result.output
    check_mermaid(result.stdout, compiled, table)


def mermaid_id(state: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", state)


def check_mermaid(text: str, compiled: Any, table: dict[tuple[str, str], str]) -> None:
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    declared, edges = set(), set()
    for line in lines[1:]:
        if not line or line.startswith("%%"):
            continue
        if m := re.fullmatch(r'state "[^"]*" as (\w+)', line):
            declared.add(m[1])
        elif m := re.fullmatch(r"(\[\*\]|\w+) --> (\[\*\]|\w+)(?: : (\w+)(?: \[(\w+)\])?)?", line):
            edges.add((m[1], m[2], m[3], m[4]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    assert declared == {mermaid_id(s) for s in compiled.machine.states}
    expected = {(mermaid_id(src), mermaid_id(dest), trigger, compiled.next(src, trigger)[1])
                for (src, trigger), dest in table.items()}
    expected.add(("[*]", mermaid_id(compiled.initial), None, None))
    expected |= {(mermaid_id(t), "[*]", None, None) for t in TERMINAL}
    assert edges == expected
