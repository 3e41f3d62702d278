"""Three deliberately broken services: `saga test` must catch each one."""

from __future__ import annotations

from typing import Any

from actors import handles
from flows.shop import Inventory, Payment


class NonIdempotentRefund(Payment):
    """Its compensation is not idempotent: run a second time, it refunds a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.refunds: dict[str, int] = {}

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        key = f"{command.saga_id}:{command.step}"
        amount = self.charges.pop(key, None)
        if amount is None:
            amount = self.refunds.get(key, 0)  # "refund it again": the bug
        self.refunds[key] = amount
        self.collected -= amount
        return {"refunded": amount}


class UndoesWhatNeverHappened(Inventory):
    """Its compensation puts stock back even when nothing was reserved."""

    @handles("release")
    def release(self, command: Any) -> dict[str, Any]:
        self.reservations.pop(f"{command.saga_id}:{command.step}", None)
        sku, qty = command.payload["sku"], command.payload["qty"]
        self.stock[sku] = self.stock.get(sku, 0) + qty
        return {"released": qty}


class LosesEffectOnRedelivery(Inventory):
    """A redelivered reservation forgets the first one (the stock stays taken)."""

    @handles("reserve")
    def reserve(self, command: Any) -> dict[str, Any]:
        if command.key in self.reservations:
            del self.reservations[command.key]  # "already done" — and the record is lost
            return {"reservation_id": command.key}
        return super().reserve(command)
