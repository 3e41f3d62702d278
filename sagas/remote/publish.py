"""Saga events published to the broker: every event of the log, in order, to a stream per flow
(``<prefix>:events:<flow>``), so services in other processes or languages react to them with
consumer groups (an inventory service reading ``order_inventory.saga.completed``).

The publisher is a subscriber of the runtime's event bus (:mod:`sagas.bus`) with a durable
cursor in the store: at least once, in log order, none missing across restarts. Each entry's
fields are ``body`` — the event as JSON: ``{"topic", "flow", "saga_id", "position", "seq",
"type", "step", "attempt", "at", "event_id", "causation_id", "data"}`` — and ``topic``
(``<flow>.<event type>``, as the in-process bus names it), so a reader can filter without
decoding. ``event_id`` is unique: readers deduplicate on it (a crash between the add and the
cursor's save publishes an event again).

While the broker cannot be reached the publisher waits and tries again (backing off up to
:data:`MAX_BACKOFF` seconds), holding its place: nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from actors import thaw

from . import protocol

__all__ = ["EventPublisher", "event_stream"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0


def event_stream(flow: str, prefix: str = protocol.DEFAULT_PREFIX) -> str:
    return f"{prefix}:events:{flow}"


class EventPublisher:
    """Publishes bus deliveries to the broker at ``url``. :meth:`subscriber` is what to give
    :class:`~sagas.Runtime` (``subscribers=[...]``); :meth:`close` stops a wait for the broker.

    ``maxlen`` caps each stream approximately (``XADD ... MAXLEN ~ n``; ``None``: uncapped):
    events are notifications here, the log stays the record.
    """

    def __init__(self, url: str, *, prefix: str = protocol.DEFAULT_PREFIX,
                 name: str | None = None, maxlen: int | None = 100_000) -> None:
        from .broker import connect, masked_url

        self.redis = connect(url, check=False)  # it waits for an unreachable broker
        self.display_url = masked_url(url)
        self.prefix = prefix
        self.name = name or f"{prefix}.publisher"
        self.maxlen = maxlen
        self._closed = threading.Event()

    def subscriber(self) -> Any:
        from ..bus import Subscriber

        return Subscriber(self.name, ["*"], self.publish, start="beginning")

    def publish(self, delivery: Any) -> None:
        body = {
            "topic": delivery.topic, "flow": delivery.flow, "saga_id": delivery.saga_id,
            "position": delivery.position, "seq": delivery.seq, "type": delivery.type,
            "step": delivery.step, "attempt": delivery.attempt, "at": delivery.at,
            "event_id": delivery.event_id, "causation_id": delivery.causation_id,
            "data": thaw(delivery.data),
        }
        fields = {"body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                  "topic": delivery.topic}
        stream = event_stream(delivery.flow, self.prefix)
        backoff = 0.05
        failing = False
        while True:
            try:
                self.redis.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
                if failing:
                    log.warning("publishing saga events to %s again", self.display_url)
                return
            except Exception as exc:
                if self._closed.is_set():
                    raise
                if not failing:
                    failing = True
                    log.warning("cannot publish saga events to %s (%s); retrying",
                                self.display_url, exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        self._closed.set()
