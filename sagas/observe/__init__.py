"""What an operator watches: Prometheus metrics and their HTTP endpoint
(:mod:`sagas.observe.metrics`, the ``sagactor[metrics]`` extra: ``prometheus-client``,
imported only when a :class:`~sagas.observe.metrics.SagaMetrics` is made).

Fed by a runtime's event listeners, called on the shard's thread after each commit::

    from sagas.observe import SagaMetrics, runtime_health, serve_metrics

    metrics = SagaMetrics()
    with Runtime(store, listeners=[metrics.listener]) as runtime:
        metrics.attach(runtime)
        with serve_metrics(metrics, "127.0.0.1:9464", health=runtime_health(runtime)):
            ...
"""

from __future__ import annotations

from .metrics import (
    Backlog,
    BadAddress,
    MetricsServer,
    MetricsServerError,
    MetricsUnavailable,
    SagaMetrics,
    broker_backlog,
    broker_dead_letters,
    parse_address,
    runtime_health,
    serve_metrics,
)

__all__ = [
    "Backlog",
    "BadAddress",
    "MetricsServer",
    "MetricsServerError",
    "MetricsUnavailable",
    "SagaMetrics",
    "broker_backlog",
    "broker_dead_letters",
    "parse_address",
    "runtime_health",
    "serve_metrics",
]
