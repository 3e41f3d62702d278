"""What keeps the broker from growing forever (sagas.remote.retention, the worker's
housekeeping; issue 17) against a real redis-server: streams trimmed of what every group has
acknowledged, never of an entry pending or not yet delivered; inbox entries removed once older
than their retention (the clock injected), newer ones kept; and the worker's warning about a
broker that does not fsync every write.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from sagas.language.loader import parse_flow
from sagas.remote.retention import expire_inbox, trim_acknowledged
from sagas.remote.worker import (
    RETENTION_ENV,
    Worker,
    durability_warning,
    inbox_retention_from_env,
)
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import eventually
from tests.worker_fixtures import redis_client, reply_to, worker_starter  # noqa: F401 (fixtures)
from tests.worker_services import PROBE_FLOW, command, runs, send

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

GROUP = "sagactor:workers"
STREAM = "sagactor:commands:probe"
INBOX = "sagactor:inbox:probe"
TIMES = "sagactor:inbox-times:probe"
FLOW = parse_flow(PROBE_FLOW, source="<probe>")


def ids(client: Any, stream: str = STREAM) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(stream)]


# -- trimming --------------------------------------------------------------------------------


def test_trimming_removes_what_is_acknowledged_up_to_the_oldest_pending(client):
    entries = [client.xadd(STREAM, {"n": str(n)}) for n in range(10)]
    assert trim_acknowledged(client, STREAM, GROUP) == 0  # no group: nobody read it
    client.xgroup_create(STREAM, GROUP, id="0")
    assert trim_acknowledged(client, STREAM, GROUP) == 0  # nothing delivered
    client.xreadgroup(GROUP, "a", {STREAM: ">"}, count=6)  # 0-5 delivered, 6-9 not
    client.xack(STREAM, GROUP, entries[0], entries[1], entries[2], entries[4])
    assert trim_acknowledged(client, STREAM, GROUP) == 3  # 3 is pending
    assert ids(client) == entries[3:]
    client.xack(STREAM, GROUP, entries[3])
    assert trim_acknowledged(client, STREAM, GROUP) == 2  # 5 is pending
    assert ids(client) == entries[5:]
    client.xack(STREAM, GROUP, entries[5])
    assert trim_acknowledged(client, STREAM, GROUP) == 1  # 6-9 were never delivered
    assert ids(client) == entries[6:]
    assert trim_acknowledged(client, STREAM, GROUP) == 0
    client.xreadgroup(GROUP, "b", {STREAM: ">"})
    client.xack(STREAM, GROUP, *entries[6:])
    assert trim_acknowledged(client, STREAM, GROUP) == 4 and client.xlen(STREAM) == 0
    later = client.xadd(STREAM, {"n": "10"})
    assert trim_acknowledged(client, STREAM, GROUP) == 0 and ids(client) == [later]


def test_trimming_waits_for_every_group_of_the_stream(client):
    entries = [client.xadd(STREAM, {"n": str(n)}) for n in range(4)]
    client.xgroup_create(STREAM, GROUP, id="0")
    client.xgroup_create(STREAM, "auditors", id="0")
    client.xreadgroup(GROUP, "a", {STREAM: ">"})
    client.xack(STREAM, GROUP, *entries)
    client.xreadgroup("auditors", "x", {STREAM: ">"}, count=2)
    assert trim_acknowledged(client, STREAM, GROUP) == 0  # the auditors hold 0 and 1
    client.xack(STREAM, "auditors", entries[0])
    assert trim_acknowledged(client, STREAM, GROUP) == 1 and ids(client) == entries[1:]
    assert trim_acknowledged(client, "sagactor:commands:nobody", GROUP) == 0
    client.xgroup_create("sagactor:commands:other", "auditors", id="0", mkstream=True)
    client.xadd("sagactor:commands:other", {"n": "0"})
    client.xreadgroup("auditors", "x", {"sagactor:commands:other": ">"})
    client.xack("sagactor:commands:other", "auditors", ids(client, "sagactor:commands:other")[0])
    assert trim_acknowledged(client, "sagactor:commands:other", GROUP) == 0  # not its group


def test_trimming_never_removes_a_pending_or_undelivered_entry(client):
    """Random reads, acknowledgements, claims and trims by three consumers of two groups:
    after each trim, every entry pending or undelivered in either group is still there."""
    rng = random.Random(17)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.xgroup_create(STREAM, "others", id="0")
    pending: dict[str, set[str]] = {GROUP: set(), "others": set()}
    added: list[str] = []
    delivered = {GROUP: 0, "others": 0}  # how many of `added` each group was given
    trimmed = 0
    for _ in range(400):
        move = rng.random()
        group = rng.choice([GROUP, "others"])
        if move < 0.3:
            added += [client.xadd(STREAM, {"n": "x"}) for _ in range(rng.randint(1, 3))]
        elif move < 0.55:
            found = client.xreadgroup(group, rng.choice("abc"), {STREAM: ">"},
                                      count=rng.randint(1, 4))
            got = [entry_id for _, items in found for entry_id, _ in items]
            pending[group].update(got)
            delivered[group] += len(got)
        elif move < 0.8 and pending[group]:
            done = rng.sample(sorted(pending[group]), rng.randint(1, len(pending[group])))
            client.xack(STREAM, group, *done)
            pending[group].difference_update(done)
        elif move < 0.85 and pending[group]:
            client.xclaim(STREAM, group, rng.choice("abc"), 0, sorted(pending[group])[:2])
        else:
            trimmed += trim_acknowledged(client, STREAM, GROUP)
            present = set(ids(client))
            for name in pending:
                assert pending[name] <= present
                assert set(added[delivered[name]:]) <= present
    assert trimmed > 50


def test_the_worker_trims_its_streams_but_keeps_what_it_holds_and_what_is_unread(
        client, start_worker, tmp_path):
    log = tmp_path / "log"
    worker = start_worker(concurrency=1, housekeeping=0.1)
    done = send(client, command("s1:first", log))
    send(client, command("s1:second", log, service="other"), service="other")
    reply_to(client, "s1:first")
    reply_to(client, "s1:second")
    held = send(client, command("s2:first", log, hold_first=True))
    eventually(lambda: len(runs(log)) == 3 or None, what="the third handler running")
    unread = [send(client, command(f"s{n}:first", log)) for n in (3, 4)]
    eventually(lambda: done not in ids(client) or None, what="the answered entry trimmed")
    eventually(lambda: client.xlen("sagactor:commands:other") == 0 or None,
               what="the other stream trimmed")
    assert ids(client) == [held, *unread]  # pending (held), then never delivered (no room)
    assert client.xpending(STREAM, GROUP)["min"] == held
    assert worker.stop(timeout=0.2) is False


# -- the inbox -------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_inbox_entries_older_than_the_retention_are_removed_and_newer_kept(
        client, start_worker, tmp_path):
    log = tmp_path / "log"
    clock = Clock(1_000_000.0)
    client.hset(INBOX, "old:first", json.dumps({"outcome": "ok", "result": {}}))  # no time
    worker = start_worker(inbox_retention=100.0, clock=clock, housekeeping=3600)
    assert worker.housekeeping() == (0, 0)  # the untimed entry gets the time it is seen
    assert client.zscore(TIMES, "old:first") == 1_000_000.0
    send(client, command("s1:first", log))
    send(client, command("s2:first:compensation", log))  # and a tombstone under s2:first
    reply_to(client, "s1:first")
    reply_to(client, "s2:first:compensation")
    clock.now += 50
    send(client, command("s3:first", log, reject="no"))
    reply_to(client, "s3:first")
    assert client.zrange(TIMES, 0, -1, withscores=True) == [
        ("old:first", 1_000_000.0), ("s1:first", 1_000_000.0), ("s2:first", 1_000_000.0),
        ("s2:first:compensation", 1_000_000.0), ("s3:first", 1_000_050.0)]
    clock.now += 50  # 100 s after the first ones: exactly the retention, kept
    assert worker.housekeeping()[1] == 0
    clock.now += 1
    assert worker.housekeeping()[1] == 4
    assert client.hkeys(INBOX) == ["s3:first"] and client.zrange(TIMES, 0, -1) == ["s3:first"]
    send(client, command("s1:first", log, attempt=2))  # its entry gone: it runs again
    again = reply_to(client, "s1:first", 2)[1]
    assert again["replayed"] is False and [run[1] for run in runs(log)].count("s1:first") == 2
    assert client.zscore(TIMES, "s1:first") == 1_000_101.0
    clock.now += 100
    assert worker.housekeeping()[1] == 1 and client.hkeys(INBOX) == ["s1:first"]


def test_a_tombstone_keeps_the_time_of_the_entry_it_does_not_replace(client, start_worker,
                                                                      tmp_path):
    log = tmp_path / "log"
    clock = Clock(5000.0)
    start_worker(inbox_retention=100.0, clock=clock, housekeeping=3600)
    send(client, command("s1:first", log))
    reply_to(client, "s1:first")
    clock.now += 60
    send(client, command("s1:first:compensation", log))
    reply_to(client, "s1:first:compensation")
    assert client.zscore(TIMES, "s1:first") == 5000.0  # the action's reply, kept as it was
    assert client.zscore(TIMES, "s1:first:compensation") == 5060.0


def test_expiring_goes_in_batches(client):
    for n in range(25):
        client.hset(INBOX, f"k{n}", "{}")
        client.zadd(TIMES, {f"k{n}": float(n)})
    assert expire_inbox(client, INBOX, TIMES, 20.0, batch=4, max_batches=2) == 8
    assert expire_inbox(client, INBOX, TIMES, 20.0, batch=4) == 12
    assert client.hlen(INBOX) == 5 and client.zcard(TIMES) == 5
    assert sorted(client.hkeys(INBOX)) == sorted(client.zrange(TIMES, 0, -1))


def test_the_retention_comes_from_the_environment_or_is_a_week():
    assert inbox_retention_from_env({}) == 7 * 86400
    assert inbox_retention_from_env({RETENTION_ENV: " 0.5 "}) == 43200
    assert inbox_retention_from_env({RETENTION_ENV: "inf"}) == float("inf")
    for bad in ("0", "-1", "a week", "nan"):
        with pytest.raises(ValueError, match=f"{RETENTION_ENV} is a number of days above 0"):
            inbox_retention_from_env({RETENTION_ENV: bad})
    with pytest.raises(ValueError, match="inbox_retention is a number of seconds above 0"):
        Worker("redis://127.0.0.1:1/0", [FLOW], inbox_retention=0)


def test_the_worker_reads_the_retention_from_the_environment(monkeypatch):
    monkeypatch.setenv(RETENTION_ENV, "2")
    assert Worker("redis://127.0.0.1:1/0", [FLOW]).inbox_retention == 2 * 86400
    monkeypatch.setenv(RETENTION_ENV, "soon")
    with pytest.raises(ValueError, match=RETENTION_ENV):
        Worker("redis://127.0.0.1:1/0", [FLOW])


# -- durability ------------------------------------------------------------------------------


def test_the_worker_warns_unless_every_write_is_fsynced(client, start_worker, caplog):
    with caplog.at_level("WARNING", logger="sagas.remote.worker"):
        worker = start_worker()
    assert worker.durability is not None
    assert "runs with appendfsync everysec" in worker.durability
    assert "run it with appendfsync always" in worker.durability
    assert [r.getMessage() for r in caplog.records].count(
        f"worker {worker.name}: {worker.durability}") == 1
    client.config_set("appendfsync", "always")
    assert start_worker().durability is None
    client.config_set("appendonly", "no")
    assert "runs with appendonly no" in str(durability_warning(client, "redis://x"))


def test_a_server_that_refuses_config_is_taken_as_it_is():
    class NoConfig:
        def config_get(self, name: str) -> Any:
            raise RuntimeError("ERR unknown command 'CONFIG'")

    assert durability_warning(NoConfig(), "redis://x") is None


def test_entries_written_without_a_time_are_given_the_time_they_are_first_seen(
        client, start_worker):
    client.hset(INBOX, mapping={f"k{n}": "{}" for n in range(1500)})
    worker = start_worker(inbox_retention=10.0, clock=Clock(70.0), housekeeping=3600)
    worker.housekeeping()
    assert client.zcard(TIMES) == 1500 and client.zrange(TIMES, 0, 0, withscores=True)[0][1] == 70
    assert worker.housekeeping() == (0, 0)
