"""``wait_for`` steps and ``saga send``: a saga that waits for an external event.

A wait is written ``{name, wait_for: {event: PaymentConfirmed, key: $.input.order_id},
timeout: 10m}``. Its ``step.started`` records the event and the correlation key it waits for;
the event (sent with ``Runtime.send`` or ``saga send``) becomes its output. An event sent
before the saga gets there is kept in the store and consumed then; an event id sent twice is
ignored; a wait past its timeout is an exhausted step (the steps before it are compensated).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli
from sagas import FlowErrors, parse_flow
from sagas.language.compiler import compile_flow
from sagas.language.plan import plan, plans
from sagas.stores import open_store
from sagas.testing import SagaTestEnvironment, Schedule, check_invariants, run_schedule
from tests.support import SAGA_CODE, eventually, saga_cli

ROOT = Path(__file__).resolve().parent.parent
FLOW = textwrap.dedent("""\
    saga: paid_order
    services:
      svc: tests.support:Scripted
    steps:
      - {name: reserve, service: svc, action: do, compensation: undo}
      - name: payment
        wait_for: {event: PaymentConfirmed, key: $.input.order_id}
        timeout: 1h
      - {name: ship, service: svc, action: do, compensation: undo,
         input: {paid: $.steps.payment.amount}}
    """)


@pytest.fixture
def flow():
    return parse_flow(FLOW, source="paid_order.yaml")


def types(result, step=None):
    return [e.type for e in result.history if step is None or e.step == step]


def test_the_event_completes_the_wait_and_is_its_output(flow):
    with SagaTestEnvironment() as env:
        saga_id = env.start(flow, {"order_id": "o-1"})
        env.settle()
        started = env.result(saga_id).history[-1]
        assert (started.type, started.step) == ("step.started", "payment")
        assert started.data["wait_for"] == {"event": "PaymentConfirmed", "key": "o-1"}
        assert env.runtime.send("PaymentConfirmed", "o-1", {"amount": 25}, event_id="p-1") == \
            ("p-1", True)
        result = env.drive(saga_id)
    assert result.status == "completed"
    done = next(e for e in result.history if e.type == "step.succeeded" and e.step == "payment")
    assert done.data == {"output": {"amount": 25}, "event_id": "p-1"}
    ship = next(e for e in result.history if e.type == "step.started" and e.step == "ship")
    assert ship.data["payload"] == {"paid": 25}


def test_an_event_sent_before_the_wait_is_kept_and_consumed(flow):
    with SagaTestEnvironment() as env:
        env.runtime.send("PaymentConfirmed", "o-2", {"amount": 7})
        result = env.run(flow, {"order_id": "o-2"})
        assert result.status == "completed"
        (event,) = env.runtime.store.events_after(0)
        assert event.consumed_by == result.saga_id


def test_a_duplicate_event_id_is_ignored_and_one_event_serves_one_saga(flow):
    with SagaTestEnvironment() as env:
        assert env.runtime.send("PaymentConfirmed", "o-3", event_id="p-3")[1] is True
        assert env.runtime.send("PaymentConfirmed", "o-3", event_id="p-3")[1] is False
        first = env.run(flow, {"order_id": "o-3"}, saga_id="first")
        second = env.start(flow, {"order_id": "o-3"}, saga_id="second")
        env.settle()
        assert first.status == "completed"
        assert types(env.result(second), "payment") == ["step.started"]  # still waiting
        env.runtime.send("PaymentConfirmed", "o-3", event_id="p-4")
        assert env.drive(second).status == "completed"


def test_events_for_another_key_or_type_do_not_count(flow):
    with SagaTestEnvironment() as env:
        saga_id = env.start(flow, {"order_id": "o-5"})
        env.settle()
        env.runtime.send("PaymentConfirmed", "o-6")
        env.runtime.send("PaymentFailed", "o-5")
        env.settle()
        assert types(env.result(saga_id), "payment") == ["step.started"]


def test_a_wait_past_its_timeout_compensates(flow):
    with SagaTestEnvironment() as env:
        begin = env.now()
        result = env.run(flow, {"order_id": "o-7"})
        assert env.now() == begin + 3600
    assert result.status == "compensated"
    assert types(result, "payment") == ["step.started", "step.timed_out"]
    assert [e.step for e in result.history if e.type == "compensation.succeeded"] == ["reserve"]


def test_a_cancel_during_the_wait_compensates(flow):
    with SagaTestEnvironment() as env:
        saga_id = env.start(flow, {"order_id": "o-8"})
        env.settle()
        env.runtime.cancel(saga_id)
        result = env.drive(saga_id)
    assert result.status == "compensated"
    assert [e.step for e in result.history if e.type == "compensation.succeeded"] == ["reserve"]


def test_a_restart_keeps_waiting_and_takes_an_event_sent_meanwhile(tmp_path: Path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with SagaTestEnvironment(url, start=1_000_000.0) as first:
        saga_id = first.start(flow, {"order_id": "o-9"})
        first.settle()
    store = open_store(url)  # another process sends while nobody drives the saga
    try:
        store.send_event("PaymentConfirmed", "o-9", {"amount": 3}, sent_at=1_000_050.0)
    finally:
        store.close()
    with SagaTestEnvironment(url, start=1_000_100.0) as second:
        assert second.runtime.recover() == [saga_id]
        result = second.drive(saga_id)
    assert result.status == "completed"
    assert types(result, "payment") == ["step.started", "step.succeeded"]


def test_the_harness_delivers_the_event_unless_a_fault_says_it_never_comes(flow):
    happy = run_schedule(flow, {"order_id": "o-1"})
    assert happy.status == "completed"
    check_invariants(happy)
    never = run_schedule(flow, {"order_id": "o-1"},
                         Schedule({("action", "payment", 1): "timeout"}))
    assert never.status == "compensated"
    check_invariants(never)


def test_plan_graph_and_validation(flow, tmp_path: Path):
    compiled = compile_flow(flow)
    assert [(p.step, p.kind) for p in plans(compiled) if p.step == "payment"] == \
        [("payment", "timeout")]
    assert plan(compiled, "payment", "timeout").compensations == (("reserve", "undo"),)
    with pytest.raises(ValueError, match="can only time out"):
        plan(compiled, "payment", "rejected")
    path = tmp_path / "paid_order.yaml"
    path.write_text(FLOW)
    graph = CliRunner().invoke(cli.main, ["graph", str(path)])
    assert "payment: wait for PaymentConfirmed ($.input.order_id)" in graph.output


@pytest.mark.parametrize(("change", "message"), [
    ("timeout: 1h", "timeout: 1h\n    service: svc",),
    ("{event: PaymentConfirmed, key: $.input.order_id}", "{key: $.input.order_id}"),
    ("{event: PaymentConfirmed, key: $.input.order_id}", "{event: 'no spaces', key: x}"),
    ("{event: PaymentConfirmed, key: $.input.order_id}",
     "{event: PaymentConfirmed, key: $.steps.ship.id}"),
])
def test_a_malformed_wait_is_refused_with_its_line(change, message):
    text = FLOW.replace(change, message)
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="bad.yaml")
    assert all(6 <= e.line <= 9 for e in caught.value.errors), \
        [e.format() for e in caught.value.errors]


def start_saga(*args: str, cwd: Path, **streams: Any) -> subprocess.Popen[str]:
    """The ``saga`` command of this checkout, started in a subprocess in ``cwd``."""
    return subprocess.Popen([sys.executable, "-c", SAGA_CODE, *args], cwd=cwd, text=True,
                            **streams)


def waiting_at_payment(db: Path) -> bool:
    if not db.exists():
        return False
    store = open_store(f"sqlite:///{db}")
    try:
        sagas = store.list()
        if not sagas:
            return False
        return store.load(sagas[0].saga_id).events[-1].step == "payment_confirmed"
    finally:
        store.close()


ORDER = json.dumps({"order_id": "o-1", "sku": "widget", "qty": 1})


def test_saga_run_waits_until_saga_send_from_another_shell(tmp_path: Path):
    db = tmp_path / "sagas.db"
    store = f"sqlite:///{db}"
    flow = str(ROOT / "flows" / "order_paid_later.yaml")
    runner = start_saga("run", flow, "--input", ORDER, "--store", store, "--json", cwd=tmp_path,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: waiting_at_payment(db), 30, what="the saga waiting at payment")
        sent = saga_cli("send", "PaymentConfirmed", "--key", "o-1", "--id", "psp-77", "--data",
                        '{"psp": "acme"}', "--store", store, cwd=tmp_path, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert "sent PaymentConfirmed key=o-1 (id psp-77)" in sent.stdout
        out, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "completed"
    payment = [e for e in result["history"] if e["step"] == "payment_confirmed"]
    assert payment[-1]["data"] == {"output": {"psp": "acme"}, "event_id": "psp-77"}
    again = saga_cli("send", "PaymentConfirmed", "--key", "o-1", "--id", "psp-77", "--store",
                     store, cwd=tmp_path, timeout=60)
    assert again.returncode == 0 and "ignored" in again.stdout


def test_kill_9_while_waiting_then_send_then_resume_completes(tmp_path: Path):
    db = tmp_path / "sagas.db"
    store = f"sqlite:///{db}"
    flow = str(ROOT / "flows" / "order_paid_later.yaml")
    runner = start_saga("run", flow, "--input", ORDER, "--store", store, cwd=tmp_path,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: waiting_at_payment(db), 30, what="the saga waiting at payment")
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
    sent = saga_cli("send", "PaymentConfirmed", "--key", "o-1", "--store", store, cwd=tmp_path,
                    timeout=60)
    assert sent.returncode == 0, sent.stderr
    resumed = saga_cli("resume", "--store", store, cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check = open_store(store)
    try:
        (header,) = check.list()
        assert header.status == "completed"
    finally:
        check.close()


@pytest.mark.parametrize(("args", "message"), [
    (["send", "Payment Confirmed", "--key", "o-1"], "error:"),
    (["send", "PaymentConfirmed", "--key", "o-1", "--data", "[1]"], "must be a JSON object"),
    (["send", "PaymentConfirmed", "--key", "o-1", "--data", "{nope"], "not valid JSON"),
    (["send", "PaymentConfirmed"], "Missing option '--key'"),
])
def test_saga_send_refuses_a_malformed_event_with_exit_2(tmp_path: Path, args, message):
    result = CliRunner().invoke(cli.main, [*args, "--store", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert message in result.output
