"""Shared by the engine tests: a scripted service, a flow builder, a check of the event
contract on a history, :func:`eventually` (the one way a test polls for something) and
:func:`read_until` (waiting for a line from a child process)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from actors import Rejected, Service, handles
from sagas import Flow, parse_flow
from sagas.events import TERMINAL_EVENTS, Event

T = TypeVar("T")


def eventually(condition: Callable[[], T], timeout: float = 10.0, *,
               what: str | Callable[[], str] = "", interval: float = 0.01) -> T:
    """Poll ``condition`` every ``interval`` seconds until it returns something true, and return
    that; fail the test once ``timeout`` seconds have passed, naming ``what`` was awaited (a
    text, or a function that writes it then; by default where the condition is written) and the
    last value it returned. An exception the condition raises fails the test at once.

    For what another thread or process does that no event announces; where one does (a
    ``threading.Event``, ``Activity.wait_idle``, a line on a pipe), wait on it instead."""
    give_up = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= give_up:
            code = getattr(condition, "__code__", None)
            where = (what() if callable(what) else what) or (
                f"the condition at {code.co_filename}:{code.co_firstlineno}"
                if code is not None else repr(condition))
            raise AssertionError(f"{where} did not hold within {timeout}s "
                                 f"(it last returned {value!r})")
        time.sleep(interval)
    return value


def one_clear_line(stderr: str) -> str:
    """The one line of ``stderr``: the CLI says what went wrong in one line, never with a
    traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def read_until(stream: IO[str], done: Callable[[str], bool], timeout: float) -> list[str]:
    """The lines of ``stream`` (a child process's pipe) up to the first for which ``done``
    holds, read as they come; fail the test if the stream ends first or no such line comes
    within ``timeout`` seconds."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
            if done(line):
                return
        lines.put(None)  # the end of the stream

    threading.Thread(target=read, name="read_until", daemon=True).start()
    read_so_far: list[str] = []
    give_up = time.monotonic() + timeout
    while not read_so_far or not done(read_so_far[-1]):
        try:
            line = lines.get(timeout=max(0.0, give_up - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no such line within {timeout}s; read: {read_so_far}") \
                from None
        if line is None:
            raise AssertionError(f"the stream ended before such a line; read: {read_so_far}")
        read_so_far.append(line)
    return read_so_far


@dataclass
class Call:
    step: str
    phase: str
    attempt: int
    key: str
    thread: str
    result: Any = None
    finished: bool = False


class Scripted(Service):
    """One service for every step: ``do`` (action) and ``undo`` (compensation).

    ``script[(step, phase)]`` lists what each attempt does: ``ok``, ``reject``, ``error``,
    ``block`` (wait on ``self.release`` first, then succeed) or ``block_reject`` (wait, then
    raise ``Rejected``); attempts past the list succeed.
    """

    def __init__(self, script: dict[tuple[str, str], list[str]] | None = None) -> None:
        super().__init__()
        self.script = script or {}
        self.calls: list[Call] = []
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.lock = threading.Lock()

    def _run(self, command: Any, phase: str) -> dict[str, Any]:
        call = Call(command.step, phase, command.attempt, command.key,
                    threading.current_thread().name, command.result)
        with self.lock:
            self.calls.append(call)
        plan = self.script.get((command.step, phase), [])
        index = sum(1 for c in self.calls if c.step == command.step and c.phase == phase) - 1
        what = plan[index] if index < len(plan) else "ok"
        try:
            if what in ("block", "block_reject"):
                self.blocked.set()
                assert self.release.wait(30), "test never released the handler"
            if what in ("reject", "block_reject"):
                raise Rejected(f"{command.step} says no")
            if what == "error":
                raise RuntimeError(f"{command.step} broke")
            return {"step": command.step, "attempt": command.attempt}
        finally:
            call.finished = True

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        return self._run(command, "action")

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return self._run(command, "compensation")

    def actions(self) -> list[str]:
        return [c.step for c in self.calls if c.phase == "action"]

    def compensations(self) -> list[str]:
        return [c.step for c in self.calls if c.phase == "compensation"]


class Other(Scripted):
    """The same, as a second service (``other``), so one can block while the first works."""


@dataclass
class StepSpec:
    name: str
    compensation: bool = True
    service: str = "svc"
    pivot: bool = False
    retry: dict[str, Any] | None = None
    timeout: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_flow(*steps: StepSpec | str, name: str = "test_flow", attempts: int = 1,
              backoff: str = "1s", multiplier: float = 2, max_backoff: str | None = "1m",
              jitter: bool = False, timeout: str = "5s", deadline: str | None = None,
              on_compensation_failure: str = "park", instances: int = 1,
              schema: dict[str, Any] | None = None) -> Flow:
    """A flow over the ``svc`` service (``tests.support:Scripted``), and ``other`` if a step
    names it."""
    retry: dict[str, Any] = {"attempts": attempts, "backoff": backoff, "multiplier": multiplier,
                             "jitter": jitter}
    if max_backoff is not None:
        retry["max_backoff"] = max_backoff
    doc: dict[str, Any] = {
        "saga": name,
        "services": {"svc": {"class": "tests.support:Scripted", "instances": instances}},
        "defaults": {"retry": retry, "timeout": timeout,
                     "on_compensation_failure": on_compensation_failure},
        "steps": [],
    }
    if schema is not None:
        doc["input"] = schema
    if deadline is not None:
        doc["deadline"] = deadline
    after_pivot = False
    for spec in steps:
        if isinstance(spec, str):
            spec = StepSpec(spec)
        step: dict[str, Any] = {"name": spec.name, "service": spec.service, "action": "do"}
        if spec.service == "other":
            doc["services"]["other"] = "tests.support:Other"
        if spec.compensation and not spec.pivot and not after_pivot:
            step["compensation"] = "undo"
        if spec.pivot:
            step["pivot"] = True
        if spec.retry is not None:
            step["retry"] = spec.retry
        if spec.timeout is not None:
            step["timeout"] = spec.timeout
        step.update(spec.extra)
        doc["steps"].append(step)
        after_pivot = after_pivot or spec.pivot
    return parse_flow(yaml.safe_dump(doc, sort_keys=False), source=f"<{name}>")


def types(result: Any, *, with_step: bool = True) -> list[str]:
    """The history as ``type`` or ``type:step`` strings."""
    return [f"{e.type}:{e.step}" if with_step and e.step else e.type for e in result.history]


# -- the DESIGN.md §6 EVENT contract and the §4.5 invariants, checked on a history -------------
DATA_KEYS = {
    "saga.started": {"input", "deadline_at"},
    "step.started": {"payload", "timeout_at"},
    "compensation.started": {"payload", "timeout_at"},
    "step.succeeded": {"output"},
    "compensation.succeeded": {"output"},
    "step.failed": {"error", "kind"},
    "compensation.failed": {"error", "kind"},
    "step.retrying": {"next_attempt_at"},
    "compensation.retrying": {"next_attempt_at"},
    "reply.ignored": {"phase", "attempt", "outcome"},
    "saga.failed": {"reason"},
}
PER_ATTEMPT = ("step.", "compensation.")
REPLY_OUTCOMES = ("succeeded", "failed")


def check_history(history: Sequence[Event]) -> None:
    """DESIGN.md §6 EVENT shape, §4.1 (nothing after a terminal event but a retry) and §4.5
    (an attempt has at most one ``timed_out`` and one reply outcome)."""
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    seen: set[str] = set()
    outcomes: Counter[tuple[str, str, str | None, int | None]] = Counter()
    ended = False
    for event in history:
        where = f"seq {event.seq} {event.type}"
        assert not ended or event.type == "saga.retried", f"{where} after a terminal event"
        ended = event.type in TERMINAL_EVENTS or (ended and event.type != "saga.retried")
        assert DATA_KEYS.get(event.type, set()) <= set(event.data), where
        if event.type.startswith(PER_ATTEMPT) or event.type == "reply.ignored":
            assert event.step is not None and event.attempt is not None, where
        if event.type.endswith(".failed") and event.type != "saga.failed":
            assert event.data["kind"] in ("rejected", "error"), where
        if event.type.startswith(PER_ATTEMPT):
            prefix, _, what = event.type.partition(".")
            bucket = "reply" if what in REPLY_OUTCOMES else what
            if bucket in ("reply", "timed_out"):
                outcomes[(prefix, bucket, event.step, event.attempt)] += 1
        if event.seq > 1 and event.type not in ("saga.cancelled", "saga.retried"):
            assert event.causation_id in seen, f"{where}: causation {event.causation_id!r}"
        seen.add(event.event_id)
    doubled = {k: n for k, n in outcomes.items() if n > 1}
    assert not doubled, f"an attempt has more than one outcome of a kind: {doubled}"


def attempts_of(history: Sequence[Event], type_: str, step: str) -> list[int | None]:
    """The attempt of each ``type_`` event of ``step``, in order."""
    return [e.attempt for e in history if e.type == type_ and e.step == step]


SAGA_CODE = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r}); "
             "import cli; cli.main()")
"""``python -c SAGA_CODE ARGS...`` runs the ``saga`` command of this checkout, from any cwd."""


def saga_cli(*args: str, cwd: Path | None = None, stdin: str | None = None,
             env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``saga`` command of this checkout in a subprocess, in ``cwd`` (default: the
    checkout), and return what it did."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-c", SAGA_CODE, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or root, input=stdin, env=env)
