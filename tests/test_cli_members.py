"""``saga members``: who drives a store's sagas, and which sagas nobody does — on stores with no
member (SQLite, as usual), with one (a member's heartbeat and leases written to a SQLite store,
which has leases too), and on a store that cannot be used. The PostgreSQL members themselves
(``saga serve``) are in tests/test_cli_serve_postgres.py."""

from __future__ import annotations

import json
from pathlib import Path

from sagas import Runtime
from sagas.stores import open_store, partition_of
from tests.support import one_clear_line, saga_cli

ROOT = Path(__file__).resolve().parent.parent
PAID_LATER = str(ROOT / "flows" / "order_paid_later.yaml")


def _members(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = saga_cli("members", *args, cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_store_without_members_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    open_store(url).close()
    code, out, err = _members("--store", url)
    assert (code, err) == (0, "")
    assert out.startswith("no members: "), out
    assert "64 partitions" in out
    code, out, err = _members("--store", url, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"store": url, "partitions": 64, "members": [],
                               "unheld_partitions": list(range(64)), "undriven": []}


def test_a_missing_store_is_exit_5_and_nothing_is_created(tmp_path: Path) -> None:
    code, out, err = _members("--store", "sqlite:///missing.db", cwd=tmp_path)
    assert (code, out) == (5, "")
    assert one_clear_line(err) == "error: no saga store at missing.db"
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_exit_5_in_one_line() -> None:
    code, out, err = _members("--store", "postgresql://saga:pw@127.0.0.1:1/x")
    assert (code, out) == (5, "")
    line = one_clear_line(err)
    assert line.startswith("error: saga store postgresql://saga:***@127.0.0.1:1/x cannot be "), line
    assert "pw" not in err


def test_a_url_without_a_user_is_a_usage_error() -> None:
    code, _, err = _members("--store", "postgresql://127.0.0.1:1/x")
    assert code == 2
    assert "no user named" in one_clear_line(err)


def test_a_member_its_partitions_and_the_sagas_nobody_drives(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}?partitions=4"
    with Runtime(url) as runtime:  # not a member: its saga waits for a payment, in flight
        runtime.start(PAID_LATER, {"order_id": "p-1", "sku": "widget", "qty": 1}, "p-1")
    waiting = partition_of("p-1", 4)
    others = [p for p in range(4) if p != waiting]
    store = open_store(url)
    try:
        store.heartbeat("m-1", {"host": "box", "pid": 7, "lease_ttl": 600.0,
                                "runs": ["order_inventory"], "undriven": 1,
                                "undriven_sagas": [{"saga_id": "t-1", "flow": "trip_booking"}]})
        store.acquire("m-1", others, 600.0)
        store.heartbeat("m-gone", {"host": "box", "pid": 8, "lease_ttl": 0.001})
    finally:
        store.close()

    code, out, err = _members("--store", url, "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert (shown["store"], shown["partitions"]) == (url.partition("?")[0], 4)
    member, gone = shown["members"]
    assert 0 <= member.pop("seen_ago") < 600 and member.pop("started_at") > 0
    assert member == {
        "member": "m-1", "host": "box", "pid": 7, "alive": True, "partitions": others,
        "epochs": {str(p): 1 for p in others}, "runs": ["order_inventory"], "undriven": 1,
        "undriven_sagas": [{"saga_id": "t-1", "flow": "trip_booking",
                            "partition": partition_of("t-1", 4)}]}
    assert (gone["member"], gone["alive"], gone["partitions"], gone["epochs"]) == \
        ("m-gone", False, [], {})
    assert shown["unheld_partitions"] == [waiting]
    assert shown["undriven"] == [
        {"saga_id": "p-1", "flow": "order_paid_later", "partition": waiting, "why": "unheld",
         "member": None},
        {"saga_id": "t-1", "flow": "trip_booking", "partition": partition_of("t-1", 4),
         "why": "cannot_run", "member": "m-1"}]

    code, out, err = _members("--store", url)
    assert (code, err) == (0, "")
    assert "m-1" in out and "box:7" in out and "order_inventory" in out
    assert f"1 of 2 members alive; 3 of 4 partitions held (unheld: {waiting}); " \
           "2 sagas in flight undriven" in out
    assert f"undriven p-1 (order_paid_later): no member holds partition {waiting}" in out
    assert "undriven t-1 (trip_booking): member m-1 cannot run flow trip_booking" in out
