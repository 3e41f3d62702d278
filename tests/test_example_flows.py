"""The shipped flows with their real example services: failures for real reasons, undone exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.shop import INITIAL_STOCK
from sagas.testing import SagaTestEnvironment

FLOWS = Path(__file__).resolve().parent.parent / "flows"
ORDER, TRIP, TRANSFER = (str(FLOWS / f"{n}.yaml") for n in
                         ("order_inventory", "trip_booking", "money_transfer"))


def order(qty: int = 1, amount: int = 2500, order_id: str = "o-1") -> dict:
    return {"order_id": order_id, "sku": "widget", "qty": qty, "amount": amount}


def trip(car: str = "compact") -> dict:
    return {"trip_id": "t-1", "traveller": "Ada", "flight": "LH-400", "hotel": "Adlon",
            "car": car, "nights": 3}


def snapshots(env: SagaTestEnvironment, *paths: str) -> dict[str, list]:
    return {p: env.runtime.snapshot(p) for p in paths}


SHOP = ("flows.shop:Inventory", "flows.shop:Payment", "flows.shop:Shipping")


def test_order_completes_and_moves_stock_and_money():
    with SagaTestEnvironment() as env:
        result = env.run(ORDER, order(qty=3, amount=900))
        assert result.status == "completed"
        inventory, payment, shipping = (env.runtime.snapshot(p)[0] for p in SHOP)
    assert inventory["stock"]["widget"] == INITIAL_STOCK["widget"] - 3
    assert payment == {"collected": 900, "charges": 1}
    assert shipping == {"shipments": 1}
    assert result.context["steps"]["charge_payment"]["amount"] == 900


@pytest.mark.parametrize("fail, undone", [
    ("charge_payment", ["reserve_inventory"]),
    ("create_shipment", ["charge_payment", "reserve_inventory"]),
])
def test_order_rolled_back_leaves_every_service_as_it_was(fail, undone):
    with SagaTestEnvironment() as env:
        env.run(ORDER, order(order_id="warm-up"))  # start the services
        before = snapshots(env, *SHOP)
        env.reject(fail)
        result = env.run(ORDER, order(qty=5))
        after = snapshots(env, *SHOP)
    assert result.status == "compensated"
    assert [e.step for e in result.history if e.type == "compensation.succeeded"] == undone
    assert after == before


def test_order_beyond_the_stock_is_rejected_for_real():
    with SagaTestEnvironment() as env:
        result = env.run(ORDER, order(qty=INITIAL_STOCK["widget"] + 1))
    assert result.status == "compensated"
    failed = [e for e in result.history if e.type == "step.failed"]
    assert failed[0].data["kind"] == "rejected"
    assert "insufficient stock" in failed[0].data["error"]


def test_trip_with_an_unknown_car_class_cancels_flight_and_hotel():
    paths = ("flows.travel:Flights", "flows.travel:Hotels", "flows.travel:Cars")
    with SagaTestEnvironment() as env:
        env.run(TRIP, trip())
        before = snapshots(env, *paths)
        result = env.run(TRIP, trip(car="spaceship"))
        after = snapshots(env, *paths)
    assert result.status == "compensated"
    # the three bookings ran at once: all three were sent before any answer came back
    kinds = [(e.type, e.step) for e in result.history]
    first_answer = next(i for i, (kind, _) in enumerate(kinds)
                        if kind in ("step.succeeded", "step.failed"))
    assert {step for kind, step in kinds[:first_answer] if kind == "step.started"} >= \
        {"book_flight", "book_hotel", "book_car"}
    # the flight and the hotel are cancelled (in whatever order), and nothing else
    undone = [e.step for e in result.history if e.type == "compensation.succeeded"]
    assert sorted(undone[:-1]) == ["book_flight", "book_hotel"]
    assert undone[-1] == "book_travel"  # the block is undone once both branches are
    assert after == before


def test_transfer_completes_and_conserves_money():
    with SagaTestEnvironment() as env:
        result = env.run(TRANSFER, {"transfer_id": "x-1", "from_account": "alice",
                                    "to_account": "bob", "amount": 12_345})
        source = env.runtime.snapshot("flows.bank:SourceBank")[0]
        target = env.runtime.snapshot("flows.bank:TargetBank")[0]
    assert result.status == "completed"
    assert source["holds"] == 0
    assert 100_000_000 - source["balances"]["alice"] == target["balances"]["bob"] == 12_345


def test_transfer_to_a_closed_account_releases_the_hold():
    with SagaTestEnvironment() as env:
        result = env.run(TRANSFER, {"transfer_id": "x-2", "from_account": "alice",
                                    "to_account": "closed", "amount": 500})
        source = env.runtime.snapshot("flows.bank:SourceBank")[0]
    assert result.status == "compensated"
    assert source == {"balances": {}, "holds": 0}  # alice's balance is back where it was
