"""``saga run``: one saga, or a batch, of a flow on a store.

:func:`prepare_run` reads and checks everything a run needs before anything starts (the flow,
its inputs, the steps to fail, the saga id); :func:`run_one` and :func:`run_many` run it. A
first Ctrl-C or SIGTERM stops either gracefully, and the :class:`~.interrupts.Stopped` it
raises says what was left in flight.

On PostgreSQL with a member alive the run is the members' client (:mod:`.session`); should
they all stop before its sagas end, or say they cannot run its flow, a temporary member of
this process takes over (:class:`Takeover`), so the run ends as if it had driven them itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ..engine.runtime import Runtime, SagaResult, validate_input, validate_saga_id
from ..errors import InputError, SagaOrphaned, SagaTimeout
from ..language.loader import load_flow
from ..language.model import Flow
from .batch import BatchProgress, run_batch
from .errors import UsageProblem
from .inputs import parse_json, read_inputs
from .interrupts import stop_reporting
from .placement import runtime_options
from .session import CLOSE_TIMEOUT, is_alive, live_members, runtime_session

__all__ = ["RunRequest", "SingleRun", "Takeover", "batch_status", "prepare_run", "run_many",
           "run_one"]

ProgressDisplay = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]
"""``display(label, total)``: a context manager yielding ``update(ended)`` (e.g. a bar)."""


class RunRequest(NamedTuple):
    """A checked run: the flow, its inputs (a batch takes them in turn), how many sagas."""

    flow: Flow
    inputs: list[Any]
    total: int
    saga_id: str | None
    fail: tuple[str, ...]


class SingleRun(NamedTuple):
    """How one saga ended, and a note when it was not this run that drove it (``--id`` of a
    saga in flight that no live process drives)."""

    result: SagaResult
    note: str | None = None


def _read_inputs(input_json: str | None, input_file: str | None) -> list[Any]:
    if (input_json is None) == (input_file is None):
        raise UsageProblem("give the saga input with exactly one of --input JSON or "
                           "--input-file FILE")
    if input_json is not None:
        return [parse_json(input_json, "--input")]
    assert input_file is not None
    return read_inputs(input_file)


def prepare_run(flow_path: str, *, input_json: str | None, input_file: str | None,
                saga_id: str | None, fail: Sequence[str], count: int | None) -> RunRequest:
    """Load the flow and check the run's arguments: exactly one of ``input_json`` and
    ``input_file`` (JSON, or JSON Lines for a batch), each input valid for the flow, steps to
    ``fail`` that call a service, an id only for one saga. ``count`` defaults to one saga per
    input. Raises ``FlowErrors``, ``InputError`` or :class:`UsageProblem`."""
    flow = load_flow(flow_path)
    inputs = _read_inputs(input_json, input_file)
    names = [s.name for s in flow.steps if s.calls_service]
    for step in fail:
        if step not in names:
            raise UsageProblem(f"no step {step!r} in flow {flow.name} "
                               f"(steps: {', '.join(names)})", option="--fail")
    for number, saga_input in enumerate(inputs, 1):
        try:
            validate_input(flow, saga_input)
        except InputError as exc:
            if len(inputs) > 1:
                raise InputError(f"{exc} (input {number} of {input_file})") from None
            raise
    if saga_id is not None:
        validate_saga_id(saga_id)
    total = count if count is not None else len(inputs)
    if total > 1 and saga_id is not None:
        raise UsageProblem("--id names one saga; it cannot be used with a batch")
    return RunRequest(flow, inputs, total, saga_id, tuple(fail))


class Takeover:
    """A client run's stand-in for the store's members, for the sagas they do not drive: once
    none is alive (the last one stopped before the run's sagas ended), or one says it cannot
    run the run's flow (its services do not import there), a temporary member of this process
    joins, saying it runs the flow; it drives what it is given (the partitions left, or those
    handed over for the flow), the client goes on following the log, and it leaves when the
    run ends."""

    CHECK_EVERY = 0.5  # seconds between looks at the members

    def __init__(self, store_url: str, runtime: Runtime, flow: Flow) -> None:
        self.store_url = store_url
        self.runtime = runtime
        self.flow = flow
        self.member: Runtime | None = None
        self._checked = 0.0

    def check(self) -> None:
        """Take over if the runtime is a client and no member is alive, or one says it cannot
        run the flow (looked at every :attr:`CHECK_EVERY` seconds at most)."""
        if self.member is not None or not self.runtime.client:
            return
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return
        self._checked = now
        store = self.runtime.store
        if not live_members(store) or any(
                is_alive(m) and any(isinstance(s, dict) and s.get("flow") == self.flow.name
                                    for s in m.info.get("undriven_sagas") or ())
                for m in store.members()):
            self.take_over()

    def take_over(self) -> bool:
        """Start the temporary member (once); whether there is one (a client only)."""
        if self.member is None and self.runtime.client:
            self.member = Runtime(self.store_url, **runtime_options())
            self.member.compile(self.flow)  # its services started: it can run the flow
            if self.member.membership is not None:  # said in its heartbeat
                self.member.membership.runs(self.flow.name)
        return self.member is not None

    def wait(self, saga_id: str) -> SagaResult:
        """The runtime's wait for the saga, taking over meanwhile if need be (and once the
        members have all stopped)."""
        while True:
            try:
                return self.runtime.wait(saga_id, None if not self.runtime.client
                                         else self.CHECK_EVERY)
            except SagaTimeout:
                self.check()
            except SagaOrphaned:  # no member is alive: this process drives it (once)
                if self.member is not None or not self.take_over():
                    raise

    def close(self) -> None:
        if self.member is not None:
            self.member.close(timeout=CLOSE_TIMEOUT)


@contextlib.contextmanager
def _session(store_url: str, request: RunRequest) -> Iterator[tuple[Runtime, Takeover]]:
    """:func:`~.session.runtime_session`, and its :class:`Takeover`."""
    with runtime_session(store_url, request.fail) as runtime:
        takeover = Takeover(store_url, runtime, request.flow)
        try:
            yield runtime, takeover
        finally:
            takeover.close()


def _left_in_flight(progress: BatchProgress, total: int, clients: list[bool]) -> str:
    left = progress.submitted - progress.ended
    if not left:
        return "interrupted: no saga was left in flight"
    what = (f"saga {progress.last} was left in flight" if total == 1
            else f"{left} of {progress.submitted} sagas started were left in flight")
    if clients == [True]:
        return f"interrupted: {what}; the store's members finish them"
    return f"interrupted: {what}; 'saga resume' finishes them"


def run_one(store_url: str, request: RunRequest, *,
            on_end: Callable[[SingleRun], None] | None = None) -> SingleRun:
    """Run the request's one saga on the store at ``store_url`` until it ends.

    ``on_end(run)`` is called as soon as it has ended, before the runtime closes (which waits
    up to :data:`~.session.CLOSE_TIMEOUT` for a handler that hangs), so the caller can show
    it at once; a stop while the runtime closes still raises ``Stopped``."""
    progress = BatchProgress()
    clients: list[bool] = []
    with stop_reporting(lambda: _left_in_flight(progress, 1, clients)), \
            _session(store_url, request) as (runtime, takeover):
        clients.append(runtime.client)
        started = runtime.start(request.flow, request.inputs[0], request.saga_id)
        progress.submitted, progress.last = 1, started
        try:
            ended = SingleRun(takeover.wait(started))
        except SagaOrphaned as exc:  # an existing saga (--id) that nobody drives
            ended = SingleRun(runtime.result(started), note=str(exc))
        if on_end is not None:
            on_end(ended)
        return ended


def run_many(store_url: str, request: RunRequest, concurrency: int, *,
             display: ProgressDisplay) -> dict[str, Any]:
    """Run the request's batch on the store at ``store_url``, at most ``concurrency`` sagas in
    flight, its progress shown by ``display``; return the batch summary
    (:func:`~.batch.run_batch`)."""
    progress = BatchProgress()
    clients: list[bool] = []
    with stop_reporting(lambda: _left_in_flight(progress, request.total, clients)), \
            _session(store_url, request) as (runtime, takeover), \
            display(request.flow.name, request.total) as on_progress:
        clients.append(runtime.client)
        return run_batch(runtime, request.flow, request.inputs, request.total, concurrency,
                         on_progress=on_progress, progress=progress, on_tick=takeover.check)


def batch_status(summary: Mapping[str, Any]) -> str:
    """``failed`` if any saga of a batch ended failed, else ``ok``."""
    return "failed" if summary["failed"] else "ok"
