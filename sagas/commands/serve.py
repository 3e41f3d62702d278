"""``saga serve``: start a saga of each flow for every event of its trigger, until stopped.

Also finishes the in-flight sagas whose process is gone (as ``saga resume``). Stopping is how
serving ends: the first Ctrl-C or SIGTERM (or the end of ``duration``) closes the runtime.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

from ..engine.runtime import Runtime
from ..errors import InputError
from ..language.loader import load_flow
from ..language.model import Flow
from .interrupts import signals_recorded

__all__ = ["TICK", "load_triggered_flows", "serve_flows"]

TICK = 0.05  # seconds between checks for a signal or the end of --for


def load_triggered_flows(flow_paths: Sequence[str]) -> list[Flow]:
    """The flows at ``flow_paths``; ``InputError`` for one that declares no trigger."""
    flows = [load_flow(path) for path in flow_paths]
    for flow in flows:
        if flow.trigger is None:
            raise InputError(f"{flow.source}: flow {flow.name!r} has no trigger to serve: add "
                             "`trigger: {event: <EventType>, id: $.input.<field>}`")
    return flows


def serve_flows(flows: Sequence[Flow], store_url: str, *, duration: float | None,
                on_serving: Callable[[Flow], None],
                on_start: Callable[[str, str], None],
                on_skip: Callable[[str, str, str], None]) -> None:
    """Serve ``flows`` (each with a trigger: :func:`load_triggered_flows`) on the store at
    ``store_url`` until SIGINT or SIGTERM, or for ``duration`` seconds.

    ``on_serving(flow)`` once each flow is served; then, on the runtime's poller thread,
    ``on_start(flow_name, saga_id)`` for each saga started and ``on_skip(flow_name, event_id,
    why)`` for each event that can start none."""
    with signals_recorded() as stopped, Runtime(store_url) as runtime:
        runtime.recover()
        for flow in flows:
            runtime.add_trigger(flow, on_start=functools.partial(on_start, flow.name),
                                on_skip=functools.partial(on_skip, flow.name))
            on_serving(flow)
        until = time.monotonic() + duration if duration is not None else None
        while not stopped and (until is None or time.monotonic() < until):
            time.sleep(TICK if until is None else max(0.0, min(TICK, until - time.monotonic())))
