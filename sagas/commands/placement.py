"""Where a command's services run: in this process, or in workers reached through a broker
(``--broker URL --remote A,B|all``, ``SAGA_BROKER`` / ``SAGA_REMOTE``; :mod:`sagas.remote`),
and where saga events are published (``saga serve --publish URL``).

The CLI states the placement once per command (:func:`place_services`) and every runtime the
command makes (:func:`runtime_options`) uses it, so the commands' functions need not carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.inputs import remote_names
from ..errors import InputError
from .errors import UsageProblem

__all__ = ["Placement", "handler_wrapper", "place_services", "placement", "runtime_options",
           "tracing"]


@dataclass(frozen=True, slots=True)
class Placement:
    """The broker (``None``: none), the services placed remote (``all``, or names), and the
    broker saga events are published to (``None``: not published)."""

    broker: str | None = None
    remote: tuple[str, ...] = ()
    publish: str | None = None


_placement = Placement()


def place_services(broker: str | None, remote: str | None, publish: str | None = None) -> None:
    """State this command's placement; :class:`UsageProblem` for ``--remote`` without a
    broker."""
    global _placement
    names = tuple(sorted(remote_names(remote or "")))
    if names and not broker:
        raise UsageProblem("--remote needs the broker its workers read: --broker "
                           "redis://HOST[:PORT][/DB] (or SAGA_BROKER)", option="--remote")
    _placement = Placement(broker or None, names, publish or None)


def placement() -> Placement:
    return _placement


_tracer: Any = None


def tracing() -> Any:
    """The command's :class:`~sagas.observe.tracing.SagaTracer` when tracing is on (the
    ``otel`` extra installed and ``OTEL_TRACES_EXPORTER``, ``SAGA_TRACES_FILE`` or
    ``SAGA_TRACING=1`` set: :func:`~sagas.observe.tracing.tracing_enabled`), configured from
    the standard ``OTEL_*`` environment once; ``None`` otherwise (nothing of OpenTelemetry is
    imported then). ``InputError`` (exit 2, one line) for an exporter that is not installed."""
    global _tracer
    from ..observe import tracing as traces

    if _tracer is None and traces.tracing_enabled():
        try:
            traces.configure_from_env()
        except ValueError as exc:  # OTEL_TRACES_EXPORTER names one that is not installed
            raise InputError(str(exc)) from None
        _tracer = traces.SagaTracer()
    return _tracer


def handler_wrapper() -> Any:
    """What a worker wraps each handler call in when tracing is on (its span, a child of the
    command's attempt span), else ``None``."""
    if tracing() is None:
        return None
    from ..observe.tracing import handler_span

    return handler_span


def runtime_options(*, client: bool = False) -> dict[str, Any]:
    """The :class:`~sagas.Runtime` arguments of this command's placement, and its tracer when
    tracing is on (:func:`tracing`). A client drives no saga, so it neither publishes commands
    nor reads replies: none for it."""
    options: dict[str, Any] = {}
    tracer = tracing()
    if tracer is not None:
        options["tracing"] = tracer
    if client:
        return options
    if _placement.broker is not None:
        options.update(broker=_placement.broker, remote=_placement.remote)
    if _placement.publish is not None:
        options["publish"] = _placement.publish
    return options
