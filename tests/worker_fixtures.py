"""Fixtures of the worker tests against a real redis-server (import them with the server's
fixtures): ``client``, a redis-py client answering ``str``; ``start_worker(**options)``,
in-process :class:`~sagas.remote.worker.Worker` s of the probe flow, stopped after the test
(a test module's ``WORKER_OPTIONS`` are their defaults); and :func:`reply_to`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sagas.language.loader import parse_flow
from sagas.remote.worker import Worker
from tests.redis_server import RedisServer
from tests.support import eventually
from tests.worker_services import PROBE_FLOW, replies

PROBE = parse_flow(PROBE_FLOW, source="<probe>")


@pytest.fixture(name="client")
def redis_client(redis_server: RedisServer, redis_url: str) -> Iterator[Any]:
    """A client of the server as ``redis_url`` leaves it: every database emptied."""
    redis = redis_server.client(decode_responses=True)
    yield redis
    redis.close()


@pytest.fixture(name="start_worker")
def worker_starter(request: pytest.FixtureRequest,
                   redis_url: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []
    defaults = getattr(request.module, "WORKER_OPTIONS", {})

    def start(**options: Any) -> Worker:
        worker = Worker(redis_url, [PROBE], **{**defaults, **options}).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10)


def reply_to(client: Any, key: str, count: int = 1) -> list[dict[str, Any]]:
    """The replies to ``key``, once there are ``count`` of them."""

    def found() -> list[dict[str, Any]] | None:
        mine = [reply for reply in replies(client) if reply["key"] == key]
        return mine if len(mine) >= count else None

    return eventually(found, what=f"{count} reply(ies) to {key}")
