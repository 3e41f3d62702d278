"""The crash soak test (DESIGN.md §3 at-least-once delivery, §4 guarantees, §4.7 durability).

A child process (``python -m tests.soak_services``) runs a batch of ``order_inventory`` sagas on a
SQLite store, against durable shop services whose state lives in a second SQLite file
(``tests/soak_services.py``): real rejections (out of stock, card declined, over the freight
limit), injected transient errors (before and after the effect) and slow calls that outlast the
step timeout but still apply their effect. The parent watches the store and SIGKILLs the child at
a random moment while at least ``min_in_flight`` sagas are in flight, then runs
``saga resume --store URL --json`` and checks nothing is left in flight. Round after round.

At the end, from the saga store and the services' own database:

- every saga that was started (the ids the child recorded) exists and is terminal;
- handler invocations are counted apart from effects: per successful key (action or
  compensation) exactly one effect row and at least one invocation;
- compensations ran one at a time in reverse step order, in the log and in the effects table;
- a rejected action left no effect; compensated sagas left no net effect (stock and balance back
  where they were, nothing shipped); completed ones exactly their order; the stock table and the
  balances equal the initial values minus the net effects of all sagas;
- ``saga audit`` is clean.

The counts (started, completed, compensated, failed, resumed, kills, in flight at each kill) are
printed (``pytest -s``) and put in every assertion message.

Parameters (chosen for this 2-core machine; the slow soak takes about 1.5 minutes, the quick
one about 15 s): the slow soak runs 10 rounds, each a child with a batch of 2,000 sagas at
concurrency 200, 16 instances per service; each child is killed after a random number of starts
in [200, 1,800] (``SOAK_SEED`` repeats the choice), as soon as the store shows ≥ 120 in flight
(100 plus a margin for the sagas that end between the check and the signal; the count the store
holds after the kill, the exact number in flight at it, must be ≥ 100). An ordinary handler call
blocks 10-40 ms (a remote call: it keeps the semaphore saturated, so ~200 are in flight), 4 % of
calls raise before their effect, 3 % after it, 0.5 % block 1.3 s; steps time out after 1 s, the
pivot and the notification after 5 s (so a resume soon after a kill also re-sends the same
attempt), 3 attempts, backoff 20 ms ×2 up to 100 ms with jitter. Inputs: 5 % order more than is
in stock, 5 % are over the card limit, 3 % over the freight limit (the pivot is rejected).
The quick variant (not slow) runs 3 rounds of 500 at concurrency 150, 8 instances per service.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sagas.stores import TERMINAL, open_store
from tests import soak_services as shop
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent

STEPS = ("reserve_inventory", "charge_payment", "create_shipment", "notify_customer")
ACTION_KIND = {"reserve_inventory": "reserve", "charge_payment": "charge",
               "create_shipment": "shipment", "notify_customer": "notify"}
UNDO_KIND = {"reserve_inventory": "release", "charge_payment": "refund"}
KILL_MARGIN = 20

FLOW = """\
saga: order_inventory
version: 1
description: The order flow of flows/order_inventory.yaml on durable services (crash soak)
services:
  inventory: {class: tests.soak_services:Inventory, instances: INSTANCES}
  payment: {class: tests.soak_services:Payment, instances: INSTANCES}
  shipping: {class: tests.soak_services:Shipping, instances: INSTANCES}
  notifications: {class: tests.soak_services:Notifications, instances: INSTANCES}
input:
  type: object
  required: [order_id, customer, sku, qty, amount]
  properties:
    order_id: {type: string}
    customer: {type: string}
    sku: {type: string}
    qty: {type: integer, minimum: 1}
    amount: {type: integer, minimum: 0}
defaults:
  retry: {attempts: 3, backoff: 20ms, multiplier: 2, max_backoff: 100ms, jitter: true}
  timeout: TIMEOUT
  on_compensation_failure: park
deadline: 1m
steps:
  - name: reserve_inventory
    service: inventory
    action: reserve
    compensation: release
    input: {sku: $.input.sku, qty: $.input.qty}
  - name: charge_payment
    service: payment
    action: charge
    compensation: refund
    input: {order_id: $.input.order_id, customer: $.input.customer, amount: $.input.amount}
  - name: create_shipment
    service: shipping
    action: create_shipment
    pivot: true
    timeout: LONG_TIMEOUT
  - name: notify_customer
    service: notifications
    action: send
    effects: none
    timeout: LONG_TIMEOUT
"""


@dataclass
class Soak:
    """One soak run's parameters and what happened in it."""

    tmp: Path
    rounds: int
    batch: int
    concurrency: int
    min_in_flight: int = 100
    instances: int = 16
    timeout: str = "1s"  # the steps before the pivot, and every compensation
    long_timeout: str = "5s"  # the pivot and the notification
    latency: str = "0.01,0.04"  # an ordinary call blocks 10-40 ms (a remote call)
    slow_s: float = 1.3  # a slow call outlasts the 1 s timeout, then applies its effect
    trouble: str = "0.04,0.03,0.005"  # error before / error after the effect / slow, per call
    seed: int = field(default_factory=lambda: int(os.environ.get("SOAK_SEED") or time.time_ns()))
    kills: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.tmp / 'sagas.db'}"  # tmp is absolute: four slashes

    @property
    def effects_db(self) -> Path:
        return self.tmp / "effects.db"

    @property
    def flow(self) -> Path:
        return self.tmp / "order_inventory_soak.yaml"

    def env(self) -> dict[str, str]:
        values = dict(os.environ)
        values["PYTHONPATH"] = str(ROOT) + os.pathsep + values.get("PYTHONPATH", "")
        values[shop.EFFECTS_ENV] = str(self.effects_db)
        values[shop.SLOW_ENV] = str(self.slow_s)
        values[shop.TROUBLE_ENV] = self.trouble
        values[shop.LATENCY_ENV] = self.latency
        values.pop("SAGA_STORE", None)
        return values

    def summary(self) -> str:
        c = self.counts
        kills = [k["in_flight_at_kill"] for k in self.kills]
        return (f"soak seed={self.seed}: started={c.get('started')} "
                f"(recorded {c.get('recorded')}, unrecorded {c.get('unrecorded')}) "
                f"completed={c.get('completed')} compensated={c.get('compensated')} "
                f"failed={c.get('failed')} {c.get('failed_reasons', {})} "
                f"resumed={sum(k['resumed'] for k in self.kills)} kills={len(self.kills)} "
                f"in flight at each kill={kills}")


def saga_cli(soak: Soak, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=soak.env(), cwd=ROOT)


class LineCounter:
    """Counts the complete lines of a file another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                chunk = file.read()
        except FileNotFoundError:
            return 0
        complete = chunk.rfind(b"\n") + 1
        self.lines += chunk[:complete].count(b"\n")
        self.offset += complete
        return self.lines


def run_rounds(soak: Soak) -> None:
    """Start, kill and resume ``soak.rounds`` children; records each kill in ``soak.kills``."""
    rng = random.Random(soak.seed)
    soak.flow.write_text(FLOW.replace("INSTANCES", str(soak.instances))
                         .replace("LONG_TIMEOUT", soak.long_timeout)
                         .replace("TIMEOUT", soak.timeout))
    shop.init_db(str(soak.effects_db))
    store = open_store(soak.url)
    try:
        for round_no in range(soak.rounds):
            soak.kills.append(kill_one(soak, store, round_no, rng))
            print(f"round {round_no}: {soak.kills[-1]}", flush=True)
    finally:
        store.close()


MISSED_KILLS = 3
"""Children a round may start: on a loaded machine the test can miss its kill moment (the child
ran its whole batch before this process looked again). The missed child's sagas all ended
normally and are checked like the others; the round then kills a fresh child."""


def kill_one(soak: Soak, store: Any, round_no: int, rng: random.Random) -> dict[str, Any]:
    for attempt in range(MISSED_KILLS):
        killed = kill_child(soak, store, round_no, attempt, rng,
                            last=attempt == MISSED_KILLS - 1)
        if killed is not None:
            return killed
        print(f"round {round_no}: the child finished before its kill moment; another child",
              flush=True)
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt fails instead


def kill_child(soak: Soak, store: Any, round_no: int, attempt: int, rng: random.Random, *,
               last: bool) -> dict[str, Any] | None:
    """Start a child and kill it at a random moment; None if it finished first (not last)."""
    suffix = f"{round_no:02d}" + (f"-again{attempt}" if attempt else "")
    child_round = round_no + 50 * attempt  # its own saga ids and inputs
    ids_file = soak.tmp / f"ids-{suffix}.txt"
    low = max(soak.min_in_flight, soak.batch // 10)
    target = rng.randint(low, soak.batch - soak.concurrency)  # the random moment: n-th start
    begun = time.monotonic()
    with open(soak.tmp / f"child-{suffix}.err", "w") as err, \
            open(soak.tmp / f"child-{suffix}.out", "w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.soak_services", soak.url, str(soak.flow),
             str(ids_file), str(child_round), str(soak.batch), str(soak.concurrency)],
            stdout=out, stderr=err, env=soak.env(), cwd=ROOT)
    started = LineCounter(ids_file)
    checked: list[int] = []  # the sagas in flight, counted right before the kill

    def kill_at_the_moment() -> str | None:
        """Kill the child once it is past ``target`` starts with enough in flight; "missed"
        if it finished first (and may: not ``last``)."""
        if child.poll() is not None:
            if child.returncode == 0 and not last:
                return "missed"  # its sagas all ended before the moment; try another child
            tail = (soak.tmp / f"child-{suffix}.err").read_text()[-2000:]
            pytest.fail(f"round {round_no}: the child exited ({child.returncode}) before "
                        f"the kill (target {target} starts, {started.count()} started): "
                        f"{tail}\n{soak.summary()}")
        if started.count() >= target:
            before = len(store.in_flight())
            # a small margin: a few sagas may end between this check and the signal
            if before >= soak.min_in_flight + KILL_MARGIN:
                child.send_signal(signal.SIGKILL)
                checked.append(before)
                return "killed"
        return None

    try:
        moment = eventually(kill_at_the_moment, 120, interval=0.005,
                            what=lambda: f"round {round_no}: a kill moment (target {target} "
                                         f"starts, {started.count()} started)")
    finally:
        if child.poll() is None:  # still running: the kill did not happen (a failure above)
            child.kill()
        child.wait(30)
    if moment == "missed":
        return None
    (before,) = checked
    assert child.returncode == -signal.SIGKILL, (child.returncode, soak.summary())
    in_flight = store.in_flight()  # nobody writes now: exactly what was in flight at the kill
    killed_at = time.monotonic() - begun
    assert len(in_flight) >= soak.min_in_flight, \
        f"round {round_no}: only {len(in_flight)} in flight at the kill\n{soak.summary()}"
    resume_begun = time.monotonic()
    resumed = saga_cli(soak, "resume", "--store", soak.url, "--json")
    resume_s = time.monotonic() - resume_begun
    assert resumed.returncode == 0, \
        f"round {round_no}: saga resume exited {resumed.returncode}: {resumed.stderr[-2000:]}"
    doc = json.loads(resumed.stdout)
    left = store.in_flight()
    assert left == [], f"round {round_no}: still in flight after resume: {left[:10]}"
    assert doc["resumed"] == len(in_flight), \
        f"round {round_no}: {len(in_flight)} in flight at the kill, resume adopted {doc}"
    return {"round": round_no, "target": target, "started": started.count(),
            "in_flight_checked": before, "in_flight_at_kill": len(in_flight),
            "resumed": doc["resumed"], "resume": {k: doc[k] for k in
                                                  ("completed", "compensated", "failed")},
            "killed_after_s": round(killed_at, 2), "resume_s": round(resume_s, 2),
            "round_s": round(time.monotonic() - begun, 2)}


# -- the checks ---------------------------------------------------------------------------------

def read_effects(path: Path) -> tuple[dict[str, dict[str, Any]], Counter[str],
                                      dict[str, set[int]], Counter[str], dict[str, int]]:
    db = sqlite3.connect(path)
    try:
        effects = {
            key: {"seq": rowid, "service": service, "kind": kind, "sku": sku, "qty": qty,
                  "amount": amount, "account": account, "undoes": undoes}
            for rowid, key, service, kind, sku, qty, amount, account, undoes in db.execute(
                "SELECT rowid, key, service, kind, sku, qty, amount, account, undoes "
                "FROM effects")
        }
        invocations: Counter[str] = Counter()
        pids: dict[str, set[int]] = defaultdict(set)
        outcomes: Counter[str] = Counter()
        for key, pid, outcome in db.execute("SELECT key, pid, outcome FROM invocations"):
            invocations[key] += 1
            pids[key].add(pid)
            outcomes[outcome] += 1
        stock = dict(db.execute("SELECT sku, qty FROM stock"))
        balances = dict(db.execute("SELECT account, amount FROM balances"))
    finally:
        db.close()
    return effects, invocations, pids, outcomes, {"stock": stock, "balances": balances}


def recorded_ids(soak: Soak) -> list[str]:
    ids: list[str] = []
    for path in sorted(soak.tmp.glob("ids-*.txt")):  # every child's, a missed kill's too
        text = path.read_text()
        ids.extend(line for line in text.split("\n")[:-1] if line)  # complete lines only
    return ids


def brief(events: list[Any]) -> str:
    return " | ".join(f"{e.seq}:{e.type}:{e.step or ''}#{e.attempt or ''}"
                      + (f"({e.data.get('kind')})" if e.type.endswith("failed") else "")
                      for e in events)


def check(soak: Soak) -> list[str]:
    """Every check of the module docstring; returns the violations (empty when all hold)."""
    problems: list[str] = []
    store = open_store(soak.url)
    try:
        headers = {h.saga_id: h for h in store.list(flow="order_inventory")}
        records = {saga_id: store.load(saga_id).events for saga_id in headers}
    finally:
        store.close()
    effects, invocations, pids, outcomes, state = read_effects(soak.effects_db)

    ids = recorded_ids(soak)
    counts = soak.counts
    counts["recorded"] = len(ids)
    counts["started"] = len(headers)
    unrecorded = set(headers) - set(ids)
    counts["unrecorded"] = len(unrecorded)
    if len(set(ids)) != len(ids):
        problems.append("an id was recorded twice")
    missing = [i for i in ids if i not in headers]
    if missing:
        problems.append(f"{len(missing)} started sagas are missing from the store: {missing[:10]}")
    per_round = Counter(i.split("-")[0] for i in unrecorded)
    if any(n > 1 for n in per_round.values()):  # only the start cut short by a kill
        problems.append(f"sagas in the store the children never recorded: {sorted(unrecorded)}")
    status = Counter(h.status for h in headers.values())
    counts.update(completed=status["completed"], compensated=status["compensated"],
                  failed=status["failed"])
    counts["failed_reasons"] = dict(Counter(h.reason for h in headers.values()
                                            if h.status == "failed"))

    reserved: dict[str, int] = {}
    charged: dict[str, int] = {}
    undone_keys = 0
    seen: Counter[str] = Counter()  # what the logs show of the trouble
    for saga_id, header in headers.items():
        events = records[saga_id]
        where = f"saga {saga_id} ({header.status} {header.reason or ''}): {brief(events)}"
        if header.status not in TERMINAL:
            problems.append(f"not terminal: {where}")
            continue
        saga_input = header.input
        for event in events:
            if event.type in ("step.timed_out", "compensation.timed_out"):
                seen["timed_out"] += 1
                key = f"{saga_id}:{event.step}" + (
                    ":compensation" if event.type.startswith("compensation") else "")
                if key in effects:
                    seen["timed_out_with_effect"] += 1  # the action ran: its reply was late
            elif event.type == "reply.ignored":
                seen["reply_ignored"] += 1
            elif event.type in ("step.failed", "compensation.failed") and \
                    event.data.get("kind") == "error":
                seen["error_outcomes"] += 1
        if any(e.type == "step.timed_out" for e in events):
            seen[f"sagas_with_a_timeout_{header.status}"] += 1

        # handler invocations vs effects, per successful key
        for event in events:
            if event.type == "step.succeeded":
                key, kind = f"{saga_id}:{event.step}", ACTION_KIND[event.step]
            elif event.type == "compensation.succeeded":
                key, kind = f"{saga_id}:{event.step}:compensation", UNDO_KIND[event.step]
            else:
                continue
            effect = effects.get(key)
            if effect is None or effect["kind"] != kind:
                problems.append(f"{key} succeeded but its effect is {effect}: {where}")
            if invocations[key] < 1:
                problems.append(f"{key} succeeded with no handler invocation: {where}")
            output = event.data.get("output") or {}
            if output.get("effect") != key:
                problems.append(f"{key} succeeded with the output of another call {output}: "
                                f"{where}")
        succeeded = Counter(e.step for e in events if e.type == "step.succeeded")
        done_twice = [s for s, n in succeeded.items() if n > 1]
        undone = Counter(e.step for e in events if e.type == "compensation.succeeded")
        undone_twice = [s for s, n in undone.items() if n > 1]
        if done_twice or undone_twice:
            problems.append(f"recorded twice: {done_twice} {undone_twice}: {where}")

        # a rejected action (a business no) left no effect
        for event in events:
            if event.type == "step.failed" and event.data.get("kind") == "rejected" and \
                    f"{saga_id}:{event.step}" in effects:
                problems.append(f"{event.step} was rejected yet has an effect: {where}")

        # compensations one at a time, in reverse step order (log, then effects table)
        order = [STEPS.index(e.step) for e in events if e.type.startswith("compensation.")]
        if order != sorted(order, reverse=True):
            problems.append(f"compensations out of reverse order: {where}")
        undo_effects = [effects[f"{saga_id}:{s}:compensation"] for s in UNDO_KIND
                        if f"{saga_id}:{s}:compensation" in effects]
        undo_effects.sort(key=lambda e: e["seq"])
        applied = [e["kind"] for e in undo_effects]
        if applied not in ([], ["release"], ["refund"], ["refund", "release"]):
            problems.append(f"compensation effects applied in the order {applied}: {where}")
        for effect in undo_effects:
            undone_keys += 1
            action = effects.get(effect["undoes"])
            if effect["qty"] + effect["amount"] and action is None:
                problems.append(f"{effect} undid an action without an effect: {where}")

        # net business effect of the saga
        def net(step: str, column: str, *, _id: str = saga_id) -> int:
            done = effects.get(f"{_id}:{step}")
            undo = effects.get(f"{_id}:{step}:compensation")
            return (done[column] if done else 0) - (undo[column] if undo else 0)

        reserved[saga_id] = net("reserve_inventory", "qty")
        charged[saga_id] = net("charge_payment", "amount")
        shipped = f"{saga_id}:create_shipment" in effects
        notified = f"{saga_id}:notify_customer" in effects
        qty, amount = saga_input["qty"], saga_input["amount"]
        if header.status == "completed":
            if (reserved[saga_id], charged[saga_id], shipped, notified) != (qty, amount, True,
                                                                            True) or undone:
                problems.append(f"completed but reserved {reserved[saga_id]}/{qty}, charged "
                                f"{charged[saga_id]}/{amount}, shipped {shipped}, notified "
                                f"{notified}, compensated {dict(undone)}: {where}")
        elif header.status == "compensated":
            if (reserved[saga_id], charged[saga_id], shipped, notified) != (0, 0, False, False):
                problems.append(f"compensated but reserved {reserved[saga_id]}, charged "
                                f"{charged[saga_id]}, shipped {shipped}, notified {notified} "
                                f"(stock or balance not back where it was): {where}")
            # compensated iff its action started and its final outcome was not rejected
            expected = [s for s in reversed(UNDO_KIND) if any(
                e.type == "step.started" and e.step == s for e in events) and not any(
                e.type == "step.failed" and e.step == s and e.data.get("kind") == "rejected"
                for e in events)]
            if [s for s in reversed(UNDO_KIND) if undone[s]] != expected:
                problems.append(f"compensated {dict(undone)}, expected {expected}: {where}")
        elif header.reason in ("pivot_unknown", "forward_recovery"):
            if (reserved[saga_id], charged[saga_id]) != (qty, amount) or undone:
                problems.append(f"{header.reason} but reserved {reserved[saga_id]}/{qty}, "
                                f"charged {charged[saga_id]}/{amount}: {where}")
            if header.reason == "forward_recovery" and not shipped:
                problems.append(f"forward_recovery without a shipment: {where}")

    # every effect belongs to a saga, and was invoked
    for key in effects:
        if key.split(":")[0] not in headers:
            problems.append(f"effect {key} of an unknown saga")
        if invocations[key] < 1:
            problems.append(f"effect {key} without an invocation")

    # aggregate business state: initial values minus the net effect of every saga
    stock = state["stock"]["widget"]
    completed_qty = sum(h.input["qty"] for h in headers.values() if h.status == "completed")
    failed_qty = sum(reserved[i] for i, h in headers.items() if h.status == "failed")
    expected_stock = shop.INITIAL_STOCK["widget"] - sum(reserved.values())
    if stock != expected_stock or expected_stock != \
            shop.INITIAL_STOCK["widget"] - completed_qty - failed_qty:
        problems.append(f"stock is {stock}; initial {shop.INITIAL_STOCK['widget']} - completed "
                        f"{completed_qty} - held by failed sagas {failed_qty} = {expected_stock}")
    spent: Counter[str] = Counter()
    for saga_id, amount in charged.items():
        spent[headers[saga_id].input["customer"]] += amount
    for account, balance in state["balances"].items():
        if balance != shop.INITIAL_BALANCE - spent[account]:
            problems.append(f"balance of {account} is {balance}, expected "
                            f"{shop.INITIAL_BALANCE - spent[account]}")

    counts["seen_in_logs"] = dict(seen)
    counts["invocations"] = sum(invocations.values())
    counts["invocation_outcomes"] = dict(outcomes)
    counts["effects"] = len(effects)
    counts["compensation_effects"] = undone_keys
    counts["keys_invoked_more_than_once"] = sum(1 for n in invocations.values() if n > 1)
    counts["keys_invoked_by_two_processes"] = sum(1 for p in pids.values() if len(p) > 1)
    counts["stock"] = {"initial": shop.INITIAL_STOCK["widget"], "now": stock,
                       "completed_qty": completed_qty, "held_by_failed": failed_qty}
    return problems


def soak_and_check(soak: Soak) -> Soak:
    begun = time.monotonic()
    print(f"\nsoak: {soak.rounds} rounds x {soak.batch} sagas, concurrency {soak.concurrency}, "
          f"seed {soak.seed} (SOAK_SEED={soak.seed} repeats the kill moments)", flush=True)
    run_rounds(soak)
    problems = check(soak)
    audit = saga_cli(soak, "audit", "--store", soak.url)
    soak.counts["elapsed_s"] = round(time.monotonic() - begun, 1)
    print(soak.summary(), flush=True)
    print(json.dumps(soak.counts, indent=1, default=str), flush=True)
    assert not problems, f"{len(problems)} violations, first ones:\n" + "\n".join(
        problems[:20]) + f"\n{soak.summary()}"
    assert audit.returncode == 0, \
        f"saga audit exited {audit.returncode}:\n{audit.stdout[-4000:]}{audit.stderr[-2000:]}" \
        f"\n{soak.summary()}"
    assert len(soak.kills) == soak.rounds
    assert all(k["in_flight_at_kill"] >= soak.min_in_flight for k in soak.kills), soak.summary()
    assert soak.counts["started"] == soak.counts["completed"] + soak.counts["compensated"] + \
        soak.counts["failed"], soak.summary()
    return soak


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_crash_soak(tmp_path: Path) -> None:
    """≥ 10 SIGKILLs, each with ≥ 100 sagas in flight, of children running batches of 2,000."""
    soak = soak_and_check(Soak(tmp_path, rounds=10, batch=2000, concurrency=200))
    assert soak.counts["started"] >= 10 * 200
    # the soak exercised what it is meant to: real rejections, transient errors, late replies
    outcomes, seen = soak.counts["invocation_outcomes"], soak.counts["seen_in_logs"]
    assert outcomes.get("rejected", 0) and outcomes.get("error", 0) and \
        outcomes.get("error_after", 0) and outcomes.get("deduped", 0), soak.summary()
    assert seen.get("timed_out_with_effect", 0) and seen.get("error_outcomes", 0), soak.summary()
    assert soak.counts["keys_invoked_by_two_processes"] > 0, soak.summary()  # across kills
    assert soak.counts["compensated"] > 0 and soak.counts["completed"] > 0, soak.summary()


@pytest.mark.slow  # 15 s; the full soak (slow too) covers the same machinery in CI
def test_crash_soak_quick(tmp_path: Path) -> None:
    """The same machinery, small: 3 kills of children running batches of 500."""
    soak_and_check(Soak(tmp_path, rounds=3, batch=500, concurrency=150, instances=8))
