"""Example services of the transfer flow (``flows/money_transfer.yaml``): two banks and a ledger.

Money is in integer cents. A hold takes funds out of the available balance (``Rejected`` when
they are insufficient); releasing it gives them back; settling turns it into a debit. Every
operation is idempotent by ``command.key``.
"""

from __future__ import annotations

from typing import Any

from actors import Rejected, Service, handles

__all__ = ["OPENING_BALANCE", "Ledger", "SourceBank", "TargetBank"]

OPENING_BALANCE = 100_000_000  # cents, for any account seen for the first time
CLOSED_ACCOUNTS = frozenset({"closed"})


class SourceBank(Service):
    """Accounts money leaves from."""

    def __init__(self) -> None:
        super().__init__()
        self.balances: dict[str, int] = {}
        self.holds: dict[str, tuple[str, int]] = {}
        self.settled: dict[str, int] = {}

    def _balance(self, account: str) -> int:
        return self.balances.setdefault(account, OPENING_BALANCE)

    @handles("hold")
    def hold(self, command: Any) -> dict[str, Any]:
        account, amount = command.payload["account"], command.payload["amount"]
        if command.key in self.holds:
            return {"hold_id": command.key, "amount": amount}
        if account in CLOSED_ACCOUNTS:
            raise Rejected(f"account {account} is closed")
        if self._balance(account) < amount:
            raise Rejected(f"insufficient funds in {account}")
        self.balances[account] -= amount
        self.holds[command.key] = (account, amount)
        return {"hold_id": command.key, "amount": amount}

    @handles("release_hold")
    def release_hold(self, command: Any) -> dict[str, Any]:
        hold = self.holds.pop(command.action_key, None)
        if hold is None:
            return {"released": 0}
        account, amount = hold
        self.balances[account] += amount
        return {"released": amount}

    @handles("settle")
    def settle(self, command: Any) -> dict[str, Any]:
        hold_id = command.payload["hold_id"]
        if hold_id in self.settled:
            return {"settled": self.settled[hold_id]}
        hold = self.holds.pop(hold_id, None)
        if hold is None:
            raise Rejected(f"no hold {hold_id}")
        self.settled[hold_id] = hold[1]
        return {"settled": hold[1]}

    def snapshot(self) -> dict[str, Any]:
        """Balances that moved from the opening balance, and the holds in place."""
        moved = {a: b for a, b in self.balances.items() if b != OPENING_BALANCE}
        return {"balances": moved, "holds": len(self.holds)}


class TargetBank(Service):
    """Accounts money arrives in; a credit is the transfer's point of no return."""

    def __init__(self) -> None:
        super().__init__()
        self.balances: dict[str, int] = {}
        self.credits: dict[str, int] = {}

    @handles("credit")
    def credit(self, command: Any) -> dict[str, Any]:
        account, amount = command.payload["account"], command.payload["amount"]
        if command.key in self.credits:
            return {"credit_id": command.key, "amount": amount}
        if account in CLOSED_ACCOUNTS:
            raise Rejected(f"account {account} is closed")
        self.balances[account] = self.balances.get(account, 0) + amount
        self.credits[command.key] = amount
        return {"credit_id": command.key, "amount": amount}

    def snapshot(self) -> dict[str, Any]:
        return {"balances": {a: b for a, b in self.balances.items() if b}}


class Ledger(Service):
    """An append-only record of completed transfers."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, dict[str, Any]] = {}

    @handles("record")
    def record(self, command: Any) -> dict[str, Any]:
        entry = self.entries.setdefault(command.key, dict(command.payload))
        return {"entry_id": command.key, "amount": entry["amount"]}

    def snapshot(self) -> dict[str, Any]:
        return {"entries": len(self.entries)}
