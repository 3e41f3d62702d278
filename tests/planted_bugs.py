"""Services written from public saga examples, sound and with one planted bug each.

`saga test` must find every planted bug on its own (no example input, no business invariant
to help it: only the services' ``snapshot()``), and pass every sound flow. The flows are in
``tests/flows/planted/``.
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from actors import Rejected, Service, handles
from tests.support import saga_cli

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "tests" / "flows" / "planted"
WAREHOUSE = {"A-100": 500, "B-200": 40}
OPENING = 1_000_000  # cents per account
FROZEN = ("frozen",)


def planted(tmp_path: Path, flow: str, **bugs: str) -> Path:
    """A copy of ``tests/flows/planted/<flow>.yaml`` whose services named in ``bugs`` use the
    class given (``packaging="StockTakesTwice"``)."""
    text = (PLANTED / f"{flow}.yaml").read_text()
    for service, cls in bugs.items():
        text, n = re.subn(rf"^  {service}: tests\.planted_bugs:\w+$",
                          f"  {service}: tests.planted_bugs:{cls}", text, flags=re.M)
        assert n == 1, f"{flow} has no service {service}"
    path = tmp_path / f"{flow}_{'_'.join(bugs.values()) or 'sound'}.yaml"
    path.write_text(text)
    return path


def saga(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The ``saga`` command, run from this checkout in ``cwd``."""
    return saga_cli(*args, cwd=cwd)


def undone(command: Any) -> str:
    """The idempotency key of the action a compensation undoes."""
    return f"{command.saga_id}:{command.step}"


class Stock(Service):
    """Units per item: ``take`` removes them, ``put_back`` returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.units = dict(WAREHOUSE)
        self.held: dict[str, tuple[str, int]] = {}
        self.reserved = 0  # units held, all items together

    @handles("take")
    def take(self, command: Any) -> dict[str, Any]:
        item, qty = command.payload["item"], command.payload["qty"]
        if command.key not in self.held:
            if self.units.get(item, 0) < qty:
                raise Rejected(f"only {self.units.get(item, 0)} of {item} left")
            self.units[item] -= qty
            self.reserved += qty
            self.held[command.key] = (item, qty)
        return {"held": qty}

    @handles("put_back")
    def put_back(self, command: Any) -> dict[str, Any]:
        entry = self.held.pop(undone(command), None)
        if entry is not None:
            self.units[entry[0]] += entry[1]
            self.reserved -= entry[1]
        return {"returned": 0 if entry is None else entry[1]}

    @handles("take_lines")
    def take_lines(self, command: Any) -> dict[str, Any]:
        """Every line of an order, or none (``Rejected`` if one item is short)."""
        lines = [(line["item"], line["qty"]) for line in command.payload["lines"]]
        if command.key not in self.held:
            for item, qty in lines:
                if self.units.get(item, 0) < qty:
                    raise Rejected(f"only {self.units.get(item, 0)} of {item} left")
            for item, qty in lines:
                self.units[item] -= qty
                self.reserved += qty
            self.held[command.key] = ("lines", sum(q for _, q in lines))
            self.held.update({f"{command.key}/{n}": line for n, line in enumerate(lines)})
        return {"lines": len(lines)}

    @handles("put_back_lines")
    def put_back_lines(self, command: Any) -> dict[str, Any]:
        key = undone(command)
        if self.held.pop(key, None) is None:
            return {"returned": 0}
        n = 0
        while (line := self.held.pop(f"{key}/{n}", None)) is not None:
            self.units[line[0]] += line[1]
            self.reserved -= line[1]
            n += 1
        return {"returned": n}

    def snapshot(self) -> dict[str, Any]:
        return {"units": dict(self.units), "reserved": self.reserved, "held": len(self.held)}


class StockTakesTwice(Stock):
    """Bug: ``take`` does not dedupe on ``command.key``: a redelivery takes the units again."""

    @handles("take")
    def take(self, command: Any) -> dict[str, Any]:
        item, qty = command.payload["item"], command.payload["qty"]
        if self.units.get(item, 0) < qty:
            raise Rejected(f"only {self.units.get(item, 0)} of {item} left")
        self.units[item] -= qty
        self.reserved += qty
        self.held[command.key] = (item, qty)
        return {"held": qty}


class StockForgetsReserved(Stock):
    """Bug: ``put_back`` returns the units but forgets the ``reserved`` count."""

    @handles("put_back")
    def put_back(self, command: Any) -> dict[str, Any]:
        entry = self.held.pop(undone(command), None)
        if entry is not None:
            self.units[entry[0]] += entry[1]
        return {"returned": 0 if entry is None else entry[1]}


class StockUndoFailsIfNothingHeld(Stock):
    """Bug: ``put_back`` assumes the units were taken (``KeyError`` when the take never ran)."""

    @handles("put_back")
    def put_back(self, command: Any) -> dict[str, Any]:
        item, qty = self.held.pop(undone(command))
        self.units[item] += qty
        self.reserved -= qty
        return {"returned": qty}


class Accounts(Service):
    """Balances in cents: ``debit`` takes money, ``refund`` gives a debit back."""

    def __init__(self) -> None:
        super().__init__()
        self.balances: dict[str, int] = {}
        self.debits: dict[str, tuple[str, int]] = {}

    def _balance(self, account: str) -> int:
        return self.balances.setdefault(account, OPENING)

    @handles("debit")
    def debit(self, command: Any) -> dict[str, Any]:
        account, amount = command.payload["account"], command.payload["amount"]
        if command.key not in self.debits:
            if account in FROZEN:
                raise Rejected(f"account {account} is frozen")
            if self._balance(account) < amount:
                raise Rejected("insufficient funds")
            self.balances[account] -= amount
            self.debits[command.key] = (account, amount)
        return {"debited": amount, "account": account}

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        entry = self.debits.pop(undone(command), None)
        if entry is not None:
            self.balances[entry[0]] += entry[1]
        return {"refunded": 0 if entry is None else entry[1]}

    @handles("credit")
    def credit(self, command: Any) -> dict[str, Any]:
        account, amount = command.payload["account"], command.payload["amount"]
        if command.key not in self.debits:
            if account in FROZEN:
                raise Rejected(f"account {account} is frozen")
            self.balances[account] = self._balance(account) + amount
            self.debits[command.key] = (account, -amount)
        return {"credited": amount}

    def snapshot(self) -> dict[str, Any]:
        return {"balances": {a: b for a, b in self.balances.items() if b != OPENING},
                "open": len(self.debits)}


class AccountsRefundTwice(Accounts):
    """Bug: ``refund`` is not idempotent: run twice, it pays back twice."""

    def __init__(self) -> None:
        super().__init__()
        self.refunded: dict[str, tuple[str, int]] = {}

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        entry = self.debits.pop(undone(command), None) or self.refunded.get(undone(command))
        if entry is not None:
            self.balances[entry[0]] += entry[1]
            self.refunded[undone(command)] = entry
        return {"refunded": 0 if entry is None else entry[1]}


class AccountsTrustReply(Accounts):
    """Bug: ``refund`` trusts the action's reply (``command.result``): when every attempt of
    the debit timed out after it happened, the reply is unknown and nothing is refunded."""

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        if command.result is None:
            return {"refunded": 0}  # "the debit never happened"
        return super().refund(command)


class Ledger(Service):
    """Entries per saga; booking one is idempotent."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, int] = {}

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        self.entries.setdefault(command.key, command.payload["amount"])
        return {"entry": command.key}

    def snapshot(self) -> dict[str, Any]:
        return {"entries": len(self.entries), "total": sum(self.entries.values())}


class LedgerBooksTwice(Ledger):
    """Bug: ``book`` (after the pivot, never compensated) appends on every delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        self.count += 1
        self.entries[f"{command.key}#{self.count}"] = command.payload["amount"]
        return {"entry": command.key}


class Carrier(Service):
    """Shipments (the pivot): refused above a weight limit."""

    LIMIT = 300

    def __init__(self) -> None:
        super().__init__()
        self.shipments: set[str] = set()

    @handles("ship")
    def ship(self, command: Any) -> dict[str, Any]:
        if command.payload["qty"] > self.LIMIT:
            raise Rejected("too heavy")
        self.shipments.add(command.key)
        return {"tracking": command.key}

    def snapshot(self) -> dict[str, Any]:
        return {"shipments": len(self.shipments)}


class Bookings(Service):
    """A travel supplier: ``book`` holds a seat/room/car, ``cancel`` lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = {"standard": 10, "premium": 2}
        self.booked: dict[str, str] = {}

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        kind = command.payload["kind"]
        if command.key not in self.booked:
            if self.capacity.get(kind, 0) <= 0:
                raise Rejected(f"no {kind} left")
            self.capacity[kind] -= 1
            self.booked[command.key] = kind
        return {"booking": command.key}

    @handles("cancel")
    def cancel(self, command: Any) -> dict[str, Any]:
        kind = self.booked.pop(undone(command), None)
        if kind is not None:
            self.capacity[kind] += 1
        return {"cancelled": kind is not None}

    def snapshot(self) -> dict[str, Any]:
        return {"capacity": dict(self.capacity), "booked": len(self.booked)}


class BookingsCancelTwice(Bookings):
    """Bug: ``cancel`` gives the capacity back on every delivery."""

    @handles("cancel")
    def cancel(self, command: Any) -> dict[str, Any]:
        kind = self.booked.pop(undone(command), None) or command.payload["kind"]
        self.capacity[kind] = self.capacity.get(kind, 0) + 1
        return {"cancelled": True}


class BlocksForever(Stock):
    """Bug: ``take`` waits on something that never happens."""

    @handles("take")
    def take(self, command: Any) -> dict[str, Any]:
        threading.Event().wait()
        return {"held": 0}


class LedgerWithoutDatabase(Ledger):
    """Its constructor fails (a missing configuration)."""

    def __init__(self) -> None:
        super().__init__()
        raise RuntimeError("no database configured")


class LedgerConnectsForever(Ledger):
    """Its constructor waits on a connection that never comes."""

    def __init__(self) -> None:
        super().__init__()
        threading.Event().wait()


class LedgerSnapshotBlocks(Ledger):
    """``snapshot()`` never returns."""

    def snapshot(self) -> dict[str, Any]:
        threading.Event().wait()
        return {}


class LedgerExits(Ledger):
    """``book`` raises SystemExit (it must count as an error, not end saga test)."""

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        raise SystemExit(3)
