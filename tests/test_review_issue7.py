"""Review of issue 7 (event bus; choice, parallel and trigger): regression tests for the bugs
found. Each test fails on the code as reviewed and is marked ``xfail(strict=True)`` so the
suite stays green; remove the marker when the bug is fixed.

Most parallel-block tests drive the pure core (``sagas.core.start`` / ``handle`` / ``replay``
/ ``resume``) with a fake env, so the interleaving is exact; one runs the whole runtime on
virtual time (``SagaTestEnvironment``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from sagas import core, parse_flow
from sagas.audit import audit_saga
from sagas.compiler import compile_flow
from sagas.conditions import Condition
from sagas.stores._base import SagaHeader, SagaRecord
from sagas.testing import SagaTestEnvironment
from tests.flow_support import CarDesk, FlightDesk, HotelDesk, TripDesk

ROOT = Path(__file__).resolve().parent.parent


# -- a driver for the pure core -----------------------------------------------------------------
class _Env:
    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t

    def random(self, key: str) -> float:
        return 0.5


class _Core:
    """One saga driven through ``sagas.core``: its events and every command it was given."""

    def __init__(self, text: str, saga_input: dict | None = None) -> None:
        self.flow = parse_flow(textwrap.dedent(text), source="review.yaml")
        self.compiled = compile_flow(self.flow)
        self.env = _Env()
        self.saga, events, commands = core.start(self.compiled, "s1", saga_input or {},
                                                 self.env)
        self.events = list(events)
        self.commands = list(commands)

    def handle(self, signal: core.Signal) -> tuple[list, list]:
        events, commands = core.handle(self.saga, signal, self.env)
        self.events += events
        self.commands += commands
        return events, commands

    def reply(self, step: str, outcome: str = "succeeded", *, phase: str = "action",
              attempt: int | None = None) -> tuple[list, list]:
        sent = [c for c in self.commands if isinstance(c, core.Execute) and c.step == step
                and c.phase == phase]
        command = sent[-1] if attempt is None else next(c for c in sent if c.attempt == attempt)
        ok = outcome == "succeeded"
        return self.handle(core.ReplyReceived(phase, step, command.attempt, outcome,
                                              {} if ok else None, None if ok else "boom",
                                              command.command_id))

    def fire(self, kind: str, step: str, *, phase: str = "action") -> tuple[list, list]:
        timer = [c for c in self.commands if isinstance(c, core.SetTimer) and c.kind == kind
                 and c.step == step and c.phase == phase][-1]
        self.env.t = max(self.env.t, timer.at)
        return self.handle(timer.fired())

    def of(self, kind: str, step: str | None = None, branch: str | None = None) -> list:
        return [e for e in self.events if e.type == kind and (step is None or e.step == step)
                and (branch is None or e.data.get("branch") == branch)]

    def record(self, events: list | None = None) -> SagaRecord:
        events = self.events if events is None else events
        header = SagaHeader("s1", self.flow.name, 1, self.flow.definition, self.saga.input,
                            self.saga.status, self.saga.reason, 0.0, 0.0, events[-1].seq)
        return SagaRecord(header, self.flow.text, tuple(events))


BLOCK = """\
    saga: review_par
    services:
      s: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 1}
      timeout: 10s
    steps:
      - {name: prep, service: s, action: do, compensation: undo}
      - name: blk
        parallel:
          a:
            - {name: a1, service: s, action: do, compensation: undo}
          b:
            - {name: b1, service: s, action: do, effects: none}
    """


# -- (1) late replies for a branch that has ended -----------------------------------------------
def test_late_reply_after_a_branch_ended_compensated_leaves_the_saga_stuck():
    saga = _Core(BLOCK)
    saga.reply("prep")
    saga.reply("a1")                          # branch a completed
    saga.fire("timeout", "b1")                # b1 times out: branch b compensated, block fails
    assert saga.of("branch.compensated", branch="blk.b")
    assert saga.of("compensation.started", "a1")
    saga.reply("b1", attempt=1)               # the late reply of b1's timed-out attempt
    saga.reply("a1", phase="compensation")    # branch a undone
    # the block's compensation finishes: prep is undone next ...
    assert saga.of("compensation.succeeded", "blk"), [(e.type, e.step) for e in saga.events]
    assert saga.of("compensation.started", "prep")
    # ... and the late reply was ignored (§4.5: it ends only the step *in progress*)
    assert [e.type for e in saga.events if e.step == "b1"][-1] == "reply.ignored"
    assert len(saga.of("branch.compensated", branch="blk.b")) == 1
    assert not saga.of("branch.completed", branch="blk.b")


def test_late_reply_after_a_branch_completed_is_ignored():
    saga = _Core(BLOCK.replace("retry: {attempts: 1}", "retry: {attempts: 2, backoff: 0}"))
    saga.reply("prep")
    saga.fire("timeout", "b1")                # attempt 1 times out, attempt 2 at once
    saga.reply("b1", attempt=2)               # branch b completed
    assert len(saga.of("branch.completed", branch="blk.b")) == 1
    saga.reply("b1", attempt=1)               # attempt 1's reply comes late
    assert len(saga.of("step.succeeded", "b1")) == 1
    assert len(saga.of("branch.completed", branch="blk.b")) == 1
    assert saga.events[-1].type == "reply.ignored"


# -- (1) a halted branch's backoff timer after the branch ended ---------------------------------
STALE = textwrap.dedent("""\
    saga: review_stale
    services:
      fl: tests.flow_support:FlightDesk
      ho: tests.flow_support:HotelDesk
      ca: tests.flow_support:CarDesk
      it: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 3, backoff: 10s, multiplier: 1, jitter: false}
      timeout: 30s
    steps:
      - {name: prep, service: it, action: do, compensation: undo}
      - name: blk
        parallel:
          a:
            - {name: a1, service: fl, action: do, compensation: undo, retry: {backoff: 3s}}
          b:
            - {name: b1, service: ho, action: do, effects: none, retry: {backoff: 5s}}
    """)


def test_a_halted_branch_starts_no_attempt_after_it_ended():
    svc = {"fl": FlightDesk({("a1", "action"): ["error", "reject"]}),
           "ho": HotelDesk({("b1", "action"): ["error"]}),
           "ca": CarDesk({}),
           "it": TripDesk({("prep", "compensation"): ["error"]})}
    # t+0: a1 error (again at +3s), b1 error (again at +5s); t+3: a1 rejected: the block
    # fails, branch b (in backoff) is halted and ends, prep's undo errors (again at +13s)
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(parse_flow(STALE, source="stale.yaml"), {})
    assert result.status == "compensated"
    assert svc["ho"].actions() == ["b1"], [(e.type, e.step, e.attempt) for e in result.history]
    undone = next(i for i, e in enumerate(result.history)
                  if e.type == "compensation.succeeded" and e.step == "blk")
    assert not [e for e in result.history[undone:] if e.type == "step.started"]


# -- (1) a block whose branches have nothing to undo --------------------------------------------
def test_a_block_with_nothing_to_undo_halts_its_branches_when_it_fails():
    saga = _Core("""\
        saga: review_flat
        services:
          s: tests.flow_support:TripDesk
        defaults:
          retry: {attempts: 1}
          timeout: 10s
        steps:
          - {name: prep, service: s, action: do, compensation: undo}
          - name: blk
            parallel:
              a:
                - {name: a1, service: s, action: do, effects: none}
              b:
                - {name: b1, service: s, action: do, effects: none}
                - {name: b2, service: s, action: do, effects: none}
        """)
    saga.reply("prep")
    saga.reply("a1", "rejected")              # the block fails and is undone: b is halted
    assert saga.of("branch.halted", "blk")
    assert not saga.of("compensation.started", "prep")  # the branches end first
    _, commands = saga.reply("b1")            # b1 was in flight: its branch stops here
    assert not saga.of("step.started", "b2")
    assert not [c for c in commands if isinstance(c, core.Execute) and c.phase == "action"]
    assert saga.of("compensation.started", "prep")  # then the steps before the block


# -- (1) saga retry of a saga parked mid-block --------------------------------------------------
def test_retry_of_a_saga_parked_unavailable_mid_block_goes_on_forward():
    text = BLOCK.replace("effects: none", "compensation: undo")
    saga = _Core(text)
    saga.reply("prep")
    saga.reply("a1")                          # branch a completed, b1 in flight
    last = saga.events[-1]
    saga.events.append(core.park_unavailable("s1", last.seq, last.event_id, "gone", saga.env))
    saga.saga = core.replay("s1", saga.compiled, saga.events)   # the services import again
    assert (saga.saga.status, saga.saga.reason) == ("failed", "definition_unavailable")
    saga.commands = []
    saga.handle(core.Retry("review"))
    assert saga.saga.status == "running"
    assert not saga.of("compensation.started", "blk")
    sent = {(c.step, c.phase) for c in saga.commands if isinstance(c, core.Execute)}
    assert ("b1", "action") in sent
    saga.reply("b1")
    assert saga.of("step.succeeded", "blk")
    assert saga.saga.status == "completed"


# -- (4) the audit of parallel and choice logs --------------------------------------------------
def test_audit_flags_a_block_that_succeeded_though_a_branch_failed():
    saga = _Core(BLOCK.replace("effects: none", "compensation: undo"))
    saga.reply("prep")
    saga.reply("a1")
    saga.reply("b1")
    assert saga.saga.status == "completed"
    assert audit_saga(saga.record(), now=2_000.0) == []
    corrupt = []
    for event in saga.events:
        if event.step == "b1" and event.type == "step.succeeded":
            event = replace(event, type="step.failed",
                            data={"error": "no", "kind": "rejected"})
        elif event.type == "branch.completed" and event.data["branch"] == "blk.b":
            event = replace(event, type="branch.compensated")
        corrupt.append(event)
    assert audit_saga(saga.record(corrupt), now=2_000.0) != []


CHOICE = """\
    saga: review_choice
    services:
      s: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 1}
      timeout: 10s
    steps:
      - {name: prep, service: s, action: do, compensation: undo}
      - name: size
        choice:
          - name: big
            when: {path: $.input.amount, gt: 100}
            steps:
              - {name: insure, service: s, action: do, compensation: undo}
      - {name: ship, service: s, action: do, compensation: undo}
    """


def test_audit_flags_a_choice_its_conditions_do_not_allow():
    saga = _Core(CHOICE, {"amount": 500})
    saga.reply("prep")
    saga.reply("insure")
    saga.reply("ship")
    assert saga.saga.status == "completed"
    assert audit_saga(saga.record(), now=2_000.0) == []
    corrupt = [replace(e, data={"input": {"amount": 5}, "deadline_at": None})
               if e.type == "saga.started" else e for e in saga.events]
    assert audit_saga(saga.record(corrupt), now=2_000.0) != []


# -- (2) conditions -----------------------------------------------------------------------------
def test_condition_equality_keeps_nested_booleans_apart_from_numbers():
    context = {"input": {"flags": [1], "obj": {"flag": 1}}, "steps": {}}
    assert not Condition("eq", "$.input.flags", [True]).holds(context)
    assert not Condition("eq", "$.input.obj", {"flag": True}).holds(context)
    assert not Condition("in", "$.input.flags", ([True],)).holds(context)


# -- (3) compiler: too many routes --------------------------------------------------------------
def _many_choices(count: int) -> str:
    lines = ["saga: review_routes", "services:", "  s: tests.flow_support:TripDesk", "steps:"]
    for i in range(count):
        lines += [f"  - name: c{i}", "    choice:",
                  f"      - when: {{path: $.input.x, eq: {i}}}", "        steps:",
                  f"          - {{name: s{i}, service: s, action: do, compensation: undo}}"]
    return "\n".join(lines) + "\n"


def test_validate_rejects_a_flow_with_more_routes_than_the_compiler_takes(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(_many_choices(11))
    result = CliRunner().invoke(cli.main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    plan = CliRunner().invoke(cli.main, ["plan", str(path)])
    assert plan.exit_code == 2, plan.output


# -- (6) the event bus: a runtime refused at construction ---------------------------------------
def test_a_runtime_refusing_a_subscriber_leaves_no_thread_behind():
    code = textwrap.dedent("""\
        from sagas import Runtime
        from sagas.bus import Subscriber
        try:
            Runtime(subscribers=[Subscriber("bad name", ["*"], print)])
        except ValueError:
            pass
        """)
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=15,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: the refused runtime's threads still run")
    assert done.returncode == 0, done.stderr


# -- (5) triggers: the trigger's cursor shares the subscribers' namespace -----------------------
def test_a_subscriber_cannot_move_a_triggers_cursor():
    import time

    from sagas import Runtime
    from sagas.errors import UnknownSaga

    flow = ROOT / "flows" / "order_inventory.yaml"

    def data(n: int) -> dict:
        return {"order_id": f"o-{n}", "sku": "widget", "qty": 1, "amount": 25}

    def appears(runtime: Runtime, saga_id: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                runtime.store.header(saga_id)
                return True
            except UnknownSaga:
                time.sleep(0.01)
        return False

    with Runtime(poll_interval=0.02) as runtime:
        with pytest.raises(ValueError, match="reserved for flow triggers"):
            runtime.subscribe("trigger:order_inventory", ["*"], lambda delivery: None)
        runtime.add_trigger(flow)
        runtime.send("OrderPlaced", "o-1", data(1))
        assert appears(runtime, "order_inventory.o-1", 5)
        runtime.wait("order_inventory.o-1", timeout=5)
        assert runtime.bus.wait_caught_up(5)
        runtime.send("OrderPlaced", "o-2", data(2))
        assert appears(runtime, "order_inventory.o-2", 5)
