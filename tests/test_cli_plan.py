"""`saga plan`: what recovery does when a step fails — the steps compensated, in which order, or
the end (``failed`` and why) — for one step and kind of failure (``--fail STEP --kind K``) or for
every step and kind; as text or as one JSON document, with one plan per route where recovery
depends on the branches taken before the step. Usage errors and an invalid flow (for ``saga
graph`` too) exit 2 with one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import main
from tests.support import one_clear_line, saga_cli

ROOT = Path(__file__).resolve().parent.parent
ORDER = str(ROOT / "flows" / "order_inventory.yaml")
INVALID_FLOW = Path(__file__).resolve().parent / "flows" / "invalid" / "duplicate_step_name.yaml"


def saga(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def plan_json(*args: str) -> dict:
    result = saga("plan", *args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)  # one JSON document, nothing else on stdout


def compensated(document: dict) -> list[str]:
    return [c["step"] for c in document["compensations"]]


def test_plan_of_a_step_after_a_choice_shows_each_route_that_recovers_differently() -> None:
    paid_later = str(ROOT / "flows" / "order_paid_later.yaml")
    text = saga("plan", paid_later, "--fail", "create_shipment")
    assert text.exit_code == 0, text.output
    assert "if create_shipment is rejected (after by_size: large)" in text.stdout
    assert "if create_shipment is rejected (after by_size: default)" in text.stdout
    large, default = text.stdout.split("(after by_size: default)")
    assert "insure_shipment (cancel)" in large and "insure_shipment" not in default
    document = plan_json(paid_later, "--fail", "create_shipment")
    assert document["route"] == [{"choice": "by_size", "branch": "large"}]
    every = plan_json(paid_later)["plans"]
    routes = {p["route"][0]["branch"]: [c["step"] for c in p["compensations"]] for p in every
              if p["fail"] == "create_shipment" and p["kind"] == "rejected"}
    assert routes == {"large": ["insure_shipment", "reserve_inventory"],
                      "default": ["reserve_inventory"]}
    table = saga("plan", paid_later)
    assert table.exit_code == 0 and "create_shipment" in table.stdout


def test_plan_rejected_payment_compensates_the_reservation_only() -> None:
    document = plan_json(ORDER, "--fail", "charge_payment")
    assert document == {
        "flow": "order_inventory", "version": 1, "fail": "charge_payment", "kind": "rejected",
        "route": [], "ran": ["reserve_inventory", "charge_payment"],
        "compensations": [{"step": "reserve_inventory", "compensation": "release"}],
        "status": "compensated", "reason": None,
    }
    assert plan_json(ORDER, "--fail", "charge_payment", "--kind", "rejected") == document

    text = saga("plan", ORDER, "--fail", "charge_payment")
    assert text.exit_code == 0, text.output
    numbered = re.findall(r"^\s*(\d+)\. (\w+)", text.stdout, re.MULTILINE)
    assert numbered == [("1", "reserve_inventory")]
    assert "compensated" in text.stdout
    assert "failed" not in text.stdout


def test_plan_payment_running_out_on_errors_compensates_it_then_the_reservation() -> None:
    document = plan_json(ORDER, "--fail", "charge_payment", "--kind", "error")
    assert document["kind"] == "error"
    assert document["compensations"] == [
        {"step": "charge_payment", "compensation": "refund"},
        {"step": "reserve_inventory", "compensation": "release"}]
    assert (document["status"], document["reason"]) == ("compensated", None)

    text = saga("plan", ORDER, "--fail", "charge_payment", "--kind", "error")
    assert text.exit_code == 0, text.output
    numbered = re.findall(r"^\s*(\d+)\. (\w+)", text.stdout, re.MULTILINE)
    assert numbered == [("1", "charge_payment"), ("2", "reserve_inventory")]


def test_plan_pivot_timing_out_ends_failed_pivot_unknown() -> None:
    document = plan_json(ORDER, "--fail", "create_shipment", "--kind", "timeout")
    assert document["ran"] == ["reserve_inventory", "charge_payment", "create_shipment"]
    assert document["compensations"] == []
    assert (document["status"], document["reason"]) == ("failed", "pivot_unknown")

    text = saga("plan", ORDER, "--fail", "create_shipment", "--kind", "timeout")
    assert text.exit_code == 0, text.output
    assert "failed" in text.stdout and "pivot_unknown" in text.stdout
    assert not re.search(r"^\s*\d+\. ", text.stdout, re.MULTILINE)


def test_plan_step_after_the_pivot_ends_failed_forward_recovery() -> None:
    for kind in ("rejected", "error", "timeout"):
        document = plan_json(ORDER, "--fail", "notify_customer", "--kind", kind)
        assert document["compensations"] == []
        assert (document["status"], document["reason"]) == ("failed", "forward_recovery")

    text = saga("plan", ORDER, "--fail", "notify_customer")
    assert text.exit_code == 0, text.output
    assert "failed" in text.stdout and "forward_recovery" in text.stdout
    assert not re.search(r"^\s*\d+\. ", text.stdout, re.MULTILINE)


def test_plan_rejected_pivot_is_rolled_back() -> None:
    document = plan_json(ORDER, "--fail", "create_shipment")
    assert compensated(document) == ["charge_payment", "reserve_inventory"]
    assert (document["status"], document["reason"]) == ("compensated", None)


def test_plan_without_fail_lists_every_step_and_kind() -> None:
    document = plan_json(ORDER)
    assert (document["flow"], document["version"]) == ("order_inventory", 1)
    keys = [(p["fail"], p["kind"]) for p in document["plans"]]
    steps = ["reserve_inventory", "charge_payment", "create_shipment", "notify_customer"]
    assert sorted(keys) == sorted((s, k) for s in steps for k in ("rejected", "error", "timeout"))
    table = saga("plan", ORDER)
    assert table.exit_code == 0, table.output
    for step in steps:
        assert step in table.stdout


def test_plan_json_in_a_real_process() -> None:
    done = saga_cli("plan", "flows/order_inventory.yaml", "--fail", "charge_payment", "--kind",
                    "error", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    document = json.loads(done.stdout)
    assert compensated(document) == ["charge_payment", "reserve_inventory"]


@pytest.mark.parametrize("args", [
    ["--fail", "no_such_step"],
    ["--fail", "charge_payment", "--kind", "explosion"],
])
def test_plan_usage_errors_exit_2(args: list[str]) -> None:
    result = saga("plan", ORDER, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert args[-1] in result.stderr


def test_plan_and_graph_of_an_invalid_flow_exit_2() -> None:
    for command in ("plan", "graph"):
        result = saga(command, str(INVALID_FLOW))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert one_clear_line(result.stderr).startswith(f"{INVALID_FLOW}:9:11: ")


# `saga plan --json` lists one plan per route when recovery depends on the branches taken
# before the failing step: for a step of a parallel branch too (it runs where its block runs).
ROUTED_BLOCK = """\
saga: routed_block
services: {svc: tests.support:Scripted}
steps:
  - name: pick
    choice:
      - name: big
        when: {path: $.input.n, ge: 10}
        steps: [{name: big_step, service: svc, action: do, compensation: undo}]
    default: [{name: small_step, service: svc, action: do, compensation: undo}]
  - name: par
    parallel:
      p: [{name: p1, service: svc, action: do, compensation: undo}]
      q: [{name: q1, service: svc, action: do, compensation: undo}]
"""


def test_plan_json_lists_every_route_for_a_branch_step(tmp_path: Path) -> None:
    path = tmp_path / "routed_block.yaml"
    path.write_text(ROUTED_BLOCK, encoding="utf-8")
    result = saga("plan", str(path), "--json")
    assert result.exit_code == 0, result.output
    entries = [(e["route"], [c["step"] for c in e["compensations"]])
               for e in json.loads(result.stdout)["plans"]
               if (e["fail"], e["kind"]) == ("p1", "rejected")]
    assert entries == [
        ([{"choice": "pick", "branch": "big"}], ["q1", "big_step"]),
        ([{"choice": "pick", "branch": "default"}], ["q1", "small_step"]),
    ]
