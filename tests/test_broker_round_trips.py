"""Batches sent to the broker in one write (sagas.remote.wire) against a real redis-server:
answers in order, inside MULTI/EXEC when asked; a command the server refuses raises its error
after the whole batch is read, leaving the connection usable; a connection cut mid-batch is
not handed out again with answers left on it; the same with redis-py packing (no hiredis);
XREADGROUP's new entries per stream as (id, fields), left pending in the group.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sagas.remote import wire
from sagas.remote.broker import connect
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # a real redis-server


@pytest.fixture(params=["hiredis", "redis-py"])
def client(request: pytest.FixtureRequest, redis_server: RedisServer,  # noqa: F811
           redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    if request.param == "redis-py":
        monkeypatch.setattr(wire, "_pack_one", None)
    elif wire._pack_one is None:
        pytest.fail("hiredis (the redis extra) is not installed")
    redis = connect(redis_url)
    redis.flushdb()
    yield redis
    redis.close()


def test_answers_come_back_in_order(client: Any) -> None:
    answers = wire.round_trip(client, [("XADD", "s", "*", "body", "a"), ("HSET", "h", "k", 1.5),
                                       ("XADD", "s", "*", "body", "b"), ("HGET", "h", "k")])
    first, hset, second, hget = answers
    assert (hset, hget) == (1, "1.5")
    assert [entry_id for entry_id, _ in client.xrange("s")] == [first, second]
    assert wire.round_trip(client, []) == []


def test_a_transaction_answers_with_exec(client: Any) -> None:
    assert wire.round_trip(client, [("HSET", "h", "a", "1", "b", "2"), ("ZADD", "z", 3, "m")],
                           transaction=True) == [2, 1]
    assert client.hgetall("h") == {"a": "1", "b": "2"}


@pytest.mark.parametrize("transaction", [False, True])
def test_a_refused_command_raises_after_every_answer_is_read(client: Any,
                                                             transaction: bool) -> None:
    from redis.exceptions import ResponseError

    client.set("text", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        wire.round_trip(client, [("HSET", "h", "a", "1"), ("LPUSH", "text", "y"),
                                 ("HSET", "h", "b", "2")], transaction=transaction)
    assert client.hgetall("h") == {"a": "1", "b": "2"}  # the others ran (Redis: no rollback)
    assert wire.round_trip(client, [("PING",), ("GET", "text")]) == ["PONG", "x"]  # in step


def test_a_malformed_transaction_runs_nothing(client: Any) -> None:
    from redis.exceptions import ResponseError

    with pytest.raises(ResponseError):
        wire.round_trip(client, [("HSET", "h", "a", "1"), ("HSET", "h")], transaction=True)
    assert client.exists("h") == 0
    assert wire.round_trip(client, [("PING",)]) == ["PONG"]


def test_a_connection_cut_mid_batch_is_not_reused(client: Any) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    victim = client.client_id()
    with pytest.raises(RedisConnectionError):  # the batch kills its own connection
        wire.round_trip(client, [("PING",), ("CLIENT", "KILL", "ID", victim, "SKIPME", "no"),
                                 ("PING",)])
    assert wire.round_trip(client, [("PING",), ("ECHO", "after")]) == ["PONG", "after"]


def test_read_group_gives_entries_per_stream(client: Any) -> None:
    for stream in ("a", "b"):
        client.xgroup_create(stream, "g", id="0", mkstream=True)
    first = client.xadd("a", {"body": "1", "more": "x"})
    second = client.xadd("a", {"body": "3"})
    other = client.xadd("b", {"body": "2"})
    assert wire.read_group(client, "g", "me", ["a", "b"], count=1, block_ms=10) == [
        ("a", [(first, {"body": "1", "more": "x"})]), ("b", [(other, {"body": "2"})])]
    assert wire.read_group(client, "g", "me", ["a", "b"], count=10) == [
        ("a", [(second, {"body": "3"})])]
    assert wire.read_group(client, "g", "me", ["a", "b"], count=10, block_ms=10) == []
    assert client.xpending("a", "g")["pending"] == 2  # read in the group: pending until acked
