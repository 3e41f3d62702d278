"""What the ``saga`` commands do, called as the library functions of ``sagas.commands`` (the
CLI only parses, prints and maps outcomes to exit codes: ``tests/test_cli_*`` check that)."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli import exit_code_of
from sagas import commands
from sagas.commands.interrupts import stop_reporting
from sagas.errors import FlowError, FlowErrors, InputError, StoreMissing, UnknownSaga

ROOT = Path(__file__).resolve().parent.parent
ORDER = str(ROOT / "flows" / "order_inventory.yaml")
TRIP = str(ROOT / "flows" / "trip_booking.yaml")  # no trigger
GOOD = {"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25}
OUT_OF_STOCK = {**GOOD, "qty": 10**9}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/sagas.db"


@contextlib.contextmanager
def no_display(label: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda ended: None


def prepare(saga_input: object = GOOD, **options: object) -> commands.RunRequest:
    arguments: dict[str, object] = {"input_json": json.dumps(saga_input), "input_file": None,
                                    "saga_id": None, "fail": (), "count": None}
    arguments.update(options)
    return commands.prepare_run(ORDER, **arguments)  # type: ignore[arg-type]


# -- what an error says ---------------------------------------------------------------------------
def test_error_lines_give_every_flow_problem_at_its_place_and_one_line_for_the_rest():
    problems = FlowErrors([FlowError("b", source="f.yaml", line=3, column=2),
                           FlowError("a", source="f.yaml", line=1, column=5)])
    assert commands.error_lines(problems) == ["f.yaml:1:5: a", "f.yaml:3:2: b"]
    assert commands.error_lines(InputError("bad\n  input")) == ["error: bad"]
    assert commands.error_lines(InputError("many   spaced\twords")) == ["error: many spaced words"]
    assert commands.error_lines(KeyError()) == [
        "internal error: KeyError: KeyError (run with --debug for the traceback)"]


def test_usage_problems_name_their_option_and_are_input_errors():
    with pytest.raises(commands.UsageProblem) as refused:
        prepare(fail=("nope",))
    assert refused.value.option == "--fail" and "no step 'nope'" in refused.value.message
    with pytest.raises(commands.UsageProblem) as neither:
        prepare(input_json=None)
    assert neither.value.option is None
    with pytest.raises(commands.UsageProblem, match="--id names one saga"):
        prepare(saga_id="one", count=2)
    assert isinstance(refused.value, InputError)


# -- the exit-code table --------------------------------------------------------------------------
@pytest.mark.parametrize(("outcome", "code"), [
    ("ok", 0), ("completed", 0), ("compensated", 1), ("failed", 3), ("invalid", 2),
    ("violations", 1), ("counterexample", 1), ("running", 3),
    (InputError("x"), 2), (UnknownSaga("x"), 4), (StoreMissing("x"), 5),
    (commands.UsageProblem("x"), 2), (KeyboardInterrupt(), 130), (BrokenPipeError(), 141),
    (commands.Stopped(signal.SIGTERM), 128 + signal.SIGTERM), (RuntimeError(), 70),
])
def test_every_outcome_has_its_exit_code_in_one_table(outcome, code):
    assert exit_code_of(outcome) == code


# -- running sagas --------------------------------------------------------------------------------
def test_a_batch_from_a_json_lines_file_names_the_input_that_is_invalid(tmp_path):
    lines = tmp_path / "inputs.jsonl"
    lines.write_text(json.dumps(GOOD) + "\n" + json.dumps({"order_id": "o-2"}) + "\n")
    with pytest.raises(InputError, match=f"input 2 of {lines}"):
        prepare(input_json=None, input_file=str(lines))
    lines.write_text(json.dumps(GOOD) + "\n" + json.dumps(OUT_OF_STOCK) + "\n")
    request = prepare(input_json=None, input_file=str(lines))
    assert request.total == 2 and request.inputs[1] == OUT_OF_STOCK


def test_run_one_returns_how_the_saga_ended_and_list_show_and_audit_read_it(store_url):
    shown: list[commands.SingleRun] = []
    single = commands.run_one(store_url, prepare(saga_id="order-1"), on_end=shown.append)
    assert (single.result.saga_id, single.result.status, single.note) == \
        ("order-1", "completed", None)
    assert shown == [single]  # handed over before the runtime closed
    rejected = commands.run_one(store_url, prepare(OUT_OF_STOCK, saga_id="order-2"))
    assert rejected.result.status == "compensated"
    rows = commands.list_sagas(store_url)
    assert [(r["saga_id"], r["status"]) for r in rows] == \
        [("order-2", "compensated"), ("order-1", "completed")]
    assert commands.list_sagas(store_url, status="completed", limit=1)[0]["saga_id"] == "order-1"
    assert commands.show_saga(store_url, "order-2").history[-1].type == "saga.compensated"
    report = commands.audit_store_at(store_url, stuck_after=3600.0)
    assert (report.status, report.to_json(), commands.render_audit(report)) == \
        ("ok", [], "ok: no violations")


def test_run_many_returns_the_batch_summary_and_its_status(store_url):
    summary = commands.run_many(store_url, prepare(count=3), 2, display=no_display)
    assert (summary["count"], summary["completed"], summary["failed"]) == (3, 3, 0)
    assert commands.batch_status(summary) == "ok"
    assert commands.batch_status({**summary, "failed": 1}) == "failed"


def test_a_step_made_to_fail_is_compensated_and_retry_and_cancel_leave_an_ended_saga(store_url):
    failed = commands.run_one(store_url, prepare(saga_id="o", fail=("charge_payment",)))
    assert failed.result.status == "compensated"
    assert commands.retry_saga(store_url, "o").status == "compensated"
    assert commands.cancel_saga(store_url, "o").status == "compensated"
    with pytest.raises(UnknownSaga):
        commands.cancel_saga(store_url, "nobody")


def test_commands_that_only_read_create_no_store(tmp_path):
    missing = f"sqlite:///{tmp_path}/none.db"
    for read in (lambda: commands.list_sagas(missing), lambda: commands.show_saga(missing, "x"),
                 lambda: commands.retry_saga(missing, "x"),
                 lambda: commands.audit_store_at(missing, stuck_after=1.0)):
        with pytest.raises(StoreMissing):
            read()
    assert not (tmp_path / "none.db").exists()


def test_resume_says_how_many_sagas_it_finished(store_url):
    assert commands.resume_orphans(store_url) == \
        {"resumed": 0, "completed": 0, "compensated": 0, "failed": 0}
    assert commands.render_resumed({"resumed": 2, "completed": 1, "compensated": 1,
                                    "failed": 0}) == \
        "resumed 2 sagas: 1 completed, 1 compensated, 0 failed"


def test_a_stop_carries_what_was_left_in_flight():
    with pytest.raises(commands.Stopped) as stopped, \
            stop_reporting(lambda: "interrupted: 3 left"):
        raise commands.Stopped(signal.SIGINT)
    assert (stopped.value.report, stopped.value.signum) == ("interrupted: 3 left", signal.SIGINT)
    assert commands.Stopped(signal.SIGINT).report == "interrupted"


def test_serving_a_flow_without_a_trigger_is_refused():
    assert [f.name for f in commands.load_triggered_flows([ORDER])] == ["order_inventory"]
    with pytest.raises(InputError, match="has no trigger to serve"):
        commands.load_triggered_flows([ORDER, TRIP])


# -- external events ------------------------------------------------------------------------------
def test_an_event_sent_twice_with_one_id_is_recorded_once(store_url):
    first = commands.send_event(store_url, "Paid", "o-1", {"amount": 1}, event_id="e-1")
    again = commands.send_event(store_url, "Paid", "o-1", {"amount": 2}, event_id="e-1")
    assert (first.recorded, again.recorded) == (True, False)
    assert first.to_json() == {"event_id": "e-1", "event": "Paid", "key": "o-1",
                               "recorded": True, "position": first.event.position}
    assert commands.render_sent(first) == "sent Paid key=o-1 (id e-1)"
    assert commands.render_sent(again) == "already sent: Paid key=o-1 (id e-1); ignored"


def test_event_data_is_one_json_object_from_one_place(tmp_path):
    assert commands.event_data(None, None) == {}
    data_file = tmp_path / "data.json"
    data_file.write_text('{"a": 1}')
    assert commands.event_data(None, str(data_file)) == {"a": 1}
    with pytest.raises(commands.UsageProblem):
        commands.event_data("{}", str(data_file))
    with pytest.raises(InputError, match="must be a JSON object, got list"):
        commands.event_data("[1]", None)


# -- flows ----------------------------------------------------------------------------------------
def test_flow_checks_say_how_each_file_went_and_the_status_of_all(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("saga: Bad-Name\nsteps: []\n")
    checks = commands.FlowChecks([ORDER, str(broken)], strict=False, check_services=False)
    good, bad = list(checks)
    assert (good.flow is not None, good.summary) == (True, "ok: order_inventory v1 (4 steps)")
    assert bad.flow is None and bad.problems
    assert all(p.format().startswith(f"{broken}:") for p in bad.problems)
    assert checks.status == "invalid"
    only_good = commands.FlowChecks([ORDER], strict=False, check_services=False)
    assert [c.path for c in only_good] == [ORDER] and only_good.status == "ok"


def test_recovery_plans_of_one_step_or_of_all():
    one = commands.recovery_plans(ORDER, "charge_payment", "error")
    assert (one.to_json()["fail"], one.to_json()["kind"]) == ("charge_payment", "error")
    assert commands.render_plans(one).startswith("order_inventory v1: if charge_payment runs out")
    every = commands.recovery_plans(ORDER)
    assert set(every.to_json()) == {"flow", "version", "plans"} and every.step is None
    with pytest.raises(commands.UsageProblem) as refused:
        commands.recovery_plans(ORDER, "nope")
    assert refused.value.option == "--fail"


def test_draw_flow_gives_the_diagram_text():
    assert commands.draw_flow(ORDER, "mermaid").startswith("stateDiagram-v2")
    assert commands.draw_flow(ORDER, "dot").startswith("digraph")


# -- saga test ------------------------------------------------------------------------------------
def test_saga_test_reads_its_examples_and_warns_when_it_did_not_try_every_fault_point():
    flow, examples = commands.load_flow_and_examples(ORDER, [json.dumps(GOOD)])
    assert (flow.name, examples) == ("order_inventory", [GOOD])
    with pytest.raises(InputError):
        commands.load_flow_and_examples(ORDER, ['{"order_id": 1}'])
    partial = SimpleNamespace(ok=True, complete=False, routes=[1], singles_tried=3,
                              singles_total=9)
    assert commands.coverage_warning(partial, 5) == \
        "warning: only 3 of 9 single-fault points were tried within --examples 5"  # type: ignore[arg-type]
    nothing = SimpleNamespace(ok=True, complete=False, routes=[])
    assert "no input could be made" in commands.coverage_warning(nothing, None)  # type: ignore[arg-type,operator]
    done = SimpleNamespace(ok=False, complete=True)
    assert commands.coverage_warning(done, None) is None  # type: ignore[arg-type]
    assert commands.flow_test_status(done) == "counterexample"  # type: ignore[arg-type]
