"""``saga run`` on PostgreSQL with no member alive: it is a temporary member (it holds every
partition while it drives its sagas, and gives them back when it ends), so a store nobody
serves still runs sagas; and a run that is a client of a member that then stops drives its
saga itself. (A client of ``saga serve``: tests/test_cli_serve_postgres.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sagas.errors import UnknownSaga
from sagas.stores import open_store
from tests.postgres_server import (  # noqa: F401 - fixtures
    PostgresServer,
    postgres_server,
    postgres_store_url,
)
from tests.support import SAGA_CODE, eventually, saga_cli

pytestmark = pytest.mark.slow  # a real PostgreSQL server and saga processes: CI runs these

ROOT = Path(__file__).resolve().parent.parent
ORDER_FLOW = "flows/order_inventory.yaml"
PAID_LATER = "flows/order_paid_later.yaml"  # waits for PaymentConfirmed
ORDER = '{"order_id":"o-1","sku":"widget","qty":1,"amount":25}'


def test_run_with_no_member_alive_is_a_temporary_member(postgres_store_url: str) -> None:  # noqa: F811
    url = postgres_store_url
    run = saga_cli("run", ORDER_FLOW, "--input", ORDER, "--id", "o-1", "--store", url,
                   timeout=120)
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert run.stdout.rstrip().endswith("completed"), run.stdout
    batch = saga_cli("run", ORDER_FLOW, "--input", ORDER, "--count", "20", "--store", url,
                     "--json", timeout=120)
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout)["completed"] == 20
    store = open_store(url, create=False)
    try:
        writers = {w.member for w in store.writers("o-1")}
        assert len(writers) == 1 and re.fullmatch(r"runtime-\w+", writers.pop() or "")
        assert store.members() == []  # each run left, its partitions given back
        assert not any(lease.held for lease in store.leases())
    finally:
        store.close()
    shown = saga_cli("members", "--store", url, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("no members: "), shown.stdout


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SAGA_CODE, "run", PAID_LATER, *args],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_client_whose_member_stops_drives_its_saga_itself(postgres_store_url: str) -> None:  # noqa: F811
    url = postgres_store_url
    first = _run("--input", json.dumps(paid_later("a-1")), "--id", "a-1", "--store", url)
    second = None
    store = open_store(url)
    try:
        member = eventually(lambda: _driver(store, "a-1"), 60,
                            what="the first run, a temporary member, drives its saga")
        second = _run("--input", json.dumps(paid_later("b-1")), "--id", "b-1", "--store", url)
        eventually(lambda: _driver(store, "b-1") == member, 60,
                   what="the second run, its client, has its saga driven by the first")
        paid = saga_cli("send", "PaymentConfirmed", "--key", "a-1", "--store", url, timeout=120)
        assert paid.returncode == 0, paid.stderr
        out, err = first.communicate(timeout=120)
        assert (first.returncode, err) == (0, ""), err
        assert out.rstrip().endswith("completed")  # and it left: nobody drives b-1 now
        paid = saga_cli("send", "PaymentConfirmed", "--key", "b-1", "--store", url, timeout=120)
        assert paid.returncode == 0, paid.stderr
        out, err = second.communicate(timeout=120)
        assert (second.returncode, err) == (0, ""), err
        assert out.rstrip().endswith("completed")
        drivers = [w.member for w in store.writers("b-1") if w.member is not None]
        assert drivers[0] == member and len(set(drivers)) == 2  # taken over by the client
        assert store.members() == []
    finally:
        store.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)


def paid_later(order_id: str) -> dict[str, object]:
    return {"order_id": order_id, "sku": "widget", "qty": 1}


def _driver(store: Any, saga_id: str) -> str | None:
    """The member that wrote the saga's last fenced event (``None`` before there is one)."""
    try:
        writers = store.writers(saga_id)
    except UnknownSaga:
        return None
    return next((w.member for w in reversed(writers) if w.member is not None), None)
