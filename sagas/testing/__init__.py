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
"""

from __future__ import annotations

from actors import Fault, Faults, VirtualClock

from ..loader import load_flow
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
from ._invariants import (
    Checked,
    InvariantViolation,
    check_batch,
    check_invariants,
    invariant,
)
from ._routes import Route, explore_routes
from ._runner import FlowTestReport, fault_sweep, test_flow
from ._strategies import batches, fault_schedules, inputs
from ._sweep import FaultPoint, single_faults

__all__ = [
    "FAULTS",
    "PERSISTENT_FAULTS",
    "BatchRun",
    "Checked",
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
    "run_batch",
    "run_schedule",
    "single_faults",
    "test_flow",
]
