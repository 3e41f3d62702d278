"""The web console's dead letters (``saga ui --broker URL``) against a real redis-server: listed
as ``saga dead-letters list --json`` lists them, replayed onto their service's command stream,
purged; each POST with the console's CSRF token."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas.stores import open_store
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.worker_services import command

if not os.environ.get("CI"):
    pytest.importorskip("starlette", reason="the web console needs the web extra")
    pytest.importorskip("uvicorn", reason="the web console needs the web extra")

from sagas.commands.ui import start_ui
from tests.browser.console_data import Client

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

DEAD = "sagactor:dead:probe"


@pytest.fixture
def console(redis_server: RedisServer, redis_url: str, tmp_path: Path  # noqa: F811
            ) -> Iterator[tuple[Client, Any]]:
    store_url = f"sqlite:///{tmp_path}/sagas.db"
    open_store(store_url).close()
    redis = redis_server.client(decode_responses=True)
    served = start_ui(store_url, "127.0.0.1:0", broker_url=redis_url)
    try:
        yield Client(served.url), redis
    finally:
        served.stop()
        redis.close()


def dead_letter(redis: Any, key: str, tmp_path: Path) -> str:
    """A dead letter as a worker writes one (sagas.remote.worker): the command's body, why,
    how often it was delivered, who gave up, and the command entry's id."""
    return redis.xadd(DEAD, {"body": json.dumps(command(key, tmp_path / "log")),
                             "reason": "delivered 6 times (more than 5)", "deliveries": "6",
                             "worker": "host-1:42", "entry": "1-0"})


def test_dead_letters_are_listed_replayed_and_purged(console, tmp_path):
    client, redis = console
    first = dead_letter(redis, "s1:charge", tmp_path)
    second = dead_letter(redis, "s2:charge", tmp_path)
    listed = client.get("/api/dead-letters").json()
    assert listed["action"] == "list" and listed["services"] == ["probe"]
    assert [(d["entry"], d["saga_id"], d["step"], d["deliveries"], d["worker"])
            for d in listed["dead_letters"]] == [(first, "s1", "charge", 6, "host-1:42"),
                                                 (second, "s2", "charge", 6, "host-1:42")]
    assert client.get("/api/dead-letters?service=other").json()["dead_letters"] == []
    assert client.get("/api/info").json()["dead_letters"] is True

    assert client.post("/api/dead-letters/replay", {"ids": [first]}, csrf=False
                       ).status_code == 403
    replayed = client.post("/api/dead-letters/replay", {"ids": [first]}).json()
    assert [d["entry"] for d in replayed["dead_letters"]] == [first]
    new_id = replayed["dead_letters"][0]["replayed_as"]
    [(entry, fields)] = redis.xrange("sagactor:commands:probe")
    assert entry == new_id and json.loads(fields["body"])["key"] == "s1:charge"

    purged = client.post("/api/dead-letters/purge", {"ids": [second]}).json()
    assert [d["entry"] for d in purged["dead_letters"]] == [second]
    assert redis.xlen(DEAD) == 0
    unknown = client.post("/api/dead-letters/purge", {"ids": ["9-9"]})
    assert unknown.status_code == 400 and "9-9" in unknown.json()["error"]
    assert client.post("/api/dead-letters/list", {}).status_code == 404
    assert client.post("/api/dead-letters/purge", {"ids": "9-9"}).status_code == 400
