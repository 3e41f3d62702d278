"""``saga dead-letters list|replay|purge`` (sagas.remote.deadletters, sagas.commands.dead_letters;
issue 17) against a real redis-server: dead letters made by a worker that gives up on a command
delivered too often (or that is no command), listed, replayed to a worker that then runs them,
and purged; through the library in this process, then through the ``saga`` command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sagas.commands import UsageProblem, dead_letters
from sagas.language.loader import parse_flow
from sagas.remote.broker import BrokerUnavailable
from sagas.remote.deadletters import find_dead_letters, replay
from sagas.remote.worker import Worker
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import eventually, saga_cli
from tests.worker_fixtures import redis_client, reply_to, worker_starter  # noqa: F401 (fixtures)
from tests.worker_services import PROBE_FLOW, command, poison, runs, send

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

FLOW = parse_flow(PROBE_FLOW, source="<probe>")
DEAD = "sagactor:dead:probe"


WORKER_OPTIONS = {"max_deliveries": 2, "claim_idle": 0.05}


def make_dead_letters(client: Any, start_worker: Any, log: Path) -> Worker:
    """A body that is no command on ``other``, then two commands of ``probe`` delivered too
    often (s1, s2), dead-lettered by workers (max_deliveries 2) that go on running; the
    probe's worker is returned. (One after the other, so that no two have the same id.)"""
    client.xadd("sagactor:commands:other", {"body": "not json"})
    start_worker(services=["other"])
    eventually(lambda: client.xlen("sagactor:dead:other") == 1 or None, what="a dead letter")
    poison(client, command("s1:first", log), deliveries=5)
    poison(client, command("s2:first", log, attempt=3), deliveries=5)
    worker = start_worker(services=["probe"])
    eventually(lambda: client.xlen(DEAD) == 2 or None, what="2 dead letters of probe")
    assert [reply["outcome"] for reply in reply_to(client, "s1:first")] == ["error"]
    return worker


def test_dead_letters_are_listed_with_what_they_were(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    worker = make_dead_letters(client, start_worker, log)
    every = dead_letters("list", redis_url)
    assert every.services == ["other", "probe"] and len(every.letters) == 3
    junk, first, second = every.letters
    assert (junk.service, junk.command, junk.saga_id) == ("other", None, None)
    assert "not a command" in junk.reason and junk.why_not_replayable is not None
    assert (first.service, first.saga_id, first.step, first.phase, first.attempt,
            first.handler, first.key) == ("probe", "s1", "first", "action", 1, "act",
                                          "s1:first")
    assert first.deliveries == 6 and first.worker == worker.name
    assert "dead-lettered after 6 deliveries" in first.reason
    assert second.attempt == 3 and first.why_not_replayable is None
    assert abs(first.when - client.time()[0]) < 60
    only = dead_letters("list", redis_url, "probe")
    assert [letter.entry_id for letter in only.letters] == [first.entry_id, second.entry_id]
    document = only.to_json()
    assert document["action"] == "list" and document["services"] == ["probe"]
    assert document["dead_letters"][0]["saga_id"] == "s1"
    assert json.loads(document["dead_letters"][0]["body"])["key"] == "s1:first"
    text = only.render()
    assert "2 dead letters of probe on redis://127.0.0.1:" in text and "s1" in text
    assert first.entry_id in text and "deliveries" in text
    assert dead_letters("list", redis_url, "nobody").render().startswith(
        "no dead letters of nobody on ")
    assert runs(log) == []


def test_a_replayed_command_is_run_by_a_worker_and_leaves_the_dead_letters(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    make_dead_letters(client, start_worker, log)
    first = dead_letters("list", redis_url, "probe").letters[0]
    done = dead_letters("replay", redis_url, None, [first.entry_id])
    assert [letter.entry_id for letter in done.letters] == [first.entry_id]
    new_id = done.replayed_as[first.entry_id]
    assert client.xrange("sagactor:commands:probe", new_id, new_id)[0][1]["body"] == first.body
    assert [entry_id for entry_id, _ in client.xrange(DEAD)] != [] and not client.xrange(
        DEAD, first.entry_id, first.entry_id)
    ran = reply_to(client, "s1:first", 2)[1]
    assert (ran["outcome"], ran["replayed"], ran["attempt"]) == ("ok", False, 1)
    assert [run[1] for run in runs(log)] == ["s1:first"]
    assert "replayed probe " + first.entry_id in done.render()
    assert done.to_json()["dead_letters"][0]["replayed_as"] == new_id


def test_a_replay_of_a_key_the_saga_had_answered_since_does_not_run_it_again(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    make_dead_letters(client, start_worker, log)
    send(client, command("s1:first", log, attempt=2))  # the saga's retry, answered
    assert reply_to(client, "s1:first", 2)[1]["outcome"] == "ok"
    first = dead_letters("list", redis_url, "probe").letters[0]
    dead_letters("replay", redis_url, "probe", [first.entry_id])
    replayed = reply_to(client, "s1:first", 3)[2]
    assert (replayed["outcome"], replayed["replayed"], replayed["attempt"]) == ("ok", True, 1)
    assert [run[1] for run in runs(log)] == ["s1:first"]


def test_a_replay_of_an_action_compensated_since_is_rejected_without_running(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    make_dead_letters(client, start_worker, log)
    send(client, command("s1:first:compensation", log))  # the saga compensated the step
    assert reply_to(client, "s1:first:compensation")[0]["outcome"] == "ok"
    first = dead_letters("list", redis_url, "probe").letters[0]
    dead_letters("replay", redis_url, "probe", [first.entry_id])
    replayed = reply_to(client, "s1:first", 2)[1]
    assert (replayed["outcome"], replayed["replayed"]) == ("rejected", True)
    assert "compensated before it ran" in replayed["reason"]
    assert [run[1] for run in runs(log)] == ["s1:first:compensation"]


def test_replay_all_skips_what_is_no_command_and_purge_deletes(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    make_dead_letters(client, start_worker, log)
    junk = dead_letters("list", redis_url, "other").letters[0]
    with pytest.raises(UsageProblem, match=f"dead letter {junk.entry_id} of other is not a "
                                           "command that can run.*purge it"):
        dead_letters("replay", redis_url, "other", [junk.entry_id])
    done = dead_letters("replay", redis_url, every=True)
    assert sorted(letter.key for letter in done.letters) == ["s1:first", "s2:first"]
    assert [(letter.entry_id, why.split(" (")[0]) for letter, why in done.skipped] == [
        (junk.entry_id, "not a command that can run")]
    reply_to(client, "s2:first", 2)
    assert sorted(run[1] for run in runs(log)) == ["s1:first", "s2:first"]
    assert client.xlen(DEAD) == 0 and client.xlen("sagactor:dead:other") == 1
    purged = dead_letters("purge", redis_url, None, [junk.entry_id])
    assert [letter.entry_id for letter in purged.letters] == [junk.entry_id]
    assert client.xlen("sagactor:dead:other") == 0
    assert purged.render().endswith("1 dead letter purged")
    assert dead_letters("purge", redis_url, every=True).letters == []


def test_ids_that_are_no_dead_letters_are_refused_before_anything_is_done(
        client, start_worker, redis_url, tmp_path):  # noqa: F811
    make_dead_letters(client, start_worker, tmp_path / "log")
    first = dead_letters("list", redis_url, "probe").letters[0]
    with pytest.raises(UsageProblem, match=r"^no dead letters 1-1, nonsense in the dead letters "
                                           r"of other, probe$"):
        dead_letters("purge", redis_url, None, [first.entry_id, "1-1", "nonsense"])
    with pytest.raises(UsageProblem, match=r"^no dead letter 1-1 in sagactor:dead:probe$"):
        dead_letters("replay", redis_url, "probe", ["1-1"])
    with pytest.raises(UsageProblem, match="no dead letter"):  # it is another service's
        dead_letters("purge", redis_url, "other", [first.entry_id])
    assert client.xlen(DEAD) == 2
    for action, ids, every in (("replay", (), False), ("purge", ["1-1"], True),
                               ("list", ["1-1"], False)):
        with pytest.raises(UsageProblem):
            dead_letters(action, redis_url, None, ids, every)


def test_the_same_id_in_two_services_dead_letters_needs_a_service(client, redis_url):  # noqa: F811
    body = {"body": json.dumps(command("s1:first", Path("log"))), "reason": "r"}
    client.xadd(DEAD, body, id="5-1")
    client.xadd("sagactor:dead:other", body, id="5-1")
    with pytest.raises(UsageProblem, match="is in the dead letters of other, probe: say which"):
        dead_letters("purge", redis_url, None, ["5-1"])
    assert len(dead_letters("purge", redis_url, "other", ["5-1"]).letters) == 1
    assert client.xlen(DEAD) == 1


def test_a_dead_letter_is_replayed_once_even_by_two_replays(client, redis_url):  # noqa: F811
    client.xadd(DEAD, {"body": json.dumps(command("s1:first", Path("log"))), "reason": "r"})
    [letter] = find_dead_letters(client, [client.xrange(DEAD)[0][0]], ["probe"])
    [(_, new_id)] = replay(client, [letter])
    [(_, again)] = replay(client, [letter])  # listed before the first replay moved it
    assert new_id is not None and again is None
    assert client.xlen("sagactor:commands:probe") == 1 and client.xlen(DEAD) == 0


def test_a_broker_that_cannot_be_used_is_broker_unavailable(redis_server):  # noqa: F811
    with pytest.raises(BrokerUnavailable, match=r"broker redis://:\*\*\*@127.0.0.1:1/0 cannot"):
        dead_letters("list", "redis://:pw@127.0.0.1:1/0")
    with pytest.raises(UsageProblem, match="is not a Redis URL"):
        dead_letters("list", "http://127.0.0.1/")


@pytest.mark.slow
def test_the_saga_dead_letters_command(client, start_worker, redis_url, tmp_path):  # noqa: F811
    log = tmp_path / "log"
    make_dead_letters(client, start_worker, log)
    broker = ("--broker", redis_url)
    listed = saga_cli("dead-letters", "list", *broker)
    assert listed.returncode == 0, listed.stderr
    for column in ("entry", "saga", "deliveries", "reason", "worker", "when"):
        assert column in listed.stdout
    assert "3 dead letters of other, probe on redis://127.0.0.1:" in listed.stdout
    document = json.loads(saga_cli("dead-letters", "list", "--service", "probe", "--json",
                                   *broker).stdout)
    first, second = (entry["entry"] for entry in document["dead_letters"])
    unknown = saga_cli("dead-letters", "replay", first, "1-1", *broker)
    assert unknown.returncode == 2 and unknown.stdout == ""
    [line] = unknown.stderr.splitlines()
    assert line.startswith("error: no dead letter 1-1 in the dead letters of other, probe (see")
    replayed = saga_cli("dead-letters", "replay", first, "--json", *broker)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["dead_letters"][0]["key"] == "s1:first"
    assert reply_to(client, "s1:first", 2)[1]["outcome"] == "ok"
    purged = saga_cli("dead-letters", "purge", "--all", *broker,
                      env={"SAGA_BROKER": redis_url, "PATH": "/usr/bin:/bin"})
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines()[-1] == "2 dead letters purged" and second in purged.stdout
    assert client.xlen(DEAD) == 0 and client.xlen("sagactor:dead:other") == 0
    from_env = saga_cli("dead-letters", "list", env={"SAGA_BROKER": redis_url})
    assert from_env.returncode == 0 and from_env.stdout.startswith("no dead letters")
    gone = saga_cli("dead-letters", "list", "--broker", "redis://:pw@127.0.0.1:1/0")
    assert gone.returncode == 6 and len(gone.stderr.splitlines()) == 1
    assert "pw" not in gone.stderr
    usage = saga_cli("dead-letters", "purge", *broker)
    assert usage.returncode == 2 and "give the entry IDs" in usage.stderr
