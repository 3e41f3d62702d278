"""Test doubles shared by the engine tests: a scripted service and a flow builder."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import yaml

from actors import Rejected, Service, handles
from sagas import Flow, parse_flow


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

    ``script[(step, phase)]`` lists what each attempt does: ``ok``, ``reject``, ``error`` or
    ``block`` (wait on ``self.release`` first, then succeed); attempts past the list succeed.
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
            if what == "reject":
                raise Rejected(f"{command.step} says no")
            if what == "error":
                raise RuntimeError(f"{command.step} broke")
            if what == "block":
                self.blocked.set()
                assert self.release.wait(30), "test never released the handler"
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
