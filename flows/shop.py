"""Example services of the order flow (``flows/order_inventory.yaml``): a shop.

Each does real work on its own state, so failures happen for real reasons (ordering more than is
in stock is ``Rejected``), is idempotent by ``command.key`` (a redelivered command changes
nothing twice), has compensations that are safe when the action never ran, and exposes its
business state with ``snapshot()`` for property tests.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from actors import Rejected, Service, handles
from sagas.testing import invariant

__all__ = ["FREIGHT_LIMIT", "INITIAL_STOCK", "INSURANCE_LIMIT", "Insurance", "Inventory",
           "Notifications", "Payment", "Shipping"]

INITIAL_STOCK = {"widget": 1_000_000, "gadget": 250_000, "gizmo": 10_000}
CARD_LIMIT = 10_000_000  # cents: one charge above this is declined
FREIGHT_LIMIT = 50_000  # items: one shipment above this cannot be booked
INSURANCE_LIMIT = 100_000  # items: one shipment above this cannot be insured
SENT_BY = f"{socket.gethostname()}:{os.getpid()}"


class Inventory(Service):
    """Stock levels per SKU; ``reserve`` takes stock, ``release`` puts it back."""

    def __init__(self, stock: dict[str, int] | None = None) -> None:
        super().__init__()
        self.stock = dict(INITIAL_STOCK if stock is None else stock)
        self.reservations: dict[str, tuple[str, int]] = {}

    @handles("reserve")
    def reserve(self, command: Any) -> dict[str, Any]:
        sku, qty = command.payload["sku"], command.payload["qty"]
        if command.key in self.reservations:  # redelivered: already done
            return {"reservation_id": command.key, "sku": sku, "qty": qty}
        if sku not in self.stock:
            raise Rejected(f"unknown sku {sku!r}")
        available = self.stock[sku]
        if available < qty:
            raise Rejected(f"insufficient stock for {sku}: {qty} asked, {available} left")
        self.stock[sku] = available - qty
        self.reservations[command.key] = (sku, qty)
        return {"reservation_id": command.key, "sku": sku, "qty": qty}

    @handles("release")
    def release(self, command: Any) -> dict[str, Any]:
        reservation = self.reservations.pop(command.action_key, None)
        if reservation is None:  # never reserved, or released already
            return {"released": 0}
        sku, qty = reservation
        self.stock[sku] += qty
        return {"released": qty}

    def snapshot(self) -> dict[str, Any]:
        return {"stock": dict(self.stock), "reservations": len(self.reservations)}

    @invariant
    def stock_is_never_negative(self) -> None:
        negative = {sku: n for sku, n in self.stock.items() if n < 0}
        assert not negative, f"negative stock: {negative}"

    @invariant
    def stock_and_reservations_add_up(self) -> None:
        for sku, start in INITIAL_STOCK.items():
            held = sum(q for s, q in self.reservations.values() if s == sku)
            assert self.stock.get(sku, 0) + held == start, f"{sku}: units appeared or vanished"


class Payment(Service):
    """Charges per order; ``charge`` takes the money, ``refund`` gives it back."""

    def __init__(self) -> None:
        super().__init__()
        self.charges: dict[str, int] = {}
        self.collected = 0  # cents

    @handles("charge")
    def charge(self, command: Any) -> dict[str, Any]:
        amount = command.payload["amount"]
        if command.key in self.charges:
            return {"charge_id": command.key, "amount": self.charges[command.key]}
        if amount > CARD_LIMIT:
            raise Rejected(f"card declined: {amount} cents is over the limit of {CARD_LIMIT}")
        self.charges[command.key] = amount
        self.collected += amount
        return {"charge_id": command.key, "amount": amount}

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        amount = self.charges.pop(command.action_key, None)
        if amount is None:
            return {"refunded": 0}
        self.collected -= amount
        return {"refunded": amount}

    def snapshot(self) -> dict[str, Any]:
        return {"collected": self.collected, "charges": len(self.charges)}

    @invariant
    def money_is_conserved(self) -> None:
        assert self.collected == sum(self.charges.values()), (
            f"collected {self.collected} but the charges held add up to "
            f"{sum(self.charges.values())}")


class Shipping(Service):
    """Shipments; booking one is the order's point of no return (the pivot)."""

    def __init__(self) -> None:
        super().__init__()
        self.shipments: dict[str, dict[str, Any]] = {}

    @handles("create_shipment")
    def create_shipment(self, command: Any) -> dict[str, Any]:
        if command.key in self.shipments:
            return {"shipment_id": command.key, **self.shipments[command.key]}
        qty = command.payload["qty"]
        if qty > FREIGHT_LIMIT:
            raise Rejected(f"{qty} items exceed the freight limit of {FREIGHT_LIMIT}")
        shipment = {"order_id": command.payload["order_id"], "sku": command.payload["sku"],
                    "qty": qty}
        self.shipments[command.key] = shipment
        return {"shipment_id": command.key, **shipment}

    def snapshot(self) -> dict[str, Any]:
        return {"shipments": len(self.shipments)}


class Insurance(Service):
    """Transport insurance for large orders (``flows/order_paid_later.yaml`` takes this path
    only for them): ``insure`` takes out a policy, ``cancel`` withdraws it."""

    def __init__(self) -> None:
        super().__init__()
        self.policies: dict[str, int] = {}  # action key -> items insured

    @handles("insure")
    def insure(self, command: Any) -> dict[str, Any]:
        qty = command.payload["qty"]
        if command.key not in self.policies:
            if qty > INSURANCE_LIMIT:
                raise Rejected(f"{qty} items exceed the insurable limit of {INSURANCE_LIMIT}")
            self.policies[command.key] = qty
        return {"policy_id": command.key, "insured": self.policies[command.key]}

    @handles("cancel")
    def cancel(self, command: Any) -> dict[str, Any]:
        withdrawn = self.policies.pop(command.action_key, None) is not None
        return {"withdrawn": withdrawn}  # safe when the policy was never taken out

    def snapshot(self) -> dict[str, Any]:
        return {"policies": len(self.policies)}


class Notifications(Service):
    """Customer notifications (declared ``effects: none`` in the flow: a message, no state)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, str] = {}

    @handles("send")
    def send(self, command: Any) -> dict[str, Any]:
        order_id = command.payload.get("order_id", "?")
        self.sent.setdefault(command.key, f"order {order_id} is on its way")
        # where it ran: this process, or a worker elsewhere (saga worker, --remote)
        return {"notified": True, "message": self.sent[command.key], "sent_by": SENT_BY}
