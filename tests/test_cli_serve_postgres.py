"""``saga serve`` on PostgreSQL is the long-running member: it needs no trigger there, ``saga
members`` shows it holding the store's partitions, the sagas ``saga run`` starts from another
shell are driven by it (``run`` is its client, and refuses ``--fail``), a batch run as its
client reports its throughput, and once it is killed ``saga resume`` finishes what it left."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas import Runtime
from sagas.stores import open_store
from tests.postgres_server import (  # noqa: F401 - fixtures
    PostgresServer,
    postgres_server,
    postgres_store_url,
)
from tests.support import SAGA_CODE, eventually, one_clear_line, read_until, saga_cli

pytestmark = pytest.mark.slow  # a real PostgreSQL server and saga processes: CI runs these

ROOT = Path(__file__).resolve().parent.parent
ORDER_FLOW = "flows/order_inventory.yaml"
TRIP_FLOW = "flows/trip_booking.yaml"  # no trigger
PAID_LATER = "flows/order_paid_later.yaml"  # no trigger; waits for PaymentConfirmed
ORDER = '{"order_id":"o-1","sku":"widget","qty":1,"amount":25}'
SECRET = "s3cret-Pa55"
MEMBER_LINE = re.compile(r"member (\S+) serving on (\S+): partitions (\S+) of (\d+), leases of "
                         r"(\S+)s")


@pytest.fixture
def secret_url(postgres_server: PostgresServer, postgres_store_url: str) -> str:  # noqa: F811
    """The test's store URL with a password in it (trust authentication takes any)."""
    return postgres_server.url(postgres_store_url.rsplit("/", 1)[1], password=SECRET)


def _masked(url: str) -> str:
    return url.replace(f":{SECRET}@", ":***@")


class Served:
    """A ``saga serve`` process and what it said as it started."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "serve", *args],
                                     cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.said = read_until(self.proc.stderr, lambda line: line.startswith("member "), 60)
        found = MEMBER_LINE.fullmatch(self.said[-1].strip())
        assert found is not None, self.said
        self.member, self.store, self.partitions, self.count, self.ttl = found.groups()

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, a clean stop: its exit code, and the rest of its stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=60)


@pytest.fixture
def served(secret_url: str) -> Iterator[Served]:
    """``saga serve`` of a flow without a trigger, as the store's member, for the test."""
    server = Served(TRIP_FLOW, "--store", secret_url, "--for", "300")
    try:
        yield server
    finally:
        server.kill()


def _members(url: str) -> dict:
    proc = saga_cli("members", "--store", url, "--json", timeout=120)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    return json.loads(proc.stdout)


def _driven_by(store: Any, saga_id: str) -> str:
    """The member that wrote the saga's events after its start (the start, unfenced, is what
    the client wrote: ``saga.started`` and the first step's ``step.started``)."""
    writers = [w.member for w in store.writers(saga_id)]
    start = writers.index(next(m for m in writers if m is not None))
    assert start > 0 and set(writers[:start]) == {None}, writers
    (member,) = set(writers[start:])
    return member


def test_serve_is_the_member_that_drives_what_run_starts(served: Served, secret_url: str) -> None:
    url = secret_url
    assert (served.store, served.partitions, served.count, served.ttl) == \
        (_masked(url), "0-63", "64", "2")
    assert SECRET not in "".join(served.said)
    serving = read_until(served.proc.stderr, lambda line: line.startswith("serving "), 30)
    assert serving[-1].strip() == ("serving trip_booking: drives its sagas, started from any "
                                   "shell; stop with Ctrl-C")

    store = open_store(url, create=False)
    try:  # the flows it runs are in its next heartbeat (a quarter of a lease later)
        eventually(lambda: [m.info.get("runs") for m in store.members()] == [["trip_booking"]],
                   10, what="the member says it runs trip_booking")
    finally:
        store.close()
    shown = _members(url)
    assert (shown["store"], shown["partitions"], shown["unheld_partitions"],
            shown["undriven"]) == (_masked(url), 64, [], [])
    (member,) = shown["members"]
    assert (member["member"], member["alive"], member["pid"], member["host"]) == \
        (served.member, True, served.proc.pid, socket.gethostname())
    assert member["partitions"] == list(range(64))
    assert sorted(member["epochs"]) == sorted(str(p) for p in range(64))
    assert all(epoch >= 1 for epoch in member["epochs"].values())
    assert member["runs"] == ["trip_booking"]
    assert (member["undriven"], member["undriven_sagas"]) == (0, [])

    run = saga_cli("run", ORDER_FLOW, "--input", ORDER, "--id", "o-1", "--store", url,
                   timeout=120)
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert "saga.completed" in run.stdout, run.stdout
    store = open_store(url, create=False)
    try:
        assert _driven_by(store, "o-1") == served.member
        assert store.header("o-1").status == "completed"
        eventually(lambda: "order_inventory" in next(
            m.info["runs"] for m in store.members() if m.member == served.member), 10,
            what="the member says it runs the flow of the saga it drove")
    finally:
        store.close()

    code, out, err = served.stop()
    assert code == 0, err
    assert (out, "Traceback" in err) == ("", False)
    assert _members(url)["members"] == []  # it gave its partitions back as it left


def test_run_fail_with_a_member_alive_is_refused_in_one_line(served: Served,
                                                              secret_url: str) -> None:
    run = saga_cli("run", ORDER_FLOW, "--input", ORDER, "--fail", "charge_payment",
                   "--store", secret_url, timeout=120)
    assert (run.returncode, run.stdout) == (2, "")
    line = one_clear_line(run.stderr)
    assert line == (f"error: --fail needs the services in this process, but member "
                    f"{served.member} drives this store's sagas: stop them (saga serve) or use "
                    "a SQLite store")
    assert _members(secret_url)["undriven"] == []
    store = open_store(secret_url, create=False)
    try:
        assert store.list() == []  # nothing was started
    finally:
        store.close()


def test_a_batch_run_as_a_client_of_serve_reports_its_throughput(served: Served,
                                                                 secret_url: str) -> None:
    run = saga_cli("run", ORDER_FLOW, "--input", ORDER, "--count", "200", "--concurrency", "50",
                   "--store", secret_url, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"order_inventory: 200 sagas in \d+\.\d\ds \(\d+ sagas/s\)", lines[0]), \
        run.stdout
    assert lines[1:4] == ["  completed    200", "  compensated  0", "  failed       0"]
    store = open_store(secret_url, create=False)
    try:
        headers = store.list()
        assert len(headers) == 200 and {h.status for h in headers} == {"completed"}
        assert {_driven_by(store, h.saga_id) for h in headers[::20]} == {served.member}
    finally:
        store.close()


def test_resume_leaves_sagas_to_a_live_member_and_finishes_a_dead_ones(secret_url: str) -> None:
    url = secret_url
    server = Served(PAID_LATER, "--store", url, "--for", "300")
    try:
        with Runtime(url, client=True) as client:  # written for the member to drive
            client.start(PAID_LATER, {"order_id": "p-1", "sku": "widget", "qty": 1}, "p-1")
        store = open_store(url, create=False)
        try:
            eventually(lambda: any(w.member == server.member for w in store.writers("p-1")),
                       30, what="the member drives the saga to its wait")
            resume = saga_cli("resume", "--store", url, timeout=120)
            assert resume.returncode == 0, resume.stderr
            assert resume.stdout.strip() == "resumed 0 sagas: 0 completed, 0 compensated, 0 failed"
            assert one_clear_line(resume.stderr).startswith(
                f"note: member {server.member} drives this store's sagas")
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.communicate(timeout=60)
            eventually(lambda: _members(url)["members"][0]["alive"] is False, 30,
                       what="the killed member is seen dead")
            assert store.header("p-1").status == "running"
        finally:
            store.close()
        sent = saga_cli("send", "PaymentConfirmed", "--key", "p-1", "--store", url, timeout=120)
        assert sent.returncode == 0, sent.stderr
        resume = saga_cli("resume", "--store", url, timeout=120)
        assert (resume.returncode, resume.stderr) == (0, ""), resume.stderr
        assert resume.stdout.strip() == "resumed 1 sagas: 1 completed, 0 compensated, 0 failed"
        shown = _members(url)
        assert [(m["member"], m["alive"], m["partitions"]) for m in shown["members"]] == \
            [(server.member, False, [])]  # the temporary member left; the dead one is listed
        assert shown["unheld_partitions"] == list(range(64))
        assert shown["undriven"] == []
    finally:
        server.kill()


def test_a_batch_whose_member_stops_halfway_is_finished_by_the_run(served: Served,
                                                                   secret_url: str) -> None:
    batch = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "run", ORDER_FLOW, "--input",
                              ORDER, "--count", "1500", "--concurrency", "50", "--store",
                              secret_url, "--json"],
                             cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = open_store(secret_url, create=False)
    try:
        eventually(lambda: len(store.list(status="completed", limit=100)) == 100, 60,
                   what="the member has driven a hundred of the batch's sagas")
        code, _, err = served.stop()  # a clean stop, its partitions given back
        assert code == 0, err
        out, err = batch.communicate(timeout=300)
        assert batch.returncode == 0, err
        summary = json.loads(out)
        assert (summary["count"], summary["completed"], summary["failed"]) == (1500, 1500, 0)
        assert store.in_flight() == []
        last = store.list(limit=1)[0].saga_id
        assert _driven_by(store, last) != served.member  # the run's own member took over
    finally:
        store.close()
        if batch.poll() is None:
            batch.kill()
            batch.communicate(timeout=60)


LOCAL_SERVICES = '''
from actors import Service, handles


class Greeter(Service):
    @handles("greet")
    def greet(self, command):
        return {"greeted": command.payload["name"]}
'''
LOCAL_FLOW = """saga: local_greeting
services:
  greeter: local_greeter_services:Greeter
input:
  type: object
  required: [name]
steps:
  - name: greet
    service: greeter
    action: greet
    effects: none
    input: {name: $.input.name}
"""


def test_a_client_runs_a_flow_its_member_cannot_import(served: Served, secret_url: str,
                                                      tmp_path: Path) -> None:
    (tmp_path / "local_greeter_services.py").write_text(LOCAL_SERVICES)
    (tmp_path / "greeting.yaml").write_text(LOCAL_FLOW)  # its services import only here
    run = saga_cli("run", "greeting.yaml", "--input", '{"name": "ada"}', "--id", "g-1",
                   "--store", secret_url, cwd=tmp_path, timeout=120)
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert run.stdout.rstrip().endswith("completed"), run.stdout
    store = open_store(secret_url, create=False)
    try:
        driver = _driven_by(store, "g-1")
        assert driver != served.member  # the run's own member, given the partition
        assert [m.member for m in store.members()] == [served.member]  # and it left
        eventually(lambda: next(m.info for m in store.members())["undriven"] == 0, 10,
                   what="the member no longer reports the saga undriven")
    finally:
        store.close()


def test_resume_leaves_a_saga_whose_services_do_not_import_and_says_so(
        secret_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "local_greeter_services.py").write_text(LOCAL_SERVICES)
    (tmp_path / "greeting.yaml").write_text(LOCAL_FLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    with Runtime(secret_url, client=True) as client:  # written for a member; there is none
        client.start(str(tmp_path / "greeting.yaml"), {"name": "ada"}, "g-1")
    shown = _members(secret_url)
    assert [(s["saga_id"], s["why"]) for s in shown["undriven"]] == [("g-1", "unheld")]
    here = saga_cli("resume", "--store", secret_url, timeout=120)  # flows.* only, not greeter
    assert here.returncode == 0, here.stderr
    assert here.stdout.strip() == "resumed 0 sagas: 0 completed, 0 compensated, 0 failed"
    assert one_clear_line(here.stderr) == (
        "note: 1 saga was left in flight: their flows' services do not import here (a member "
        "that runs them finishes them; 'saga members' lists them)")
    there = saga_cli("resume", "--store", secret_url, cwd=tmp_path, timeout=120)
    assert (there.returncode, there.stderr) == (0, ""), there.stderr
    assert there.stdout.strip() == "resumed 1 sagas: 1 completed, 0 compensated, 0 failed"


def test_serve_http_on_postgresql_serves_the_console_over_what_the_member_drives(
        secret_url: str) -> None:
    pytest.importorskip("starlette", reason="the web extra")
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "serve", TRIP_FLOW, "--store",
                             secret_url, "--for", "300", "--http", "127.0.0.1:0"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = read_until(proc.stderr, lambda line: line.startswith("serving "), 60)
        (console,) = [line.split()[-1] for line in said if line.startswith("console on ")]
        assert SECRET not in "".join(said)
        trip = json.dumps({"trip_id": "t-1", "traveller": "ada", "flight": "LH-400",
                           "hotel": "adlon", "car": "compact", "nights": 2})
        run = saga_cli("run", TRIP_FLOW, "--input", trip, "--id", "t-1", "--store", secret_url,
                       "--json", timeout=120)
        assert run.returncode == 0, run.stderr

        def read(path: str) -> Any:
            with urllib.request.urlopen(console.rstrip("/") + path, timeout=10) as answer:
                return json.loads(answer.read())

        rows = eventually(lambda: read("/api/sagas?status=completed") or None, 30,
                          what="the saga the member drove, in the console's list")
        assert [row["saga_id"] for row in rows] == ["t-1"]
        members = read("/api/members")
        assert SECRET not in json.dumps(members)
        assert [m["pid"] for m in members["members"]] == [proc.pid]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
