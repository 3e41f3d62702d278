"""`sagas.testing` for users and `saga test`: the harness, the invariants, broken services."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

from sagas.testing import (
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

ROOT = Path(__file__).resolve().parent.parent
ORDER_PATH = ROOT / "flows" / "order_inventory.yaml"
ORDER = '{"order_id":"o-1","sku":"widget","qty":2,"amount":500}'

# -- the README's user tests, as written there ------------------------------------------------
FLOW = load_flow(ORDER_PATH)


@pytest.mark.parametrize("saga_input, schedule", fault_sweep(FLOW))
def test_every_single_fault_and_recovery_pair(saga_input, schedule):
    run = run_schedule(FLOW, saga_input, schedule)
    check_invariants(run, reference=run_schedule(FLOW, saga_input))


@settings(max_examples=200, deadline=None)
@given(schedule=fault_schedules(FLOW), saga_input=inputs(FLOW))
def test_order_inventory_keeps_its_guarantees(schedule, saga_input):
    check_invariants(run_schedule(FLOW, saga_input, schedule))
# -----------------------------------------------------------------------------------------------


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


def saga_test(flow: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "test", str(flow), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def broken_flow(tmp_path: Path, replace: str, by: str) -> Path:
    text = ORDER_PATH.read_text()
    assert replace in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(replace, by))
    return path


@pytest.mark.parametrize("replace, by", [
    ("flows.shop:Payment", "tests.broken_services:NonIdempotentRefund"),
    ("flows.shop:Inventory", "tests.broken_services:UndoesWhatNeverHappened"),
    ("flows.shop:Inventory", "tests.broken_services:LosesEffectOnRedelivery"),
], ids=["non_idempotent_compensation", "undoes_what_never_happened",
        "loses_effect_on_redelivery"])
def test_saga_test_catches_a_broken_service_with_a_small_counterexample(tmp_path, replace, by):
    proc = saga_test(broken_flow(tmp_path, replace, by), "--input", ORDER, "--examples", "300")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "counterexample (" in out and "history:" in out and "broken:" in out
    faults = int(out.split("counterexample (")[1].split(" fault")[0])
    assert 1 <= faults <= 3, out


def test_saga_test_on_the_correct_services_passes_and_reports_coverage():
    proc = saga_test(ORDER_PATH, "--input", ORDER, "--examples", "600")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = int(proc.stdout.split(": ")[1].split(" runs with faults")[0])
    assert runs >= 300  # the single faults and the recovery pairs of the one route given
    assert "semantic atomicity" in proc.stdout and "inventory.stock_is_never_negative" in \
        proc.stdout and "effects as without faults" in proc.stdout
    covered = proc.stdout.split("single-fault points covered: ")[1].split()
    assert covered[0] == covered[2] and int(covered[0]) >= 50, proc.stdout


def test_saga_test_same_seed_same_run(tmp_path):
    path = broken_flow(tmp_path, "flows.shop:Payment", "tests.broken_services:NonIdempotentRefund")
    first = saga_test(path, "--input", ORDER, "--examples", "200", "--seed", "7")
    again = saga_test(path, "--input", ORDER, "--examples", "200", "--seed", "7")
    assert first.returncode == again.returncode == 1
    elapsed = re.compile(r"\(\d+\.\ds\)")  # the header's wall-clock time
    assert elapsed.sub("", first.stdout) == elapsed.sub("", again.stdout)


def test_saga_test_invalid_flow_and_input_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("saga: x\n")
    assert saga_test(bad).returncode == 2
    proc = saga_test(ORDER_PATH, "--input", '{"qty": -1}')
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


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
