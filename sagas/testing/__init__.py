"""Testing sagas and property-testing flows — the same machinery sagactor's own tests use.

* :class:`SagaTestEnvironment` — a full runtime (actors, shards, a store) on virtual time, with
  fault injection: for example-based tests of whole systems.
* :func:`run_schedule` — a deterministic harness: one saga under one fault :class:`Schedule`,
  no threads, virtual time; thousands of runs a second.
* :func:`fault_sweep` — every single fault point (and recovery pair) along each route the
  inputs reach, as ``(input, schedule)`` pairs for ``pytest.mark.parametrize``;
  :func:`explore_routes` finds inputs that reach the routes, :func:`single_faults` lists a
  route's fault points.
* :func:`fault_schedules`, :func:`inputs` — hypothesis strategies for schedules and inputs.
* :func:`check_invariants` — the saga guarantees, the flow's plan, semantic atomicity, the
  same effects as without faults, and your business :func:`invariant` s, checked on a run.
* :func:`test_flow` — all of it, as ``saga test`` does it.
* :class:`CoreDriver` — one saga driven through the pure core by hand: replies, timers, cancels
  and restarts in exactly the order a test chooses, on a clock it moves, to pin down one
  interleaving.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._marks import invariant

if TYPE_CHECKING:  # the names below load on first use: `invariant` alone imports nothing heavy
    from actors import Fault, Faults, VirtualClock

    from ..language.loader import load_flow
    from ._core_driver import CoreDriver
    from ._environment import EventLog, SagaTestEnvironment
    from ._guard import HandlerHung
    from ._harness import (
        FAULTS,
        PERSISTENT_FAULTS,
        BatchRun,
        HarnessRun,
        Schedule,
        make_services,
        run_batch,
        run_schedule,
    )
    from ._home import private_hypothesis_home
    from ._invariants import Checked, InvariantViolation, check_batch, check_invariants
    from ._routes import Route, explore_routes
    from ._runner import FlowTestReport, fault_sweep, test_flow
    from ._strategies import batches, fault_schedules, inputs
    from ._sweep import FaultPoint, single_faults

_WHERE = {
    "Fault": "actors", "Faults": "actors", "VirtualClock": "actors",
    "load_flow": "sagas.language.loader", "CoreDriver": "._core_driver",
    "EventLog": "._environment", "SagaTestEnvironment": "._environment",
    "HandlerHung": "._guard", "private_hypothesis_home": "._home",
    "FAULTS": "._harness", "PERSISTENT_FAULTS": "._harness", "BatchRun": "._harness",
    "HarnessRun": "._harness", "Schedule": "._harness", "make_services": "._harness",
    "run_batch": "._harness", "run_schedule": "._harness",
    "Checked": "._invariants", "InvariantViolation": "._invariants",
    "check_batch": "._invariants", "check_invariants": "._invariants",
    "Route": "._routes", "explore_routes": "._routes",
    "FlowTestReport": "._runner", "fault_sweep": "._runner", "test_flow": "._runner",
    "batches": "._strategies", "fault_schedules": "._strategies", "inputs": "._strategies",
    "FaultPoint": "._sweep", "single_faults": "._sweep",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where, __name__) if where.startswith(".") \
        else importlib.import_module(where)
    value = getattr(module, name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "FAULTS",
    "PERSISTENT_FAULTS",
    "BatchRun",
    "Checked",
    "CoreDriver",
    "EventLog",
    "Fault",
    "FaultPoint",
    "Faults",
    "FlowTestReport",
    "HandlerHung",
    "HarnessRun",
    "InvariantViolation",
    "Route",
    "SagaTestEnvironment",
    "Schedule",
    "VirtualClock",
    "batches",
    "check_batch",
    "check_invariants",
    "explore_routes",
    "fault_schedules",
    "fault_sweep",
    "inputs",
    "invariant",
    "load_flow",
    "make_services",
    "private_hypothesis_home",
    "run_batch",
    "run_schedule",
    "single_faults",
    "test_flow",
]
