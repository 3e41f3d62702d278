"""What ``saga serve`` and ``saga worker`` let an operator watch: ``--metrics HOST:PORT``
(Prometheus metrics and ``/healthz``: :mod:`sagas.observe.metrics`) and, with ``saga
--log-format json``, every saga event as a JSON log line (:mod:`sagas.observe.logs`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from . import process
from .errors import UsageProblem

__all__ = ["Observed"]


class Observed(contextlib.AbstractContextManager["Observed"]):
    """The metrics (if ``address``) and event logs of one serving process; a context manager
    whose exit stops the metrics endpoint. ``listeners`` go to the runtime; :meth:`serve`
    starts the endpoint once the runtime (or :meth:`serve_worker` the worker) runs."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.metrics: Any = None
        self.server: Any = None
        listeners: list[Callable[..., None]] = []
        if address is not None:
            from ..observe.metrics import BadAddress, SagaMetrics, parse_address

            try:
                parse_address(address)
            except BadAddress as exc:
                raise UsageProblem(str(exc), "--metrics") from None
            self.metrics = SagaMetrics()
            listeners.append(self.metrics.listener)
        if process.LOG_FORMAT == "json":
            from ..observe.logs import event_log_listener

            listeners.append(event_log_listener)
        self.listeners = tuple(listeners)

    def serve(self, runtime: Any, on_note: Callable[[str], None]) -> None:
        if self.metrics is None:
            return
        from ..observe.metrics import runtime_health, serve_metrics

        self.metrics.attach(runtime)
        self._start(serve_metrics, runtime_health(runtime), on_note)

    def serve_worker(self, worker: Any, client: Any, on_note: Callable[[str], None]) -> None:
        if self.metrics is None:
            return
        from ..observe.metrics import broker_health, serve_metrics

        self.metrics.attach_worker(worker, client)
        self._start(serve_metrics, broker_health(client), on_note)

    def _start(self, serve_metrics: Any, health: Any, on_note: Callable[[str], None]) -> None:
        from ..observe.metrics import MetricsServerError

        try:
            self.server = serve_metrics(self.metrics, self.address, health=health)
        except MetricsServerError as exc:  # the address taken, or not ours to bind
            raise UsageProblem(str(exc), "--metrics") from None
        on_note(f"metrics on {self.server.url}/metrics (health: {self.server.url}/healthz)")

    def __exit__(self, *exc_info: object) -> None:
        if self.server is not None:
            self.server.close()
