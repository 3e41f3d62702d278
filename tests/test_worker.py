"""The worker (sagas.remote.worker, issue 17) against a real redis-server, driven the way an
orchestrator drives it: commands XADDed with plain redis-py, replies read off the reply stream.
The worker runs in this process (its threads); tests about processes (kill -9, SIGTERM, a
handler that kills its worker, the command line) are in ``test_worker_processes.py``.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from sagas.language.loader import parse_flow
from sagas.remote.broker import BadBrokerUrl, BrokerUnavailable, connect, masked_url
from sagas.remote.worker import hosted_services
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import eventually
from tests.worker_fixtures import redis_client, reply_to, worker_starter  # noqa: F401 (fixtures)
from tests.worker_services import PROBE_FLOW, command, replies, runs, send

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

GROUP = "sagactor:workers"
FLOW = parse_flow(PROBE_FLOW, source="<probe>")


def test_a_command_is_answered_ok_acknowledged_and_kept_in_the_inbox(client, start_worker,
                                                                     tmp_path):
    worker = start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log))
    [reply] = reply_to(client, "s1:first")
    assert reply["outcome"] == "ok" and reply["replayed"] is False
    assert reply["result"]["key"] == "s1:first" and reply["worker"] == worker.name
    assert reply["command_id"] == "s1:first#1" and reply["attempt"] == 1
    kept = json.loads(client.hget("sagactor:inbox:probe", "s1:first"))
    assert kept["outcome"] == "ok" and kept["result"] == reply["result"]
    assert eventually(lambda: client.xpending("sagactor:commands:probe", GROUP)["pending"] == 0
                      or None, what="the command acknowledged") is True
    assert len(runs(log)) == 1


def test_a_redelivered_command_is_answered_from_the_inbox_without_running(client, start_worker,
                                                                          tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log))
    [first] = reply_to(client, "s1:first")
    send(client, command("s1:first", log, attempt=2))
    second = reply_to(client, "s1:first", 2)[1]
    assert second["outcome"] == "ok" and second["replayed"] is True
    assert second["result"] == first["result"] and second["attempt"] == 2
    assert len(runs(log)) == 1


def test_a_command_whose_key_is_in_hand_waits_for_it_then_is_replayed(client, start_worker,
                                                                      tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log, sleep=0.3))
    send(client, command("s1:first", log, attempt=2, sleep=0.3))
    first, second = reply_to(client, "s1:first", 2)
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert len(runs(log)) == 1


def test_a_late_action_after_its_compensation_is_rejected_without_running(client, start_worker,
                                                                          tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first:compensation", log))
    [undone] = reply_to(client, "s1:first:compensation")
    assert undone["outcome"] == "ok" and undone["phase"] == "compensation"
    send(client, command("s1:first", log))
    [late] = reply_to(client, "s1:first")
    assert late["outcome"] == "rejected" and "compensated before it ran" in late["reason"]
    assert runs(log) == [[runs(log)[0][0], "s1:first:compensation", "compensation"]]


def test_an_action_that_ran_before_its_compensation_keeps_its_reply(client, start_worker,
                                                                    tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log))
    reply_to(client, "s1:first")
    send(client, command("s1:first:compensation", log))
    reply_to(client, "s1:first:compensation")
    send(client, command("s1:first", log, attempt=2))
    again = reply_to(client, "s1:first", 2)[1]
    assert again["outcome"] == "ok" and again["replayed"] is True


def test_an_unknown_protocol_version_is_answered_error_without_running(client, start_worker,
                                                                       tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log, protocol=2))
    [reply] = reply_to(client, "s1:first")
    assert reply["outcome"] == "error" and reply["protocol"] == 1
    assert "protocol version 2 is unknown" in reply["reason"]
    assert runs(log) == [] and client.hlen("sagactor:inbox:probe") == 0
    client.xadd("sagactor:commands:probe", {"body": json.dumps(
        {"protocol": 3, "reply_to": "sagactor:replies:7", "envelope": {"key": "s2:first"}})})
    eventually(lambda: len(replies(client)) == 2 or None, what="a reply to a version 3 body")
    assert replies(client)[1]["outcome"] == "error" and replies(client)[1]["key"] is None
    send(client, command("s3:first", log))  # and the worker goes on
    assert reply_to(client, "s3:first")[0]["outcome"] == "ok"


def test_a_rejection_is_kept_and_an_error_is_not(client, start_worker, tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log, reject="out of stock"))
    send(client, command("s2:first", log, fail="database down"))
    [rejected] = reply_to(client, "s1:first")
    [error] = reply_to(client, "s2:first")
    assert (rejected["outcome"], rejected["reason"]) == ("rejected", "out of stock")
    assert error["outcome"] == "error" and "database down" in error["reason"]
    send(client, command("s1:first", log, attempt=2, reject="out of stock"))
    send(client, command("s2:first", log, attempt=2))
    assert reply_to(client, "s1:first", 2)[1]["replayed"] is True
    retried = reply_to(client, "s2:first", 2)[1]
    assert retried["outcome"] == "ok" and retried["replayed"] is False
    assert sorted(run[1] for run in runs(log)) == ["s1:first", "s2:first", "s2:first"]


def test_a_compensations_rejection_is_a_failed_attempt_run_again(client, start_worker, tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first:compensation", log, reject="not yet"))
    assert reply_to(client, "s1:first:compensation")[0]["outcome"] == "rejected"
    send(client, command("s1:first:compensation", log, attempt=2))
    retried = reply_to(client, "s1:first:compensation", 2)[1]
    assert retried["outcome"] == "ok" and retried["replayed"] is False
    assert len(runs(log)) == 2


def test_each_service_has_its_stream_and_inbox(client, start_worker, tmp_path):
    start_worker()
    log = tmp_path / "log"
    send(client, command("s1:second", log, service="other"), service="other")
    [reply] = reply_to(client, "s1:second")
    assert reply["service"] == "other" and reply["outcome"] == "ok"
    assert client.hexists("sagactor:inbox:other", "s1:second")
    assert not client.exists("sagactor:inbox:probe")


def test_what_is_not_a_command_goes_to_the_dead_letters(client, start_worker, tmp_path):
    start_worker()
    client.xadd("sagactor:commands:probe", {"body": "not json"})
    stray = command("s1:first", tmp_path / "log") | {"reply_to": "sagactor:inbox:probe"}
    send(client, stray)
    dead = eventually(lambda: client.xrange("sagactor:dead:probe") if
                      client.xlen("sagactor:dead:probe") == 2 else None, what="2 dead letters")
    assert "not a command" in dead[0][1]["reason"] and dead[0][1]["body"] == "not json"
    assert "is not a reply stream" in dead[1][1]["reason"]
    assert client.type("sagactor:inbox:probe") == "none" and not runs(tmp_path / "log")
    assert eventually(lambda: client.xpending("sagactor:commands:probe", GROUP)["pending"] == 0
                      or None) is True


def test_a_command_delivered_too_often_is_dead_lettered_and_answered_error(client, start_worker,
                                                                           tmp_path):
    log = tmp_path / "log"
    client.xgroup_create("sagactor:commands:probe", GROUP, id="0", mkstream=True)
    entry = send(client, command("s1:first", log))
    client.xreadgroup(GROUP, "ghost", {"sagactor:commands:probe": ">"})
    for _ in range(4):  # as if four workers had died running it
        client.xclaim("sagactor:commands:probe", GROUP, "ghost", 0, [entry])
    start_worker(max_deliveries=5, claim_idle=0.05)
    [reply] = reply_to(client, "s1:first")
    assert reply["outcome"] == "error" and "dead-lettered after 6 deliveries" in reply["reason"]
    [(_, dead)] = client.xrange("sagactor:dead:probe")
    assert dead["deliveries"] == "6" and dead["entry"] == entry
    assert json.loads(dead["body"])["key"] == "s1:first"
    assert "dead-lettered" in dead["reason"] and dead["worker"]
    assert runs(log) == [] and client.xpending("sagactor:commands:probe", GROUP)["pending"] == 0


def test_no_more_commands_are_held_than_its_concurrency(client, start_worker, tmp_path):
    start_worker(concurrency=2)
    log = tmp_path / "log"
    for saga in range(6):
        send(client, command(f"s{saga}:first", log, sleep=0.05))
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, client.xpending("sagactor:commands:probe", GROUP)["pending"])
            stop.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        eventually(lambda: len(replies(client)) == 6 or None, what="6 replies")
    finally:
        stop.set()
        watcher.join()
    assert 1 <= most <= 2


def test_with_room_for_fewer_commands_than_streams_it_reads_every_stream(client, start_worker,
                                                                         tmp_path):
    start_worker(concurrency=1)
    log = tmp_path / "log"
    for saga in range(3):
        send(client, command(f"s{saga}:second", log, service="other"), service="other")
        send(client, command(f"s{saga}:first", log))
    eventually(lambda: len(replies(client)) == 6 or None, timeout=2, what="6 replies, promptly")
    assert {reply["service"] for reply in replies(client)} == {"probe", "other"}


def test_stop_finishes_the_commands_in_hand(client, start_worker, tmp_path):
    worker = start_worker()
    log = tmp_path / "log"
    send(client, command("s1:first", log, sleep=0.5))
    eventually(lambda: runs(log), what="the handler started")
    assert worker.stop(timeout=10) is True
    [reply] = replies(client)
    assert reply["outcome"] == "ok"
    assert client.xpending("sagactor:commands:probe", GROUP)["pending"] == 0


def test_stop_with_a_timeout_leaves_what_is_unfinished_pending(client, start_worker, tmp_path):
    worker = start_worker()
    send(client, command("s1:first", tmp_path / "log", hold_first=True))
    eventually(lambda: runs(tmp_path / "log"), what="the handler started")
    assert worker.stop(timeout=0.2) is False
    assert replies(client) == []
    assert client.xpending("sagactor:commands:probe", GROUP)["pending"] == 1


def test_it_reconnects_after_a_redis_restart_and_answers_what_comes_after(
        client, redis_server, start_worker, tmp_path):  # noqa: F811
    notes: list[str] = []
    start_worker(on_note=notes.append)
    log = tmp_path / "log"
    send(client, command("s1:first", log))
    reply_to(client, "s1:first")
    redis_server.kill9()
    eventually(lambda: any("lost" in note for note in notes), what="the worker saw it go")
    redis_server.restart()
    send(client, command("s2:first", log))
    [reply] = reply_to(client, "s2:first")
    assert reply["outcome"] == "ok"
    assert eventually(lambda: any("is back" in note for note in notes), what="a note it is back")
    assert [note.split()[2] for note in notes] == ["lost", "is"], notes  # once each


def test_the_services_it_hosts():
    assert list(hosted_services([FLOW])) == ["probe", "other"]
    assert list(hosted_services([FLOW], ["other"])) == ["other"]
    assert hosted_services([FLOW])["probe"].instances == 2
    with pytest.raises(ValueError, match="no service 'nope' in probe_flow"):
        hosted_services([FLOW], ["nope"])
    remote = parse_flow(PROBE_FLOW.replace("tests.worker_services:Probe\n",
                                           "{remote: true, handlers: [act, undo]}\n"),
                        source="<remote>")
    assert list(hosted_services([remote])) == ["probe"]
    with pytest.raises(ValueError, match="no Python class"):
        hosted_services([remote], ["other"])


def test_a_broker_url_shows_no_password_and_errors_are_one_line(client, redis_url):  # noqa: F811
    assert masked_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert masked_url("rediss://user:s3cret@host/1") == "rediss://user:***@host/1"
    with pytest.raises(BadBrokerUrl, match="is not a Redis URL"):
        connect("http://host")
    closed = f"redis://:s3cret@127.0.0.1:{_free_port()}/0"
    with pytest.raises(BrokerUnavailable) as raised:
        connect(closed)
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith("broker redis://:***@127.0.0.1:")
    client.config_set("requirepass", "right")
    try:
        with pytest.raises(BrokerUnavailable, match=r"cannot be used: .*password") as raised:
            connect(redis_url.replace("redis://", "redis://:wrong@"))
        assert "wrong" not in str(raised.value)
        connect(redis_url.replace("redis://", "redis://:right@")).close()
    finally:
        client.config_set("requirepass", "")


def test_without_redis_py_the_broker_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    with pytest.raises(BrokerUnavailable, match=r"needs redis-py: pip install 'sagactor\[redis\]'"):
        connect("redis://127.0.0.1:6379/0")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reply_streams_get_nothing_but_replies(client, start_worker, tmp_path):
    """A reply is one ``body`` field, as ``protocol.decode`` reads it."""
    from sagas.remote import protocol

    start_worker()
    send(client, command("s1:first", Path(tmp_path) / "log"))
    reply_to(client, "s1:first")
    [(_, fields)] = client.xrange("sagactor:replies:7")
    assert list(fields) == ["body"]
    assert protocol.decode(fields, "reply")["outcome"] == "ok"
