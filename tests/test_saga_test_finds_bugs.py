"""`saga test` finds every one-fault bug on its own: no example input, no business invariant.

Flows written from public saga examples (an order with a pivot, a money transfer, a trip booked
in parallel, an order routed by a choice) run on sound services, then with one planted bug each
(``tests/planted_bugs.py``). Every bug must be caught at every seed with at most three fault
points; every sound flow must pass.
"""

from __future__ import annotations

import re

import pytest

from sagas.testing import load_flow, test_flow
from tests.planted_bugs import ROOT, planted, saga

BUGS = [  # (flow, service, the class with the bug)
    ("order_pivot", "packaging", "StockTakesTwice"),  # step 3 of 6 does not dedupe
    ("order_pivot", "stock", "StockForgetsReserved"),  # an undo that forgets a field
    ("order_pivot", "ledger", "LedgerBooksTwice"),  # after the pivot: never compensated
    ("order_pivot", "accounts", "AccountsRefundTwice"),  # a compensation that is not idempotent
    ("transfer", "source", "AccountsRefundTwice"),  # the same, in a 2-step flow
    ("transfer", "source", "AccountsTrustReply"),  # trusts a reply lost on all 4 attempts
    ("trip", "rooms", "BookingsCancelTwice"),  # in a parallel branch
    ("choose_route", "bulk", "StockForgetsReserved"),  # only on one branch of a choice
    ("choose_route", "bulk", "StockTakesTwice"),
    ("pay_last", "accounts", "AccountsRefundTwice"),  # the last step's own undo, run twice
    ("undo_forever", "stock", "StockUndoFailsIfNothingHeld"),  # retry_forever never ends
    ("region", "bonded", "StockTakesTwice"),  # a branch taken only when two conditions hold
    ("order_loose", "stock", "StockTakesTwice"),  # required fields the schema does not describe
]
SOUND = ["order_pivot", "transfer", "trip", "choose_route", "pay_last", "undo_forever", "region",
         "order_loose"]


def fault_points(stdout: str) -> int:
    match = re.search(r"counterexample \((\d+) fault point", stdout)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("flow, service, bug", BUGS, ids=[f"{f}-{b}" for f, _, b in BUGS])
def test_the_cli_catches_each_planted_bug_without_an_input(tmp_path, flow, service, bug):
    proc = saga("test", str(planted(tmp_path, flow, **{service: bug})))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert fault_points(proc.stdout) <= 3
    assert "broken: " in proc.stdout and "history:" in proc.stdout


@pytest.mark.parametrize("seed", [0] + [pytest.param(n, marks=pytest.mark.slow)
                                         for n in range(1, 10)])
@pytest.mark.parametrize("flow, service, bug", BUGS, ids=[f"{f}-{b}" for f, _, b in BUGS])
def test_the_api_catches_each_planted_bug_at_every_seed(tmp_path, flow, service, bug, seed):
    report = test_flow(load_flow(planted(tmp_path, flow, **{service: bug})), seed=seed)
    assert not report.ok
    assert report.counterexample is not None and report.counterexample.schedule.size <= 3


@pytest.mark.slow
@pytest.mark.parametrize("flow", SOUND)
def test_sound_flows_pass(tmp_path, flow):
    proc = saga("test", str(planted(tmp_path, flow)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: every invariant held" in proc.stdout
    covered = re.search(r"single-fault points covered: (\d+) of (\d+)", proc.stdout)
    assert covered and covered.group(1) == covered.group(2), proc.stdout


@pytest.mark.slow  # saga test at its default budget, per shipped flow
@pytest.mark.parametrize("flow", sorted(p.name for p in (ROOT / "flows").glob("*.yaml")))
def test_every_shipped_flow_passes_at_the_default_settings(flow):
    proc = saga("test", f"flows/{flow}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: every invariant held" in proc.stdout
    assert "effects as without faults" in proc.stdout and "semantic atomicity" in proc.stdout


def test_routes_are_found_without_an_input():
    """The happy path, each business "no", and each branch of a choice, from the schema, the
    choices' conditions and the services' own constants."""
    report = test_flow(load_flow(ROOT / "flows" / "order_paid_later.yaml"), examples=1)
    described = [route.describe() for route in report.routes]
    assert "via default: completed" in described and "via large: completed" in described
    assert any("reserve_inventory rejected" in d for d in described)
    assert any("insure_shipment rejected" in d for d in described)
    assert any("create_shipment rejected" in d for d in described)
