"""``saga worker``: hosts services of flows for orchestrators elsewhere, until stopped.

The services run in this process as :class:`sagas.remote.worker.Worker` runs them (pools of
actors fed by the broker's command streams). Serving is how the command ends: the first
Ctrl-C or SIGTERM stops reading and finishes the commands the worker holds (their replies
published and acknowledged), then the pools stop; a second one exits at once, leaving what is
held pending for another worker to claim.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..language.loader import load_flow
from ..language.model import Flow
from ..remote.broker import BadBrokerUrl, connect
from ..remote.protocol import DEFAULT_PREFIX
from ..remote.worker import CLAIM_IDLE, DEFAULT_CONCURRENCY, MAX_DELIVERIES, Worker
from .errors import UsageProblem
from .interrupts import signals_recorded
from .observed import Observed
from .placement import handler_wrapper

__all__ = ["WorkerServing", "load_worker_flows", "run_worker", "service_names"]

TICK = 0.05  # seconds between checks for a signal


class WorkerServing(NamedTuple):
    """What ``saga worker`` says once it serves: its name, the broker (its URL masked), the
    services it hosts and the flows they come from, and how many commands it holds at most."""

    worker: str
    broker: str
    services: list[str]
    flows: list[str]
    concurrency: int

    def line(self) -> str:
        """``worker host:1234 serving inventory, payment of order_inventory on redis://…``"""
        return (f"worker {self.worker} serving {', '.join(self.services)} of "
                f"{', '.join(self.flows)} on {self.broker}; stop with Ctrl-C")

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def load_worker_flows(paths: Sequence[str]) -> list[Flow]:
    """The flows at ``paths`` (``FlowErrors`` for one that does not load)."""
    if not paths:
        raise UsageProblem("give the FLOW files whose services this worker hosts")
    return [load_flow(path) for path in paths]


def service_names(text: str | None) -> list[str] | None:
    """``--services a,b`` as names (``None``: every service with a class)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageProblem("name at least one service", "--services")
    return names


def run_worker(flows: Sequence[Flow], broker_url: str, on_note: Callable[[str], None], *,
               services: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
               prefix: str = DEFAULT_PREFIX, name: str | None = None,
               max_deliveries: int = MAX_DELIVERIES, claim_idle: float = CLAIM_IDLE,
               on_json: Callable[[str], None] | None = None,
               metrics: str | None = None) -> int:
    """Serve ``flows``' services (``services``: ``a,b``, default every one with a class) from
    the broker at ``broker_url`` until SIGINT or SIGTERM; how many commands it answered.

    ``on_note(line)`` says that it serves (:meth:`WorkerServing.line`), that the broker is
    lost and back, and that it stops; ``on_json(text)``, if given, is told once it serves
    what it serves, as a JSON object (:meth:`WorkerServing.to_json`). Raises
    :class:`UsageProblem` for a service it cannot host or a URL that is not a Redis one,
    ``BrokerUnavailable`` when the broker cannot be used as it starts, and
    ``DefinitionUnavailable`` for a service class that does not import or start.
    """
    names = service_names(services)
    try:
        worker = Worker(broker_url, flows, names, concurrency=concurrency, prefix=prefix,
                        around=handler_wrapper(),
                        name=name, claim_idle=claim_idle, max_deliveries=max_deliveries,
                        on_note=on_note)
    except ValueError as exc:
        raise UsageProblem(str(exc), "--services" if names is not None else None) from None
    observed = Observed(metrics)
    if observed.metrics is not None:  # from its first read on
        worker.on_delivery = observed.metrics.observe_queue_time
    with signals_recorded() as received, observed:
        try:
            worker.start()
        except BadBrokerUrl as exc:
            raise UsageProblem(str(exc), "--broker") from None
        try:
            if observed.metrics is not None:
                observed.serve_worker(worker, connect(broker_url), on_note)
            serving = WorkerServing(worker.name, worker.url, list(worker.services),
                                    [flow.name for flow in flows], concurrency)
            on_note(serving.line())
            if worker.durability is not None:  # after "serving": the first line says it serves
                on_note(f"warning: redis-server {worker.durability}")
            if on_json is not None:
                on_json(json.dumps(serving.to_json()))
            while not received:
                time.sleep(TICK)
            held = worker.held()
            on_note(f"worker {worker.name} stopping: finishing the {held} command(s) it holds"
                    if held else f"worker {worker.name} stopping")
            worker.request_stop()
            while not worker.finished(TICK):
                if len(received) > 1:
                    on_note(f"stopped again: exiting now; the {worker.held()} command(s) it "
                            "holds are claimed by another worker")
                    os._exit(128 + received[-1])
        finally:
            worker.close()
    return worker.answered
