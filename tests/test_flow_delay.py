"""``delay`` steps: a durable timed pause.

A delay is written ``{name: ..., delay: 10s}``. It calls no service and has nothing to undo; its
``step.started`` records when it ends (``timeout_at``) and its ``step.succeeded`` comes when that
time has passed. A cancel or the deadline during the pause stops it like an exhausted step (the
steps before it are compensated); a restart resumes it with the time it has left.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from sagas import FlowErrors, load_flow, parse_flow
from sagas.language.compiler import compile_flow
from sagas.language.plan import plan, plans
from sagas.testing import SagaTestEnvironment, check_invariants, run_schedule

FLOW = textwrap.dedent("""\
    saga: cooled
    services:
      svc: tests.support:Scripted
    deadline: 1h
    steps:
      - {name: a, service: svc, action: do, compensation: undo}
      - {name: pause, delay: 5m}
      - {name: b, service: svc, action: do, compensation: undo}
    """)


@pytest.fixture
def flow():
    return parse_flow(FLOW, source="cooled.yaml")


def kinds(result, step=None):
    return [(e.type, e.step) for e in result.history if step is None or e.step == step]


def test_a_delay_pauses_for_its_duration_then_the_saga_goes_on(flow):
    with SagaTestEnvironment() as env:
        begin = env.now()
        result = env.run(flow, {})
    assert result.status == "completed"
    assert kinds(result, "pause") == [("step.started", "pause"), ("step.succeeded", "pause")]
    started, done = [e for e in result.history if e.step == "pause"]
    assert started.data == {"payload": None, "timeout_at": begin + 300, "delay": 300.0}
    assert done.at == begin + 300 and done.data == {"output": {}}
    b_started = next(e for e in result.history if e.type == "step.started" and e.step == "b")
    assert b_started.at == begin + 300


def test_nothing_happens_before_the_delay_is_over(flow):
    with SagaTestEnvironment() as env:
        saga_id = env.start(flow, {})
        env.settle()
        env.advance(299)
        env.settle()
        assert kinds(env.result(saga_id))[-1] == ("step.started", "pause")
        env.advance(1)
        env.settle()
        assert env.result(saga_id).status == "completed"


def test_cancel_during_the_delay_compensates_the_steps_before_it(flow):
    with SagaTestEnvironment() as env:
        saga_id = env.start(flow, {})
        env.settle()
        env.advance(60)
        env.settle()
        env.runtime.cancel(saga_id)
        result = env.drive(saga_id)
    assert result.status == "compensated"
    timed_out = next(e for e in result.history if e.type == "step.timed_out")
    assert (timed_out.step, timed_out.data["reason"]) == ("pause", "cancelled")
    assert [e.step for e in result.history if e.type == "compensation.succeeded"] == ["a"]
    assert not any(e.step == "b" for e in result.history)


def test_the_deadline_during_a_delay_compensates_as_well():
    flow = parse_flow(FLOW.replace("deadline: 1h", "deadline: 1m"), source="short.yaml")
    with SagaTestEnvironment() as env:
        result = env.run(flow, {})
    assert result.status == "compensated"
    assert ("saga.deadline_exceeded", None) in kinds(result)
    assert [e.step for e in result.history if e.type == "compensation.succeeded"] == ["a"]


def test_a_restart_resumes_the_delay_with_the_time_it_has_left(tmp_path: Path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with SagaTestEnvironment(url, start=1_000_000.0) as first:
        saga_id = first.start(flow, {})
        first.settle()
        assert kinds(first.result(saga_id))[-1] == ("step.started", "pause")
    # the process is gone; another one picks the saga up 100 s later
    with SagaTestEnvironment(url, start=1_000_100.0) as second:
        assert second.runtime.recover() == [saga_id]
        result = second.drive(saga_id)
        assert second.now() == 1_000_300.0  # the original end, not 300 s after the restart
    assert result.status == "completed"
    assert kinds(result, "pause") == [("step.started", "pause"), ("step.succeeded", "pause")]


def test_a_restart_after_the_delay_ended_goes_straight_on(tmp_path: Path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with SagaTestEnvironment(url, start=1_000_000.0) as first:
        saga_id = first.start(flow, {})
        first.settle()
    with SagaTestEnvironment(url, start=1_001_000.0) as second:
        second.runtime.recover()
        result = second.drive(saga_id)
    assert result.status == "completed"
    done = next(e for e in result.history if e.type == "step.succeeded" and e.step == "pause")
    assert done.at == 1_001_000.0


def test_the_harness_and_the_invariants_understand_delays(flow):
    run = run_schedule(flow, {})
    assert run.status == "completed"
    check_invariants(run)


def test_a_delay_is_drawn_and_has_no_plan(flow, tmp_path: Path):
    compiled = compile_flow(flow)
    assert "pause" not in {p.step for p in plans(compiled)}
    with pytest.raises(ValueError, match="'pause' is a delay: it cannot fail"):
        plan(compiled, "pause")
    path = tmp_path / "cooled.yaml"
    path.write_text(FLOW)
    runner = CliRunner()
    graph = runner.invoke(cli.main, ["graph", str(path)])
    assert graph.exit_code == 0 and "pause: wait 5m" in graph.output
    refused = runner.invoke(cli.main, ["plan", str(path), "--fail", "pause"])
    assert refused.exit_code == 2
    table = runner.invoke(cli.main, ["plan", str(path)])
    assert table.exit_code == 0 and "pause (delay)" in table.output


@pytest.mark.parametrize(("step", "message"), [
    ("{name: p, delay: 5s, service: svc}",
     "step 'p' is a delay: it has only a name and a delay, not 'service'"),
    ("{name: p, delay: 0s}", "delay must be longer than zero"),
    ("{name: p, delay: soon}", "delay: expected a duration like 250ms, 5s, 2m or 1h"),
    ("{delay: 5s}", "is missing required key 'name'"),
    ("{name: p, delay: 5s, wait: 1}", "unknown key 'wait' in step 'p'"),
])
def test_a_malformed_delay_is_refused_with_its_line_and_column(step, message):
    text = FLOW.replace("{name: pause, delay: 5m}", step)
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="bad.yaml")
    errors = caught.value.errors
    assert any(message in e.message for e in errors), [e.format() for e in errors]
    assert all(e.line == 7 for e in errors), [e.format() for e in errors]


def test_the_shipped_money_transfer_pauses_two_seconds_before_the_credit():
    flow = load_flow(Path(__file__).parent.parent / "flows" / "money_transfer.yaml")
    window = flow.step("review_window")
    assert window.is_delay and window.delay == 2.0
