"""Members in real processes on a real PostgreSQL: `saga serve` members killed with ``kill -9``
and paused with SIGSTOP while they drive sagas, and nobody types `saga resume`.

**The soak** (issue 16, point 7): three ``saga serve`` members of the crash soak's durable
order flow (``tests/soak_services.py``: effects deduplicated per key in their own SQLite file)
and of ``flows/trip_booking.yaml``; this test is a client (``Runtime(client=True)``) starting
1,000 sagas of each at concurrency 200 while a member is killed with ``kill -9`` at a random
moment five times (and restarted each time), then one is SIGSTOPped for longer than its lease
and SIGCONTed. At the end: every saga terminal, the crash soak's checks of the order sagas'
effects (once per key, stock and money conserved), ``saga audit`` clean (it checks who wrote
each event), and nothing written by the paused member under the epochs it held once another
member had written under a newer one.

**The acceptance scenario:** two ``saga serve`` members and a ``saga run --count 2000
--concurrency 200`` batch (a client of them); one member is killed with ``kill -9`` while it
drives at least 100 of the batch's sagas; the batch completes, the other member holds the dead
one's partitions within 3 s of their leases ending, and ``saga audit`` is clean.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sagas import Runtime, load_flow
from sagas.stores import open_store, partition_of
from tests import soak_services as shop
from tests.postgres_server import postgres_server, postgres_store_url  # noqa: F401 (fixtures)
from tests.support import eventually
from tests.test_soak import FLOW, Soak, check

ROOT = Path(__file__).resolve().parent.parent
TRIP = ROOT / "flows" / "trip_booking.yaml"
TTL = 2.0  # the default lease


class MemberSoak(Soak):
    """The crash soak's parameters and checks, on a PostgreSQL store."""

    store_url: str = ""

    @property
    def url(self) -> str:
        return self.store_url


class Members:
    """``saga serve`` processes on one store: started, killed, paused and stopped by pid."""

    def __init__(self, soak: MemberSoak, flows: list[Path]) -> None:
        self.soak = soak
        self.flows = flows
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen[str]:
        log = self.soak.tmp / f"member-{len(self.logs)}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "serve", *map(str, self.flows),
             "--store", self.soak.url],
            stdout=subprocess.DEVNULL, stderr=log.open("w"), env=self.soak.env(), cwd=ROOT,
            text=True)
        self.procs.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.live():
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in self.logs
                         if log.exists())


def _member_of(store: Any, pid: int) -> str | None:
    for member in store.members():
        if member.info.get("pid") == pid and member.seen_ago < TTL:
            return member.member
    return None


def _held_by(store: Any) -> dict[str, dict[int, int]]:
    """Live leases: member -> {partition: epoch}."""
    held: dict[str, dict[int, int]] = {}
    for info in store.leases():
        if info.held and info.member is not None:
            held.setdefault(info.member, {})[info.partition] = info.epoch
    return held


def _all_held(store: Any, members: int) -> bool:
    held = _held_by(store)
    return len(held) == members and sum(len(p) for p in held.values()) == store.partitions()


def _trip_input(n: int) -> dict[str, Any]:
    return {"trip_id": f"t-{n:05d}", "traveller": f"trav{n % 50}", "flight": "LH-400",
            "hotel": "grand", "car": "compact", "nights": 1 + n % 5}


def _written_after_losing(store: Any, member: str, held: dict[int, int],
                          saga_ids: list[str]) -> list[str]:
    """Events ``member`` wrote under an epoch it held, positioned after the first event
    another member wrote under a newer epoch of that partition."""
    partitions = store.partitions()
    mine: list[tuple[int, int, int, str]] = []  # (partition, epoch, position, saga/seq)
    newer_first: dict[int, int] = {}  # partition -> first position under a newer epoch
    for saga_id in saga_ids:
        partition = partition_of(saga_id, partitions)
        if partition not in held:
            continue
        positions = {e.seq: e.position for e in store.load(saga_id).events}
        for writer in store.writers(saga_id):
            position = positions[writer.seq]
            if writer.member == member and writer.epoch == held[partition]:
                mine.append((partition, writer.epoch, position, f"{saga_id}/{writer.seq}"))
            elif writer.epoch is not None and writer.epoch > held[partition]:
                first = newer_first.get(partition)
                newer_first[partition] = position if first is None else min(first, position)
    return [where for partition, _, position, where in mine
            if partition in newer_first and position > newer_first[partition]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_members_soak_kill_and_pause(tmp_path: Path,
                                     postgres_store_url: str) -> None:  # noqa: F811
    soak = MemberSoak(tmp_path, rounds=0, batch=1000, concurrency=200, instances=8)
    soak.store_url = postgres_store_url
    soak.flow.write_text(FLOW.replace("INSTANCES", str(soak.instances))
                         .replace("LONG_TIMEOUT", soak.long_timeout)
                         .replace("TIMEOUT", soak.timeout))
    shop.init_db(str(soak.effects_db))
    os.environ[shop.EFFECTS_ENV] = str(soak.effects_db)  # the client imports no service
    rng = random.Random(soak.seed)
    members = Members(soak, [soak.flow, TRIP])
    store = open_store(soak.url)
    client = None
    try:
        for _ in range(3):
            members.start()
        eventually(lambda: _all_held(store, 3), 60, what=lambda: f"3 members holding every "
                   f"partition ({_held_by(store)})\n{members.tail()}")
        client = Runtime(store, client=True)
        order_flow, trip_flow = load_flow(soak.flow), load_flow(TRIP)
        slots = threading.BoundedSemaphore(soak.concurrency)
        ended: dict[str, str] = {}
        lock = threading.Lock()

        def on_end(saga_id: str, status: str, reason: str | None) -> None:
            with lock:
                ended[saga_id] = status
            slots.release()

        chaos: dict[str, Any] = {"kills": 0, "paused": None, "errors": []}
        stop_chaos = threading.Event()

        def disturb() -> None:
            try:
                for _ in range(5):
                    if stop_chaos.wait(rng.uniform(1.0, 3.0)):
                        return
                    victim = rng.choice(members.live())
                    victim.kill()  # kill -9
                    victim.wait(10)
                    chaos["kills"] += 1
                    if stop_chaos.wait(rng.uniform(0.3, 1.5)):
                        return
                    members.start()
                eventually(lambda: _all_held(store, 3), 30)  # the restarted one has its share
                victim = rng.choice(members.live())
                member = eventually(lambda: _member_of(store, victim.pid), 10)
                held = eventually(lambda: dict(_held_by(store).get(member, {})), 10)
                victim.send_signal(signal.SIGSTOP)
                time.sleep(TTL * 2 + 1.5)  # the behaviour under test: a pause past the lease
                victim.send_signal(signal.SIGCONT)
                chaos["paused"] = (member, held)
            except Exception as exc:  # reported by the test's thread
                chaos["errors"].append(repr(exc))

        disturber = threading.Thread(target=disturb, daemon=True)
        disturber.start()
        inputs = shop.inputs_for(0, soak.batch)
        ids: list[str] = []
        with open(soak.tmp / "ids-00.txt", "w", encoding="utf-8") as recorded:
            for n in range(soak.batch):
                for flow, saga_input, saga_id in (
                        (order_flow, inputs[n], f"r00-{n:05d}"),
                        (trip_flow, _trip_input(n), f"t-{n:05d}")):
                    assert slots.acquire(timeout=120), "no saga ended for 2 minutes"
                    client.submit(flow, saga_input, saga_id, on_end=on_end).result(60)
                    ids.append(saga_id)
                    if flow is order_flow:
                        recorded.write(saga_id + "\n")
                        recorded.flush()
        disturber.join(120)
        assert not chaos["errors"], chaos["errors"]
        assert chaos["kills"] == 5 and chaos["paused"] is not None, chaos
        for saga_id in ids:
            assert client.wait(saga_id, timeout=180).terminal
        problems = check(soak)
        assert not problems, problems[:20]
        audit = subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "--store",
                                soak.url], capture_output=True, text=True, timeout=300,
                               env=soak.env(), cwd=ROOT)
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]
        member, held = chaos["paused"]
        assert held, "the paused member held no partition"
        assert _written_after_losing(store, member, held, ids) == []
        print(f"\nmembers soak: {len(ids)} sagas, {chaos['kills']} kills, paused {member} "
              f"holding {len(held)} partitions; {json.dumps(soak.counts, default=str)}")
    finally:
        if client is not None:
            client.close()
        members.stop_all()
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_serve_is_taken_over_while_a_batch_runs(
        tmp_path: Path, postgres_store_url: str) -> None:  # noqa: F811
    # services answering in 50-100 ms, as remote ones may: the batch keeps its 200 in flight
    soak = MemberSoak(tmp_path, rounds=0, batch=2000, concurrency=200, trouble="0,0,0",
                      latency="0.05,0.1")
    soak.store_url = postgres_store_url
    flow = soak.flow  # the order flow on services answering in 10-40 ms, as remote ones do
    flow.write_text(FLOW.replace("INSTANCES", "32").replace("LONG_TIMEOUT", "5s")
                    .replace("TIMEOUT", "2s"))
    shop.init_db(str(soak.effects_db))
    members = Members(soak, [flow])
    store = open_store(soak.url)
    batch = None
    try:
        first, second = members.start(), members.start()
        eventually(lambda: _all_held(store, 2), 60,
                   what=lambda: f"2 members holding every partition\n{members.tail()}")
        victim = eventually(lambda: _member_of(store, first.pid), 10)
        survivor = eventually(lambda: _member_of(store, second.pid), 10)
        batch = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "run", str(flow), "--store", soak.url,
             "--input", json.dumps({"order_id": "o", "customer": "c1", "sku": "widget",
                                    "qty": 1, "amount": 5}),
             "--count", "2000", "--concurrency", "200", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=soak.env(),
            cwd=ROOT)

        def victim_drives() -> int:
            held = set(_held_by(store).get(victim, {}))
            return sum(1 for h in store.list(status="running")
                       if partition_of(h.saga_id, 64) in held) >= 100

        eventually(victim_drives, 120, interval=0.005,
                   what="the member to drive 100 of the batch's sagas")
        dead_partitions = set(_held_by(store)[victim])
        first.kill()
        first.wait(10)
        lease_end = max(i.expires_at for i in store.leases() if i.partition in dead_partitions)
        eventually(lambda: dead_partitions <= set(_held_by(store).get(survivor, {})), 30,
                   what="the survivor to hold the dead member's partitions")
        taken = time.time()  # the store's clock is this host's (a server on loopback)
        out, err = batch.communicate(timeout=300)
        assert batch.returncode == 0, err[-3000:]
        summary = json.loads(out)
        assert summary["count"] == 2000 and summary["completed"] == 2000, summary
        assert taken - lease_end <= 3.0, (taken, lease_end)
        audit = subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "--store",
                                soak.url], capture_output=True, text=True, timeout=300,
                               env=soak.env(), cwd=ROOT)
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]
    finally:
        if batch is not None and batch.poll() is None:
            batch.kill()
        members.stop_all()
        store.close()
