"""Durable shop services and the child process of the crash soak test (``tests/test_soak.py``).

The services are durable versions of ``flows/shop.py`` (same handler names: ``reserve`` /
``release``, ``charge`` / ``refund``, ``create_shipment``, ``send``). They keep their business
state in their own SQLite file, named by the environment variable ``SOAK_EFFECTS_DB`` (WAL, one
connection per service object, tables created if missing)::

    stock(sku PRIMARY KEY, qty)                   -- widgets left
    balances(account PRIMARY KEY, amount)         -- customers' money, in cents
    invocations(id, key, phase, attempt, pid, service, name, outcome)
    effects(key PRIMARY KEY, service, kind, sku, qty, amount, account, undoes)

Each handler call runs ONE transaction that appends a row to ``invocations`` (every call, whatever
its outcome) and applies its effect only if ``effects`` has no row for ``command.key`` yet: the
effect dedupes on the idempotency key, so a redelivery after a crash never applies it twice. A
compensation looks its action's effect up by the action key (``saga_id:step``) and undoes it once
(its own effect row is keyed by the compensation key and records what it undid in ``qty`` /
``amount``; 0 when the action never ran). An action whose compensation's row is already there
applies nothing and raises ``Rejected`` (outcome ``compensated_first``): with several members, a
call under way in a member paused past its lease can end after another member compensated it,
which the runtime's inbox (checked before the call) cannot see; the check in the effect's own
transaction closes that (README, Services).

Real business failures (``Rejected``, no effect): more widgets than are in stock, a charge over
the card limit, a shipment over the freight limit. Injected trouble, decided by a hash of
``(key, attempt)`` so a run is reproducible (a redelivery of the same attempt misbehaves the same
way): a transient error before the effect (nothing applied), a transient error after it (applied
and committed, then the call raises), and a slow call that blocks longer than the step timeout
(``SOAK_SLOW_S``) and then still applies its effect — a time-out with the action run, whose reply
comes late. An ordinary call blocks a little (``SOAK_LATENCY_S="low,high"`` seconds, also from the
hash), as a remote call would.

``python -m tests.soak_services STORE_URL FLOW IDS_FILE ROUND COUNT CONCURRENCY`` is the child
process: it runs a batch of ``COUNT`` sagas (ids ``rRR-NNNNN``) with at most ``CONCURRENCY`` in
flight, appending each id to ``IDS_FILE`` (flushed) as soon as ``start()`` returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import sys
import threading
from typing import Any

from actors import Rejected, Service, handles

__all__ = [
    "CARD_LIMIT",
    "FREIGHT_LIMIT",
    "INITIAL_BALANCE",
    "INITIAL_STOCK",
    "Inventory",
    "Notifications",
    "Payment",
    "Shipping",
    "init_db",
    "inputs_for",
    "trouble",
]

EFFECTS_ENV = "SOAK_EFFECTS_DB"
SLOW_ENV = "SOAK_SLOW_S"
LATENCY_ENV = "SOAK_LATENCY_S"

INITIAL_STOCK = {"widget": 1_000_000}
INITIAL_BALANCE = 1_000_000_000  # cents, per customer account
CARD_LIMIT = 10_000_000  # cents: one charge above this is declined
FREIGHT_LIMIT = 50_000  # items: one shipment above this cannot be booked

TROUBLE_ENV = "SOAK_TROUBLE"

# Injected trouble per (key, attempt): shares of all handler calls, overridable with
# SOAK_TROUBLE="error_before,error_after,slow".
ERROR_BEFORE = 0.04  # raises before the effect: nothing applied
ERROR_AFTER = 0.03  # applies and commits the effect, then raises
SLOW = 0.01  # blocks SOAK_SLOW_S (longer than the step timeout), then applies the effect
if os.environ.get(TROUBLE_ENV):
    ERROR_BEFORE, ERROR_AFTER, SLOW = (float(x) for x in os.environ[TROUBLE_ENV].split(","))

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock(sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS balances(account TEXT PRIMARY KEY, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invocations(
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, phase TEXT NOT NULL,
    attempt INTEGER NOT NULL, pid INTEGER NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
    outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS invocations_key ON invocations(key);
CREATE TABLE IF NOT EXISTS effects(
    key TEXT PRIMARY KEY, service TEXT NOT NULL, kind TEXT NOT NULL, sku TEXT,
    qty INTEGER NOT NULL DEFAULT 0, amount INTEGER NOT NULL DEFAULT 0, account TEXT,
    undoes TEXT);
"""

# One writer at a time within a process: the service objects' connections would otherwise wait
# for each other in SQLite's busy handler (which sleeps). Other processes: the busy timeout.
_WRITE_LOCK = threading.Lock()


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def init_db(path: str) -> None:
    """Create the tables (if missing) and the initial stock (if not there yet)."""
    db = connect(path)
    try:
        with _WRITE_LOCK:
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany("INSERT OR IGNORE INTO stock(sku, qty) VALUES (?, ?)",
                           INITIAL_STOCK.items())
            db.execute("COMMIT")
    finally:
        db.close()


def _roll(key: str, attempt: int) -> float:
    digest = hashlib.sha256(f"{key}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def trouble(key: str, attempt: int) -> str | None:
    """The injected trouble for one attempt of one key: ``error_before``, ``error_after``,
    ``slow`` or ``None``."""
    roll = _roll(key, attempt)
    if roll < ERROR_BEFORE:
        return "error_before"
    if roll < ERROR_BEFORE + ERROR_AFTER:
        return "error_after"
    if roll < ERROR_BEFORE + ERROR_AFTER + SLOW:
        return "slow"
    return None


class TransientError(Exception):
    """An injected transient failure (the runtime retries it)."""


class _Durable(Service):
    """A service whose state lives in the soak's effects database (``SOAK_EFFECTS_DB``)."""

    service = "?"

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get(EFFECTS_ENV)
        if not path:
            raise RuntimeError(f"{EFFECTS_ENV} is not set: the soak services need their database")
        init_db(path)
        self.db = connect(path)
        self.pid = os.getpid()
        self.slow_s = float(os.environ.get(SLOW_ENV, "0.5"))
        low, _, high = os.environ.get(LATENCY_ENV, "0").partition(",")
        self.latency = (float(low), float(high or low))
        self._sleeper = threading.Event()  # never set: waiting on it is a slow remote call

    def _call(self, command: Any, apply: Any) -> dict[str, Any]:
        """Run one handler call: trouble, then one transaction (invocation row + deduped
        effect), then the reply. ``apply(db)`` applies the effect and returns the output, or
        raises ``Rejected`` (a business no: nothing applied)."""
        kind = trouble(command.key, command.attempt)
        if kind == "slow":
            self._sleeper.wait(self.slow_s)
        elif self.latency[1] > 0:  # an ordinary remote call takes a little while
            low, high = self.latency
            self._sleeper.wait(low + (high - low) * _roll(command.key, -command.attempt))
        outcome = "error" if kind == "error_before" else \
            "error_after" if kind == "error_after" else "succeeded"
        rejection: Rejected | None = None
        with _WRITE_LOCK:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                output: dict[str, Any] | None = None
                if kind != "error_before":
                    row = db.execute("SELECT kind FROM effects WHERE key = ?",
                                     (command.key,)).fetchone()
                    if row is not None:
                        output = self._output(db, command)  # redelivered: already applied
                        if outcome == "succeeded":
                            outcome = "deduped"
                    elif command.phase == "action" and db.execute(
                            "SELECT 1 FROM effects WHERE key = ?",
                            (f"{command.key}:compensation",)).fetchone() is not None:
                        # its compensation ran first: in another member, while this call was
                        # under way in a member paused past its lease (README, Services)
                        rejection = Rejected(f"{command.key} was compensated before it applied")
                        outcome = "compensated_first"
                    else:
                        try:
                            output = apply(db)
                        except Rejected as exc:
                            rejection, outcome = exc, "rejected"
                db.execute(
                    "INSERT INTO invocations(key, phase, attempt, pid, service, name, outcome) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (command.key, command.phase, command.attempt, self.pid, self.service,
                     command.name, outcome))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        if rejection is not None:
            raise rejection
        if kind == "error_before":
            raise TransientError(f"injected transient error before {command.key}")
        if kind == "error_after":
            raise TransientError(f"injected transient error after {command.key} was applied")
        assert output is not None
        return output

    def _effect(self, db: sqlite3.Connection, command: Any, kind: str, *, sku: str | None = None,
                qty: int = 0, amount: int = 0, account: str | None = None,
                undoes: str | None = None) -> None:
        db.execute("INSERT INTO effects(key, service, kind, sku, qty, amount, account, undoes) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (command.key, self.service, kind, sku, qty, amount, account, undoes))

    def _output(self, db: sqlite3.Connection, command: Any) -> dict[str, Any]:
        row = db.execute("SELECT kind, sku, qty, amount FROM effects WHERE key = ?",
                         (command.key,)).fetchone()
        kind, sku, qty, amount = row
        return {"effect": command.key, "kind": kind, "sku": sku, "qty": qty, "amount": amount}

    def _undo_target(self, db: sqlite3.Connection, command: Any, kind: str) -> Any:
        """The action's effect a compensation undoes (by the action key), or ``None``."""
        return db.execute("SELECT sku, qty, amount, account FROM effects "
                          "WHERE key = ? AND kind = ?", (command.action_key, kind)).fetchone()


class Inventory(_Durable):
    service = "inventory"

    @handles("reserve")
    def reserve(self, command: Any) -> dict[str, Any]:
        sku, qty = command.payload["sku"], command.payload["qty"]

        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            row = db.execute("SELECT qty FROM stock WHERE sku = ?", (sku,)).fetchone()
            if row is None:
                raise Rejected(f"unknown sku {sku!r}")
            if row[0] < qty:
                raise Rejected(f"insufficient stock for {sku}: {qty} asked, {row[0]} left")
            db.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?", (qty, sku))
            self._effect(db, command, "reserve", sku=sku, qty=qty)
            return self._output(db, command)

        return self._call(command, apply)

    @handles("release")
    def release(self, command: Any) -> dict[str, Any]:
        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            target = self._undo_target(db, command, "reserve")
            if target is None:  # never reserved
                self._effect(db, command, "release", undoes=command.action_key)
            else:
                sku, qty = target[0], target[1]
                db.execute("UPDATE stock SET qty = qty + ? WHERE sku = ?", (qty, sku))
                self._effect(db, command, "release", sku=sku, qty=qty,
                             undoes=command.action_key)
            return self._output(db, command)

        return self._call(command, apply)


class Payment(_Durable):
    service = "payment"

    @handles("charge")
    def charge(self, command: Any) -> dict[str, Any]:
        amount, account = command.payload["amount"], command.payload["customer"]

        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            if amount > CARD_LIMIT:
                raise Rejected(f"card declined: {amount} cents is over the limit of "
                               f"{CARD_LIMIT}")
            db.execute("INSERT OR IGNORE INTO balances(account, amount) VALUES (?, ?)",
                       (account, INITIAL_BALANCE))
            (balance,) = db.execute("SELECT amount FROM balances WHERE account = ?",
                                    (account,)).fetchone()
            if balance < amount:
                raise Rejected(f"insufficient funds on {account}")
            db.execute("UPDATE balances SET amount = amount - ? WHERE account = ?",
                       (amount, account))
            self._effect(db, command, "charge", amount=amount, account=account)
            return self._output(db, command)

        return self._call(command, apply)

    @handles("refund")
    def refund(self, command: Any) -> dict[str, Any]:
        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            target = self._undo_target(db, command, "charge")
            if target is None:  # never charged
                self._effect(db, command, "refund", undoes=command.action_key)
            else:
                amount, account = target[2], target[3]
                db.execute("UPDATE balances SET amount = amount + ? WHERE account = ?",
                           (amount, account))
                self._effect(db, command, "refund", amount=amount, account=account,
                             undoes=command.action_key)
            return self._output(db, command)

        return self._call(command, apply)


class Shipping(_Durable):
    service = "shipping"

    @handles("create_shipment")
    def create_shipment(self, command: Any) -> dict[str, Any]:
        sku, qty = command.payload["sku"], command.payload["qty"]

        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            if qty > FREIGHT_LIMIT:
                raise Rejected(f"{qty} items exceed the freight limit of {FREIGHT_LIMIT}")
            self._effect(db, command, "shipment", sku=sku, qty=qty)
            return self._output(db, command)

        return self._call(command, apply)


class Notifications(_Durable):
    service = "notifications"

    @handles("send")
    def send(self, command: Any) -> dict[str, Any]:
        def apply(db: sqlite3.Connection) -> dict[str, Any]:
            self._effect(db, command, "notify")
            return self._output(db, command)

        return self._call(command, apply)


# -- the batch a child process runs -------------------------------------------------------------

CUSTOMERS = 50


def inputs_for(round_no: int, count: int) -> list[dict[str, Any]]:
    """The saga inputs of one round: mostly ordinary orders, some refused for real reasons
    (out of stock, card declined, over the freight limit). Deterministic per round."""
    rng = random.Random(f"soak-{round_no}")
    inputs = []
    for n in range(count):
        customer = f"cust{rng.randrange(CUSTOMERS):02d}"
        qty, amount = rng.randint(1, 5), rng.randint(100, 10_000)
        roll = rng.random()
        if roll < 0.05:
            qty = 2 * INITIAL_STOCK["widget"]  # more than is in stock
        elif roll < 0.10:
            amount = CARD_LIMIT + rng.randint(1, 1000)  # declined
        elif roll < 0.13:
            qty = FREIGHT_LIMIT + rng.randint(1, 10)  # cannot be shipped: pivot rejected
        inputs.append({"order_id": f"o{round_no:02d}-{n:05d}", "customer": customer,
                       "sku": "widget", "qty": qty, "amount": amount})
    return inputs


def run_child(store_url: str, flow_path: str, ids_file: str, round_no: int, count: int,
              concurrency: int) -> dict[str, int]:
    from sagas import Runtime, load_flow

    flow = load_flow(flow_path)
    slots = threading.BoundedSemaphore(concurrency)
    lock = threading.Lock()
    ended = {"completed": 0, "compensated": 0, "failed": 0}
    all_done = threading.Event()

    def on_end(saga_id: str, status: str, reason: str | None) -> None:
        with lock:
            ended[status] = ended.get(status, 0) + 1
            if sum(ended.values()) == count:
                all_done.set()
        slots.release()

    inputs = inputs_for(round_no, count)
    with Runtime(store_url) as runtime, open(ids_file, "a", encoding="utf-8") as ids:
        for n, saga_input in enumerate(inputs):
            slots.acquire()
            saga_id = runtime.start(flow, saga_input, f"r{round_no:02d}-{n:05d}", on_end=on_end)
            ids.write(saga_id + "\n")
            ids.flush()
        all_done.wait()  # until every saga has ended (or the parent kills this process)
    return ended


if __name__ == "__main__":
    url, flow_file, ids_path, round_text, count_text, concurrency_text = sys.argv[1:7]
    summary = run_child(url, flow_file, ids_path, int(round_text), int(count_text),
                        int(concurrency_text))
    print(json.dumps(summary), flush=True)
