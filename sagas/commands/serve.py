"""``saga serve``: the long-running process that drives a store's sagas, until stopped.

On a store shared by several processes (PostgreSQL) it is a *member*
(:mod:`sagas.engine.membership`): it holds the leases of its share of the store's partitions
and drives their sagas, whoever started them (``saga run`` from any shell is its client), takes
over a dead member's partitions, and gives its own back when it stops. Its FLOWs need no
trigger there: their services are started so that it says it runs them (and is given their
sagas), and with no FLOW it runs whatever flows the stored sagas name.

On every store, a FLOW with a trigger gets a saga for every event of its trigger; on SQLite and
memory stores every FLOW must have one. In-flight sagas whose process is gone are finished too
(as ``saga resume``). Stopping is how serving ends: the first Ctrl-C or SIGTERM (or the end of
``duration``) closes the runtime.

With ``http`` (``saga serve --http HOST:PORT``) the web console (:mod:`.ui`) serves beside it,
over the same store (and the broker's dead letters, if it has one); an address it could not use
(or that needs a token it was not given) refuses before anything else starts.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ..engine.membership import DEFAULT_LEASE_TTL
from ..engine.runtime import Runtime
from ..errors import InputError
from ..language.loader import load_flow
from ..language.model import Flow
from .errors import UsageProblem
from .interrupts import signals_recorded
from .observed import Observed
from .placement import placement, runtime_options
from .render import render_member_serving, render_serving, render_skipped
from .session import is_shared_url
from .ui import Listening, listen_ui, start_ui

__all__ = ["TICK", "MemberServing", "load_served_flows", "load_triggered_flows", "serve_flows"]

TICK = 0.05  # seconds between checks for a signal or the end of --for


class MemberServing(NamedTuple):
    """What ``saga serve`` says when it serves as a member: its id, the store (its URL
    masked), the partitions it holds as it starts, of how many, and its lease length."""

    member: str
    store: str
    held: list[int]
    partitions: int
    lease_ttl: float


def load_triggered_flows(flow_paths: Sequence[str]) -> list[Flow]:
    """The flows at ``flow_paths``, each declaring a trigger (``InputError`` for one that does
    not, :class:`UsageProblem` for no flow): what a SQLite or memory store serves."""
    if not flow_paths:
        raise UsageProblem("give a FLOW with a trigger to serve (only on a PostgreSQL store "
                           "does `saga serve` run without one, as a member)")
    flows = [load_flow(path) for path in flow_paths]
    for flow in flows:
        if flow.trigger is None:
            raise InputError(f"{flow.source}: flow {flow.name!r} has no trigger to serve: add "
                             "`trigger: {event: <EventType>, id: $.input.<field>}` (on a "
                             "PostgreSQL store, `saga serve` drives any flow's sagas)")
    return flows


def load_served_flows(flow_paths: Sequence[str], store_url: str) -> list[Flow]:
    """The flows at ``flow_paths`` to serve on the store at ``store_url``: where members drive
    the sagas (a PostgreSQL store) any flow, and none at all is fine; elsewhere each must
    declare a trigger (:func:`load_triggered_flows`)."""
    if is_shared_url(store_url):
        return [load_flow(path) for path in flow_paths]
    return load_triggered_flows(flow_paths)


def serve_flows(flows: Sequence[Flow], store_url: str, *, duration: float | None,
                lease_ttl: float = DEFAULT_LEASE_TTL, on_note: Callable[[str], None],
                on_start: Callable[[str, str], None], metrics: str | None = None,
                http: str | None = None, token: str | None = None) -> None:
    """Serve ``flows`` (:func:`load_served_flows`) on the store at ``store_url`` until SIGINT
    or SIGTERM, or for ``duration`` seconds; as a member on a PostgreSQL store, with leases of
    ``lease_ttl`` seconds.

    ``on_note(line)`` says what is served: once as a member (its id, the store, its
    partitions), once per flow, and for each event that can start no saga (on the runtime's
    poller thread); ``on_start(flow_name, saga_id)`` is called (on that thread too) for each
    saga a trigger started.

    ``http``: serve the web console there too (:func:`~.ui.start_ui`; ``token`` as for ``saga
    ui``), started before any saga is driven and stopped before the runtime closes;
    ``InputError`` before anything starts if the address or token will not do."""
    observed = Observed(metrics)
    listening = None if http is None else listen_ui(http, token, command="saga serve --http")
    with contextlib.ExitStack() as stack:
        if listening is not None:
            stack.callback(listening.close)  # if the console never started
        stopped = stack.enter_context(signals_recorded())
        stack.enter_context(observed)
        runtime = stack.enter_context(Runtime(store_url, lease_ttl=lease_ttl,
                                              listeners=observed.listeners, **runtime_options()))
        if listening is not None:
            stack.enter_context(_console(runtime, store_url, listening, on_note))
        _serve(runtime, flows, stopped, duration, on_note, on_start, observed)


@contextlib.contextmanager
def _console(runtime: Runtime, store_url: str, listening: Listening,
             on_note: Callable[[str], None]) -> Iterator[None]:
    """The web console over the runtime's store while the runtime serves: a connection of its
    own to a PostgreSQL store, else the runtime's store object (a ``memory://`` store is seen
    by no other; on SQLite the runtime's connections serve the console's reads too)."""
    store = store_url if is_shared_url(store_url) else runtime.store
    console = start_ui(store, listening, broker_url=placement().broker)
    console.on_ended = lambda error: on_note(  # serve goes on: driving sagas is its job
        f"warning: the console on {console.url} stopped ({error or 'it ended by itself'}); "
        "saga serve goes on without it")
    try:
        on_note(f"console on {console.url}")
        yield
    finally:
        console.stop()


def _serve(runtime: Runtime, flows: Sequence[Flow], stopped: list[int], duration: float | None,
           on_note: Callable[[str], None], on_start: Callable[[str, str], None],
           observed: Observed) -> None:
    def skipped(flow_name: str, event_id: str, why: str) -> None:
        on_note(render_skipped(flow_name, event_id, why))

    observed.serve(runtime, on_note)
    runtime.recover()
    membership = runtime.membership
    if membership is not None:
        on_note(render_member_serving(MemberServing(
            runtime.owner, runtime.store.url, membership.held(), membership.partitions,
            membership.ttl)))
    for flow in flows:
        if flow.trigger is None:
            runtime.compile(flow)  # its services started: the member runs its sagas
        else:
            runtime.add_trigger(flow, on_start=functools.partial(on_start, flow.name),
                                on_skip=functools.partial(skipped, flow.name))
        if membership is not None:  # said in its heartbeat: its sagas are for it
            membership.runs(flow.name)
        on_note(render_serving(flow))
    until = time.monotonic() + duration if duration is not None else None
    while not stopped and (until is None or time.monotonic() < until):
        time.sleep(TICK if until is None else max(0.0, min(TICK, until - time.monotonic())))
