"""The baselines: what a 4-step "saga" costs with no orchestrator at all.

B0 — plain function calls: a saga is four calls, one per step, on one thread.
B1 — bare pykka (the baseline of DESIGN.md §5 and of every ratio): four ``ThreadingActor`` s, one
per step; 100 caller threads each run their share of the sagas, ``ask()`` ing each step in turn
with a timeout. No log, no retries, no compensations: a floor, not a competitor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pykka

from ._common import BenchmarkFailed, Result, expect, mean_in_flight

__all__ = ["run_plain", "run_pykka"]

PYKKA_CALLERS = 100
ASK_TIMEOUT = 10.0


class _Step:
    """A plain step "service": counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def act(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"step": self.name}


def run_plain(sagas: int) -> Result:
    """B0: four plain calls per saga, on one thread."""
    steps = [_Step(f"s{i}") for i in range(1, 5)]
    calls: list[Callable[[dict[str, Any]], dict[str, Any]]] = [step.act for step in steps]
    latencies = [0.0] * sagas
    clock = time.perf_counter
    begin = clock()
    for n in range(sagas):
        started = clock()
        payload = {"n": n}
        for call in calls:
            call(payload)
        latencies[n] = clock() - started
    elapsed = clock() - begin
    for step in steps:
        expect(f"calls to {step.name}", step.calls, sagas)
    return Result(sagas, elapsed, latencies,
                  {"calls": {step.name: step.calls for step in steps}})


class _StepActor(pykka.ThreadingActor):
    """One step as a pykka actor: counts the commands it answers; ``"count"`` asks how many."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.calls = 0

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.calls
        self.calls += 1
        return {"step": self.name, "n": message["n"]}


def run_pykka(sagas: int) -> Result:
    """B1: four pykka actors, 100 caller threads, one ``ask`` per step."""
    refs = [_StepActor.start(f"s{i}") for i in range(1, 5)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    bad: list[Any] = []

    def caller(first: int) -> None:
        mine: list[float] = []
        try:
            for n in range(first, sagas, PYKKA_CALLERS):
                started = time.perf_counter()
                for ref in refs:
                    reply = cast("dict[str, Any]", ref.ask({"n": n}, timeout=ASK_TIMEOUT))
                    if reply["n"] != n:
                        bad.append(reply)
                mine.append(time.perf_counter() - started)
        except BaseException as exc:
            errors.append(exc)
        latencies.extend(mine)

    try:
        threads = [threading.Thread(target=caller, args=(k,), daemon=True)
                   for k in range(min(PYKKA_CALLERS, sagas))]
        begin = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - begin
        if errors:
            raise BenchmarkFailed(f"an ask failed: {errors[0]!r}") from errors[0]
        calls = {f"s{i}": ref.ask("count", timeout=ASK_TIMEOUT) for i, ref in enumerate(refs, 1)}
    finally:
        pykka.ActorRegistry.stop_all()
    expect("replies for another saga", bad, [])
    expect("sagas timed", len(latencies), sagas)
    for name, n in calls.items():
        expect(f"calls to actor {name}", n, sagas)
    return Result(sagas, elapsed, latencies, {"calls": calls},
                  in_flight={"limit": PYKKA_CALLERS, "max": min(PYKKA_CALLERS, sagas),
                             "mean": mean_in_flight(sagas, elapsed, latencies)})
