"""Testing sagas and property-testing flows — the same machinery sagactor's own tests use.

* :class:`SagaTestEnvironment` — a full runtime (actors, shards, a store) on virtual time, with
  fault injection: for example-based tests of whole systems.
* :func:`run_schedule` — a deterministic harness: one saga under one fault :class:`Schedule`,
  no threads, virtual time; thousands of runs a second.
* :func:`fault_schedules`, :func:`inputs` — hypothesis strategies for schedules and inputs.
* :func:`check_invariants` — the saga guarantees, the flow's plan, semantic atomicity and your
  business :func:`invariant` s, checked on a run.
"""

from __future__ import annotations

from actors import Fault, Faults, VirtualClock

from ..loader import load_flow
from ._environment import EventLog, SagaTestEnvironment
from ._harness import FAULTS, BatchRun, HarnessRun, Schedule, run_batch, run_schedule
from ._invariants import (
    Checked,
    InvariantViolation,
    check_batch,
    check_invariants,
    invariant,
)
from ._runner import FlowTestReport, test_flow
from ._strategies import batches, fault_schedules, inputs

__all__ = [
    "FAULTS",
    "BatchRun",
    "Checked",
    "EventLog",
    "Fault",
    "Faults",
    "FlowTestReport",
    "HarnessRun",
    "InvariantViolation",
    "SagaTestEnvironment",
    "Schedule",
    "VirtualClock",
    "batches",
    "check_batch",
    "check_invariants",
    "fault_schedules",
    "inputs",
    "invariant",
    "load_flow",
    "run_batch",
    "run_schedule",
    "test_flow",
]
