"""The remote services' soak (issue 17, point 7): every service in ``saga worker`` processes on a
real redis-server, workers killed with ``kill -9`` and the redis-server itself killed once.

Two workers host the services of the crash soak's durable order flow (``tests/soak_services``:
effects deduplicated per key, every handler run recorded with its worker's pid) and of
``flows/trip_booking.yaml``. This test is the orchestrator (SQLite store, every service remote)
and starts 1,000 sagas of each at concurrency 200 while a random worker is killed and restarted
five times and the redis-server is killed once and restarted (it runs ``appendfsync always``,
the setting the README recommends). At the end: every saga terminal, the crash soak's checks of
the order sagas' effects, ``saga audit`` clean, and from the services' own invocation records:

- no action ran after its compensation had run (compensations never overtake their action);
- a handler ran again for a key whose definitive answer was already given only when the worker
  that gave it was killed, or inside the redis-server's crash window (from a second before the
  kill until it answered again).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sagas import Runtime, load_flow
from tests import soak_services as shop
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import eventually
from tests.test_soak import FLOW, Soak, check

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TRIP = ROOT / "flows" / "trip_booking.yaml"
DEFINITIVE = ("succeeded", "rejected", "deduped")


class Workers:
    """``saga worker`` processes: started, killed by pid, remembered."""

    def __init__(self, soak: Soak, url: str, flows: list[Path]) -> None:
        self.soak, self.url, self.flows = soak, url, flows
        self.procs: list[subprocess.Popen[str]] = []
        self.killed: set[int] = set()

    def start(self) -> subprocess.Popen[str]:
        log = self.soak.tmp / f"worker-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "worker", *map(str, self.flows), "--broker",
             self.url, "--concurrency", "64"], stdout=subprocess.DEVNULL,
            stderr=log.open("w"), env=self.soak.env(), cwd=ROOT, text=True)
        self.procs.append(proc)
        eventually(lambda: "serving" in log.read_text(), 30, what=lambda: log.read_text())
        return proc

    def live(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[str]) -> None:
        self.killed.add(proc.pid)
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.live():
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _trip_input(n: int) -> dict[str, Any]:
    return {"trip_id": f"t-{n:05d}", "traveller": f"trav{n % 50}", "flight": "LH-400",
            "hotel": "grand", "car": "compact", "nights": 1 + n % 5}


def _max_invocation(path: Path) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute("SELECT coalesce(max(id), 0) FROM invocations").fetchone()[0]
    finally:
        db.close()


def _invocation_problems(path: Path, killed: set[int], window: tuple[int, int]) -> list[str]:
    db = sqlite3.connect(path, timeout=30)
    try:
        rows = db.execute("SELECT id, key, phase, pid, outcome FROM invocations "
                          "ORDER BY id").fetchall()
    finally:
        db.close()
    problems: list[str] = []
    by_key: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for row_id, key, phase, pid, outcome in rows:
        by_key[(key, phase)].append((row_id, pid, outcome))
    for (key, phase), runs in by_key.items():
        if phase == "compensation":
            action = by_key.get((key.removesuffix(":compensation"), "action"), [])
            first = runs[0][0]
            late = [r for r in action if r[0] > first and r[2] in ("succeeded", "error_after")]
            if late:
                problems.append(f"{key}: the action applied its effect after its compensation "
                                f"ran (invocations {late} after {first})")
        definitive = next((r for r in runs if r[2] in DEFINITIVE), None)
        if definitive is None:
            continue
        again = [r for r in runs if r[0] > definitive[0]]
        lost_with = definitive[1] in killed or window[0] <= definitive[0] <= window[1]
        if again and not lost_with:
            problems.append(f"{key} ({phase}): run again {again} after its definitive answer "
                            f"{definitive}, by a worker that was not killed, outside the "
                            f"redis-server's crash window {window}")
    return problems


def test_remote_services_soak(redis_server, redis_url, tmp_path):  # noqa: F811
    soak = Soak(tmp_path, rounds=0, batch=1000, concurrency=200, instances=8)
    soak.flow.write_text(FLOW.replace("INSTANCES", str(soak.instances))
                         .replace("LONG_TIMEOUT", soak.long_timeout)
                         .replace("TIMEOUT", soak.timeout))
    shop.init_db(str(soak.effects_db))
    client = redis_server.client()
    client.config_set("appendfsync", "always")  # no definitive reply or tombstone lost
    rng = random.Random(soak.seed)
    workers = Workers(soak, redis_url, [soak.flow, TRIP])
    chaos: dict[str, Any] = {"kills": 0, "window": (0, -1), "errors": []}
    stop_chaos = threading.Event()
    runtime = None
    try:
        workers.start()
        workers.start()
        runtime = Runtime(soak.url, broker=redis_url, remote="all")
        order_flow, trip_flow = load_flow(soak.flow), load_flow(TRIP)
        slots = threading.BoundedSemaphore(soak.concurrency)

        def disturb() -> None:
            try:
                for n in range(6):
                    if stop_chaos.wait(rng.uniform(1.0, 3.0)):
                        return
                    if n == 3:  # the broker itself, once, in the middle
                        start = _max_invocation(soak.effects_db)
                        redis_server.kill9()
                        stop_chaos.wait(rng.uniform(0.5, 1.5))
                        redis_server.restart()
                        redis_server.client().config_set("appendfsync", "always")
                        time.sleep(1.0)  # the behaviour under test: workers reconnecting
                        chaos["window"] = (start, _max_invocation(soak.effects_db))
                        continue
                    workers.kill(rng.choice(workers.live()))
                    chaos["kills"] += 1
                    if stop_chaos.wait(rng.uniform(0.2, 1.0)):
                        return
                    workers.start()
            except Exception as exc:
                chaos["errors"].append(repr(exc))

        disturber = threading.Thread(target=disturb, daemon=True)
        disturber.start()
        inputs = shop.inputs_for(0, soak.batch)
        ids: list[str] = []
        with open(soak.tmp / "ids-00.txt", "w", encoding="utf-8") as recorded:
            for n in range(soak.batch):
                for flow, saga_input, saga_id in ((order_flow, inputs[n], f"r00-{n:05d}"),
                                                  (trip_flow, _trip_input(n), f"t-{n:05d}")):
                    assert slots.acquire(timeout=180), "no saga ended for 3 minutes"
                    runtime.submit(flow, saga_input, saga_id,
                                   on_end=lambda *_: slots.release()).result(60)
                    ids.append(saga_id)
                    if flow is order_flow:
                        recorded.write(saga_id + "\n")
                        recorded.flush()
        disturber.join(120)
        assert not chaos["errors"], chaos["errors"]
        assert chaos["kills"] == 5 and chaos["window"][1] >= 0, chaos
        for saga_id in ids:
            assert runtime.wait(saga_id, timeout=300).terminal, saga_id
        problems = check(soak)
        assert not problems, problems[:20]
        assert _invocation_problems(soak.effects_db, workers.killed, chaos["window"]) == []
        audit = subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "--store",
                                soak.url], capture_output=True, text=True, timeout=300,
                               env=soak.env(), cwd=ROOT)
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]
        print(f"\nremote soak: {len(ids)} sagas, {chaos['kills']} worker kills, redis-server "
              f"killed once; {json.dumps(soak.counts, default=str)}")
    finally:
        stop_chaos.set()
        if runtime is not None:
            runtime.close(timeout=5)
        workers.stop()
