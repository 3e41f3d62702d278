"""What an operator watches: Prometheus metrics and their HTTP endpoint
(:mod:`sagas.observe.metrics`, the ``sagactor[metrics]`` extra: ``prometheus-client``,
imported only when a :class:`~sagas.observe.metrics.SagaMetrics` is made) and JSON logs
(:mod:`sagas.observe.logs`, standard library only).

Both are fed by a runtime's event listeners, called on the shard's thread after each commit::

    from sagas.observe import (SagaMetrics, configure_logging, event_log_listener,
                               runtime_health, serve_metrics)

    configure_logging("json", "INFO")
    metrics = SagaMetrics()
    with Runtime(store, listeners=[metrics.listener, event_log_listener]) as runtime:
        metrics.attach(runtime)
        with serve_metrics(metrics, "127.0.0.1:9464", health=runtime_health(runtime)):
            ...
"""

from __future__ import annotations

from .logs import (
    EVENT_LOGGER,
    HUMAN_FORMAT,
    LOG_FORMATS,
    JsonFormatter,
    configure_logging,
    event_log_listener,
)
from .metrics import (
    Backlog,
    BadAddress,
    MetricsServer,
    MetricsServerError,
    MetricsUnavailable,
    SagaMetrics,
    broker_backlog,
    broker_dead_letters,
    broker_health,
    parse_address,
    runtime_health,
    serve_metrics,
)

__all__ = [
    "EVENT_LOGGER",
    "HUMAN_FORMAT",
    "LOG_FORMATS",
    "Backlog",
    "BadAddress",
    "JsonFormatter",
    "MetricsServer",
    "MetricsServerError",
    "MetricsUnavailable",
    "SagaMetrics",
    "broker_backlog",
    "broker_dead_letters",
    "broker_health",
    "configure_logging",
    "event_log_listener",
    "parse_address",
    "runtime_health",
    "serve_metrics",
]
