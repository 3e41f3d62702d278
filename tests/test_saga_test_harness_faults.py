"""What `saga test` runs and reports: persistent faults, lost replies, hung handlers, several
failures, coverage and the budget, counterexample reports, and nothing left behind; the shipped
order flow's sound services pass and each broken one is caught with a small counterexample; an
invalid flow or input exits 2."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings

from sagas.testing import (
    InvariantViolation,
    Schedule,
    check_invariants,
    explore_routes,
    fault_schedules,
    fault_sweep,
    inputs,
    load_flow,
    run_schedule,
    single_faults,
    test_flow,
)
from tests.planted_bugs import PLANTED, ROOT, planted, saga

pytestmark = pytest.mark.slow  # saga test in subprocesses, ~1 s each: CI runs these


TRANSFER = {"from": "ann", "to": "bob", "amount": 700}


# -- persistent faults ----------------------------------------------------------------------------

def test_a_persistent_fault_strikes_every_attempt_however_many_and_counts_once():
    flow = load_flow(PLANTED / "transfer.yaml")  # the debit has 4 attempts
    schedule = Schedule(persistent={("action", "debit"): "error"})
    assert schedule.size == 1
    run = run_schedule(flow, TRANSFER, schedule)
    failed = [e.attempt for e in run.events if e.type == "step.failed" and e.step == "debit"]
    assert failed == [1, 2, 3, 4]
    assert run.status == "compensated"


def test_a_lost_reply_means_the_effect_happened_and_the_attempt_timed_out():
    flow = load_flow(PLANTED / "transfer.yaml")
    run = run_schedule(flow, TRANSFER, Schedule(persistent={("action", "debit"): "lost"}))
    timed_out = [e.attempt for e in run.events if e.type == "step.timed_out"]
    assert timed_out == [1, 2, 3, 4]  # the inbox answers 2-4 from the first run; lost too
    started = [e for e in run.events if e.type == "compensation.started"]
    assert started and started[0].data["payload"]["amount"] == 700
    assert run.status == "compensated"
    assert run.snapshots_after == run.snapshots_before  # the sound refund undid it anyway


def test_an_undo_that_trusts_a_lost_reply_is_caught_with_one_fault(tmp_path):
    flow = load_flow(planted(tmp_path, "transfer", source="AccountsTrustReply"))
    run = run_schedule(flow, TRANSFER, Schedule(persistent={("action", "debit"): "lost"}))
    with pytest.raises(InvariantViolation, match="semantic atomicity"):
        check_invariants(run)


def test_a_persistent_fault_holds_across_a_crash_and_resume():
    flow = load_flow(PLANTED / "transfer.yaml")
    for crash_after in range(2, 9):
        run = run_schedule(flow, TRANSFER, Schedule(
            persistent={("action", "debit"): "error"}, crash_after=crash_after))
        assert run.status == "compensated", crash_after
        assert not any(e.type == "step.succeeded" and e.step == "debit" for e in run.events)
        check_invariants(run)


def test_a_persistent_fault_lifts_at_saga_retry():
    """A parked compensation under a persistent fault: the harness retries once the trouble is
    over, as an operator would, and the saga then ends compensated."""
    flow = load_flow(PLANTED / "order_pivot.yaml")
    order = {"order_id": "o", "item": "A-100", "qty": 2, "buyer": "ann", "amount": 5}
    run = run_schedule(flow, order, Schedule({("action", "ship", 1): "reject"},
                                             persistent={("compensation", "debit_buyer"):
                                                         "error"}))
    assert run.first_status == "failed" and run.first_reason == "compensation_failed"
    assert run.retried and run.status == "compensated"
    assert run.snapshots_after == run.snapshots_before
    check_invariants(run)


def test_under_retry_forever_a_persistent_fault_lasts_the_steps_attempts(tmp_path):
    text = (PLANTED / "transfer.yaml").read_text().replace(
        "    compensation: refund\n",
        "    compensation: refund\n    on_compensation_failure: retry_forever\n")
    path = tmp_path / "forever.yaml"
    path.write_text(text)
    flow = load_flow(path)
    run = run_schedule(flow, {**TRANSFER, "to": "frozen"},
                       Schedule(persistent={("compensation", "debit"): "error"}))
    failed = [e.attempt for e in run.events if e.type == "compensation.failed"]
    assert failed == [1, 2, 3, 4]  # the step's retry.attempts, then it lifts
    assert run.status == "compensated"
    check_invariants(run)


def test_fault_schedules_draw_persistent_faults_and_never_an_empty_schedule():
    flow = load_flow(PLANTED / "transfer.yaml")
    seen: list[Schedule] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(schedule=fault_schedules(flow))
    def draw(schedule: Schedule) -> None:
        seen.append(schedule)

    draw()
    assert all(s.size >= 1 for s in seen)
    assert any(s.persistent for s in seen)
    assert not any(k[2] > 4 for s in seen for k in s.faults)


# -- the sweep ------------------------------------------------------------------------------------

def test_the_single_fault_sweep_covers_every_point_on_the_route():
    flow = load_flow(PLANTED / "transfer.yaml")
    baseline = run_schedule(flow, TRANSFER)
    points = single_faults(flow, baseline)
    described = {p.describe() for p in points}
    for kind in ("error", "reject", "timeout", "late", "duplicate", "redeliver", "lost"):
        assert f"action debit attempt 1: {kind}" in described
        assert f"action debit a retry: {kind}" in described
        assert f"action credit attempt 1: {kind}" in described
    for kind in ("error", "timeout", "lost"):
        assert f"action debit every attempt: {kind}" in described
    crashes = [p for p in points if p.slot == "crash"]
    assert len(crashes) == len(baseline.events) - 1
    assert len({p.schedule().key for p in points}) == len(points)  # no schedule twice


def test_fault_sweep_parametrizes_a_pytest_test_and_catches_what_the_cli_does(tmp_path):
    sound = load_flow(PLANTED / "transfer.yaml")
    sweep = fault_sweep(sound)
    assert len(sweep) > 50
    for saga_input, schedule in sweep:
        check_invariants(run_schedule(sound, saga_input, schedule))
    buggy = load_flow(planted(tmp_path, "transfer", source="AccountsRefundTwice"))
    broken = 0
    for saga_input, schedule in fault_sweep(buggy):
        try:
            check_invariants(run_schedule(buggy, saga_input, schedule))
        except InvariantViolation:
            broken += 1
    assert broken > 0


def test_routes_are_found_through_nested_objects_and_array_items():
    routes = explore_routes(load_flow(PLANTED / "order_lines.yaml"))
    described = {r.describe() for r in routes}
    assert "completed" in described  # an item the stock holds, found in its state
    assert "compensated after hold_lines rejected" in described
    assert "compensated after debit rejected" in described  # the frozen account
    happy = next(r for r in routes if r.describe() == "completed")
    assert happy.input["lines"][0]["item"] in ("A-100", "B-200")


def test_the_inputs_strategy_reaches_the_routes(tmp_path):
    flow = load_flow(ROOT / "flows" / "order_inventory.yaml")
    routes = explore_routes(flow)
    assert any(r.baseline.status == "completed" for r in routes)
    statuses: set[str] = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(saga_input=inputs(flow))
    def draw(saga_input: dict) -> None:
        statuses.add(run_schedule(flow, saga_input).status)

    draw()
    assert statuses >= {"completed", "compensated"}


# -- hangs, several failures, the budget ----------------------------------------------------------

def test_a_handler_that_blocks_is_a_counterexample_naming_it(tmp_path):
    path = planted(tmp_path, "order_pivot", stock="BlocksForever")
    proc = saga("test", str(path), "--handler-timeout", "0.5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stock.take did not return within 0.5s" in proc.stdout
    run = run_schedule(load_flow(path), {"order_id": "o", "item": "A-100", "qty": 1,
                                         "buyer": "a", "amount": 1}, handler_timeout=0.3)
    assert run.hung is not None and "stock.take" in run.hung
    with pytest.raises(InvariantViolation, match="handlers return"):
        check_invariants(run)


@pytest.mark.slow
def test_service_code_that_fails_or_hangs_outside_a_handler_is_one_line_never_exit_70(tmp_path):
    broken = saga("test", str(planted(tmp_path, "order_pivot", ledger="LedgerWithoutDatabase")))
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert broken.stderr.strip() == ("error: service 'ledger' (tests.planted_bugs:"
                                     "LedgerWithoutDatabase) could not be created: "
                                     "RuntimeError: no database configured")
    for cls, where in (("LedgerConnectsForever", "creating tests.planted_bugs:LedgerConnects"),
                       ("LedgerSnapshotBlocks", "LedgerSnapshotBlocks.snapshot()")):
        proc = saga("test", str(planted(tmp_path, "order_pivot", ledger=cls)),
                    "--handler-timeout", "0.5")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "broken: handlers return: " in proc.stdout and where in proc.stdout
        assert "internal error" not in proc.stderr
    exits = saga("test", str(planted(tmp_path, "order_pivot", ledger="LedgerExits")))
    assert exits.returncode in (0, 1) and "internal error" not in exits.stderr
    assert "runs with faults" in exits.stdout


def test_several_distinct_failures_give_the_smallest_counterexample_and_exit_1(tmp_path):
    path = planted(tmp_path, "order_pivot", packaging="StockTakesTwice",
                     ledger="LedgerBooksTwice", accounts="AccountsRefundTwice")
    proc = saga("test", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    assert "counterexample (1 fault point" in proc.stdout


def test_the_random_phase_alone_stops_at_its_first_failure_and_shrinks_it(tmp_path, monkeypatch):
    """With no sweep (hypothesis only), several bugs still give one small counterexample."""
    from sagas.testing import _runner

    monkeypatch.setattr(_runner, "single_faults", lambda flow, baseline: [])
    monkeypatch.setattr(_runner, "recovery_pairs", lambda flow, baseline: [])
    path = planted(tmp_path, "order_pivot", packaging="StockTakesTwice",
                     ledger="LedgerBooksTwice", accounts="AccountsRefundTwice")
    report = test_flow(load_flow(path), random_examples=3000)
    assert report.singles_total == 0 and report.random > 0
    assert not report.ok and report.counterexample is not None
    assert report.counterexample.schedule.size <= 3


def test_a_budget_too_small_for_the_single_faults_says_so():
    proc = saga("test", "flows/money_transfer.yaml", "--examples", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "single-fault points covered: 20 of " in proc.stdout
    assert "incomplete:" in proc.stdout and "ok: every invariant held" not in proc.stdout
    assert "warning: only 20 of " in proc.stderr


# -- reports --------------------------------------------------------------------------------------

def test_a_counterexample_shows_faults_where_they_struck_and_branch_names(tmp_path):
    path = planted(tmp_path, "trip", rooms="BookingsCancelTwice")
    proc = saga("test", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.match(r"trip v1: \d+ runs with faults, \d+ routes", out)
    assert "single-fault points covered: " in out and "invariants checked: " in out
    assert "!! " in out  # the fault, in the history, where it struck
    assert re.search(r"branch\.\w+ +book \[book\.(flight|room|car)\]", out), out
    assert "services (snapshot() before -> after):" in out and "rooms:" in out
    assert "DESIGN" not in out and "§" not in out


def test_saga_test_writes_nothing_to_the_working_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    flow = planted(tmp_path, "choose_route")
    proc = saga("test", str(flow), "--seed", "3", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(work.iterdir()) == []


def test_the_same_seed_gives_the_same_report(tmp_path):
    path = planted(tmp_path, "transfer", source="AccountsRefundTwice")
    first = saga("test", str(path), "--seed", "4")
    again = saga("test", str(path), "--seed", "4")
    assert first.returncode == again.returncode == 1
    strip = re.compile(r"\(\d+\.\ds\)")
    assert strip.sub("", first.stdout) == strip.sub("", again.stdout)


def test_replay_db_keeps_counterexamples_and_tries_them_first(tmp_path):
    path = planted(tmp_path, "transfer", source="AccountsTrustReply")
    db = tmp_path / "kept"
    first = saga("test", str(path), "--replay-db", str(db))
    assert first.returncode == 1, first.stdout + first.stderr
    kept = (db / "transfer.jsonl").read_text().splitlines()
    assert len(kept) == 1 and json.loads(kept[0])["persistent"] == [["action", "debit", "lost"]]
    again = saga("test", str(path), "--replay-db", str(db))
    assert again.returncode == 1 and "kept counterexamples replayed: 1" in again.stdout
    assert "runs with faults" in again.stdout and again.stdout.count("counterexample (1 ") == 1
    assert len((db / "transfer.jsonl").read_text().splitlines()) == 1  # kept once


def test_the_report_as_data():
    report = test_flow(load_flow(PLANTED / "transfer.yaml"), examples=400)
    assert report.ok and report.complete
    assert report.singles_tried == report.singles_total > 0
    assert report.recovery_pairs > 0 and report.examples <= 400
    assert json.dumps([r.input for r in report.routes])


# -- the shipped order flow: broken services caught, sound ones pass -------------------------------
ORDER_PATH = ROOT / "flows" / "order_inventory.yaml"
ORDER = '{"order_id":"o-1","sku":"widget","qty":2,"amount":500}'


def saga_test(flow: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return saga("test", str(flow), *args)


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


# -- flows at the edges ---------------------------------------------------------------------

def _flow_file(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow  # the 4,000-attempt step takes a while under every persistent fault
def test_flows_at_the_edges_end_in_a_report_never_exit_70(tmp_path):
    services = "services: {stock: tests.planted_bugs:Stock}\n"
    take = "{name: hold, service: stock, action: take, compensation: put_back, " \
           "input: {item: A-100, qty: 1}}"
    cases = {
        # no step calls a service: only the runtime can crash
        "pause_only": "saga: pause_only\n" + services +
                      "steps: [{name: wait_a_bit, delay: 1s}]\n",
        # an input schema no input can satisfy (a saga input is a JSON object)
        "text_input": "saga: text_input\n" + services + "input: {type: string}\n"
                      f"steps: [{take}]\n",
        # a step that may try 4,000 times, under a persistent fault
        "many_tries": "saga: many_tries\n" + services +
                      f"steps: [{take[:-1]}, retry: {{attempts: 4000, backoff: 1ms}}}}]\n",
    }
    for name, text in cases.items():
        proc = saga("test", str(_flow_file(tmp_path, name, text)))
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        assert "internal error" not in proc.stderr, name
    assert "incomplete: no input valid" in saga(
        "test", str(tmp_path / "text_input.yaml")).stdout


def test_effects_are_compared_as_what_they_hold_not_in_which_order():
    from sagas.testing._invariants import canonical

    assert canonical({"legs": ["b", "a"]}) == canonical({"legs": ["a", "b"]})
    assert canonical({"legs": ["a", "a"]}) != canonical({"legs": ["a"]})


def test_a_kept_counterexample_naming_a_step_since_renamed_is_harmless(tmp_path):
    path = planted(tmp_path, "transfer", source="AccountsTrustReply")
    db = tmp_path / "kept"
    assert saga("test", str(path), "--replay-db", str(db)).returncode == 1
    path.write_text(path.read_text().replace("name: debit", "name: withdraw"))
    again = saga("test", str(path), "--replay-db", str(db))
    assert again.returncode == 1 and "internal error" not in again.stderr, again.stderr
