"""`sagas.testing` as a user's tests use it: the README's examples as written there, the
deterministic harness (fault kinds, crash and resume, determinism, plans, batches), the pytest
plugin, the core driver, and what importing the package costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

import sagas.testing
from sagas import InputError, parse_flow
from sagas.testing import (
    CoreDriver,
    InvariantViolation,
    Schedule,
    batches,
    check_batch,
    check_invariants,
    fault_schedules,
    fault_sweep,
    inputs,
    load_flow,
    run_batch,
    run_schedule,
)
from tests.support import make_flow

ROOT = Path(__file__).resolve().parent.parent
ORDER_PATH = ROOT / "flows" / "order_inventory.yaml"


@pytest.fixture(autouse=True)
def _in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's examples name flows relative to the checkout, where a user runs them."""
    monkeypatch.chdir(ROOT)


# -- the README's user tests, as written there -----------------------------------------------------
FLOW = load_flow(ORDER_PATH)


@pytest.mark.parametrize("saga_input, schedule", fault_sweep(FLOW))
def test_every_single_fault_and_recovery_pair(saga_input, schedule):
    run = run_schedule(FLOW, saga_input, schedule)
    check_invariants(run, reference=run_schedule(FLOW, saga_input))


@settings(max_examples=200, deadline=None)
@given(schedule=fault_schedules(FLOW), saga_input=inputs(FLOW))
def test_order_inventory_keeps_its_guarantees(schedule, saga_input):
    check_invariants(run_schedule(FLOW, saga_input, schedule))
# --------------------------------------------------------------------------------------------------


# -- the README's core-driver example, as written there --------------------------------------------
def test_a_late_success_ends_the_step_while_its_retry_is_in_flight():
    saga = CoreDriver("flows/order_inventory.yaml",
                      {"order_id": "o-1", "sku": "widget", "qty": 2, "amount": 500})
    saga.reply("reserve_inventory")
    saga.fire("timeout", "charge_payment")   # attempt 1 times out ...
    saga.fire("backoff", "charge_payment")   # ... attempt 2 is sent after the backoff ...
    saga.reply("charge_payment", attempt=1)  # ... and attempt 1's success comes late: it counts
    assert saga.types()[-2:] == ["step.succeeded:charge_payment", "step.started:create_shipment"]
    assert [e.type for e in saga.reply("charge_payment", attempt=2)] == ["reply.ignored"]
# --------------------------------------------------------------------------------------------------


# -- the harness -----------------------------------------------------------------------------------
def order(qty: int = 2) -> dict:
    return {"order_id": "o-1", "sku": "widget", "qty": qty, "amount": 500}


def test_harness_fault_kinds_shape_the_history():
    late = run_schedule(FLOW, order(), Schedule({("action", "charge_payment", 1): "late"}))
    types = [(e.type, e.step, e.attempt) for e in late.events if e.step == "charge_payment"]
    # the late reply of attempt 1 arrives during the backoff after its timeout and ends the step
    assert types == [("step.started", "charge_payment", 1), ("step.timed_out", "charge_payment", 1),
                     ("step.retrying", "charge_payment", 1),
                     ("step.succeeded", "charge_payment", 1)]
    assert late.status == "completed"
    lost = run_schedule(FLOW, order(), Schedule({("action", "reserve_inventory", n): "timeout"
                                                 for n in (1, 2, 3)}))
    assert lost.status == "compensated" and lost.compensated() == ["reserve_inventory"]
    assert ("action", "reserve_inventory", 1) not in lost.invocations  # never ran
    twice = run_schedule(FLOW, order(), Schedule({("action", "reserve_inventory", 1):
                                                  "redeliver"}))
    assert twice.invocations.count(("action", "reserve_inventory", 1)) == 2
    assert twice.status == "completed"
    assert twice.snapshots_after["inventory"]["stock"]["widget"] == 1_000_000 - 2  # once only


def test_harness_crash_and_resume_between_events():
    for n in range(1, 12):
        run = run_schedule(FLOW, order(), Schedule({("action", "create_shipment", 1): "reject"},
                                                   crash_after=n))
        assert run.status == "compensated", n
        assert run.compensated() == ["charge_payment", "reserve_inventory"], n
        check_invariants(run)


def test_harness_is_deterministic():
    schedule = Schedule({("action", "charge_payment", 1): "error",
                         ("action", "charge_payment", 2): "late"}, crash_after=4)
    first = run_schedule(FLOW, order(), schedule, seed=3)
    again = run_schedule(FLOW, order(), schedule, seed=3)
    assert first.events == again.events


def test_single_fault_recovery_matches_saga_plan():
    run = run_schedule(FLOW, order(), Schedule({("action", "create_shipment", 1): "reject"}))
    checked = check_invariants(run)
    assert "recovery equals saga plan" in checked.invariants
    assert "atomicity of notifications (no snapshot())" in checked.not_checked


def test_the_pytest_plugin_provides_saga_env(saga_env):
    saga_env.reject("charge_payment")
    result = saga_env.run(str(ORDER_PATH), order())
    assert result.status == "compensated"


ORDERS = [order(qty) for qty in (1, 3, 7)] + [order(2_000_000)]


@settings(max_examples=100, deadline=None)
@given(batch=batches(FLOW, examples=ORDERS))
def test_business_invariants_hold_over_concurrent_sagas(batch):
    sagas, crash_after = batch
    check_batch(run_batch(FLOW, sagas, crash_after=crash_after))


def test_check_batch_catches_a_broken_service_among_concurrent_sagas():
    from tests.broken_services import LosesEffectOnRedelivery

    sagas = [(order(), Schedule({("action", "reserve_inventory", 1): "redeliver"})),
             (order(3), Schedule())]
    batch = run_batch(FLOW, sagas, services={"inventory": LosesEffectOnRedelivery})
    with pytest.raises(InvariantViolation, match="stock_and_reservations_add_up"):
        check_batch(batch)


# -- the core driver -------------------------------------------------------------------------------
def test_the_core_driver_moves_time_only_when_told():
    saga = CoreDriver(make_flow("a", attempts=2, backoff="30s", timeout="5s"), start=50.0)
    assert saga.now() == 50.0 and saga.events[0].at == 50.0
    saga.advance(2)
    saga.reply("a", outcome="error")
    assert saga.events[-1].at == 52.0
    assert saga.timers[-1].kind == "backoff" and saga.timers[-1].at == 82.0
    assert saga.now() == 52.0  # the backoff is only armed
    saga.fire("backoff", "a")
    assert saga.now() == 82.0 and saga.sent[-1].attempt == 2
    saga.advance_to(90.0)
    with pytest.raises(ValueError, match="back"):
        saga.advance_to(89.0)
    with pytest.raises(ValueError):
        saga.advance(-1)


def test_a_restart_sends_the_attempt_in_flight_again_or_times_it_out_past_its_time():
    saga = CoreDriver(make_flow("a", "b", attempts=2, timeout="5s"))
    saga.reply("a")
    first = saga.sent[-1]
    assert saga.restart() == []  # within its time-out: the same attempt again, same key
    again = saga.sent[-1]
    assert again is not first and (again.step, again.attempt, again.key) == \
        (first.step, first.attempt, first.key)
    saga.advance(10)
    assert [e.type for e in saga.restart()] == ["step.timed_out", "step.retrying"]
    saga.fire("backoff", "b")
    saga.reply("b")
    assert saga.status == "completed"


def test_a_wait_takes_only_the_event_it_waits_for():
    saga = CoreDriver(parse_flow(
        "saga: paid\nservices: {svc: tests.support:Scripted}\nsteps:\n"
        "  - {name: pay, wait_for: {event: Paid, key: $.input.order}, timeout: 1h}\n"
        "  - {name: ship, service: svc, action: do, effects: none}\n"), {"order": "o-1"})
    assert [(a.step, a.event, a.key) for a in saga.awaits] == [("pay", "Paid", "o-1")]
    assert saga.send_event("Paid", "o-2") == []
    assert saga.send_event("Shipped", "o-1") == []
    taken = saga.send_event("Paid", "o-1", {"psp": "acme"}, event_id="psp-1")
    assert taken[0].type == "step.succeeded"
    assert taken[0].data == {"output": {"psp": "acme"}, "event_id": "psp-1"}
    assert saga.sent[-1].step == "ship"


def test_a_cancel_and_a_retry_go_to_the_core_as_the_commands_send_them():
    saga = CoreDriver(make_flow("a", "b"))
    saga.reply("a")
    assert saga.cancel("ops")[0].data == {"requested_by": "ops"}
    assert saga.status == "compensating"
    saga.reply("b", phase="compensation")
    saga.reply("a", phase="compensation", outcome="error", error="the bank is down")
    assert (saga.status, saga.reason) == ("failed", "compensation_failed")
    assert saga.of("compensation.failed", "a")[0].data["error"] == "the bank is down"
    assert saga.retry("ops")[0].type == "saga.retried"
    saga.reply("a", phase="compensation")
    assert saga.status == "compensated"


def test_the_core_driver_refuses_what_never_happened():
    saga = CoreDriver(make_flow("a", "b"))
    with pytest.raises(LookupError, match="attempt 2 of action 'a' was never sent"):
        saga.reply("a", attempt=2)
    with pytest.raises(LookupError, match="an attempt of action 'b' was never sent"):
        saga.reply("b")
    with pytest.raises(LookupError, match="no backoff timer of action 'a' was set"):
        saga.fire("backoff", "a")
    with pytest.raises(ValueError, match="outcome"):
        saga.reply("a", outcome="lost")
    with pytest.raises(InputError):
        CoreDriver("flows/order_inventory.yaml", {"qty": -1})
    with pytest.raises(ValueError, match="draw"):
        CoreDriver(make_flow("a"), draw=1.0)


# -- the package -----------------------------------------------------------------------------------
def test_public_exports_of_sagas_testing_are_pinned_and_resolve():
    assert sorted(sagas.testing.__all__) == sorted([
        "FAULTS", "PERSISTENT_FAULTS", "BatchRun", "Checked", "CoreDriver", "EventLog", "Fault",
        "FaultPoint", "Faults", "FlowTestReport", "HandlerHung", "HarnessRun",
        "InvariantViolation", "Route", "SagaTestEnvironment", "Schedule", "VirtualClock",
        "batches", "check_batch", "check_invariants", "explore_routes", "fault_schedules",
        "fault_sweep", "inputs", "invariant", "load_flow", "make_services",
        "private_hypothesis_home", "run_batch", "run_schedule", "single_faults", "test_flow"])
    for name in sagas.testing.__all__:
        assert getattr(sagas.testing, name) is not None, name


def test_the_core_driver_imports_no_hypothesis():
    code = ("import sys; from sagas.testing import CoreDriver; "
            "saga = CoreDriver('flows/order_inventory.yaml', "
            "{'order_id': 'o', 'sku': 'widget', 'qty': 1, 'amount': 1}); "
            "saga.reply('reserve_inventory'); "
            "assert 'hypothesis' not in sys.modules, 'hypothesis was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
