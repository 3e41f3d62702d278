"""Checking a run: the saga guarantees (DESIGN.md §4), the flow's plan, and business rules.

:func:`check_invariants` raises :class:`InvariantViolation` (an ``AssertionError``, so pytest and
hypothesis treat it as a test failure) naming the invariant and the place in the history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit import audit_saga
from ..plan import plan
from ._harness import BatchRun, HarnessRun

__all__ = ["Checked", "InvariantViolation", "check_batch", "check_invariants", "invariant"]

_MARK = "__sagactor_invariant__"


def invariant(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a service method as a business invariant (``def stock_never_negative(self)``).

    It is called after every run and must raise (``AssertionError`` or anything) when broken.
    """
    setattr(method, _MARK, True)
    return method


class InvariantViolation(AssertionError):
    """A run broke an invariant; ``invariant`` names it, ``seq`` the place in the history."""

    def __init__(self, invariant: str, message: str, run: HarnessRun, seq: int | None = None):
        self.invariant = invariant
        self.seq = seq
        self.run = run
        where = f" (at seq {seq})" if seq is not None else ""
        super().__init__(f"{invariant}{where}: {message}\nschedule:\n"
                         f"{_indent(run.schedule.describe())}\nhistory:\n{run.history()}")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


@dataclass
class Checked:
    """What was checked for one run, and what could not be."""

    invariants: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)


def _single_final_fault(run: HarnessRun) -> tuple[str, str] | None:
    """The (step, kind) of ``saga plan`` that a one-fault schedule amounts to, if any."""
    schedule = run.schedule
    if schedule.crash_after is not None or len(schedule.faults) != 1:
        return None
    ((phase, step_name, attempt), kind), = schedule.faults.items()
    if phase != "action":
        return None
    step = run.flow.step(step_name)
    first = next((e for e in run.events if e.type in ("step.failed", "step.timed_out")), None)
    if first is None or (first.step, first.attempt) != (step_name, attempt):
        return None  # the fault never decided anything: the step was not reached, or failed
    if step.is_wait:
        return step_name, "timeout"  # any fault on a wait: its event never comes
    if kind == "reject":
        return step_name, "rejected"
    if step.retry.attempts == 1 and attempt == 1:
        if kind == "error":
            return step_name, "error"
        if kind in ("timeout", "late"):
            return step_name, "timeout"
    return None


def _as_parallel(compiled: Any, taken: tuple[Any, ...], wanted: tuple[Any, ...]) -> tuple[
        tuple[Any, ...], tuple[Any, ...]]:
    """Plan and run compared where parallel branches run: the same end, the main sequence's
    compensations in the same order, and no branch step undone that the plan does not undo."""
    blocks = set(compiled.blocks)
    main_taken = [s for s in taken[2] if s not in compiled.track_of and s not in blocks]
    main_wanted = [s for s in wanted[2] if s not in compiled.track_of]
    extra = sorted(s for s in taken[2] if s in compiled.track_of and s not in wanted[2])
    return (*taken[:2], main_taken, extra), (*wanted[:2], main_wanted, [])


def check_invariants(run: HarnessRun, *,
                     invariants: Iterable[Callable[[Mapping[str, Any]], Any]] = (),
                     atomicity: bool = True) -> Checked:
    """Check one run; raise :class:`InvariantViolation` on the first broken invariant.

    * every guarantee of DESIGN.md §4 over the history (:mod:`sagas.audit`);
    * for a schedule with a single fault that decides a step's outcome: the recovery taken is
      the one ``saga plan`` states for that failure;
    * semantic atomicity: a saga that ends ``compensated`` leaves every service's
      ``snapshot()`` as it was (services without one are listed as not checked);
    * business invariants: service methods marked :func:`invariant`, and ``invariants``
      (functions of the services by name).
    """
    checked = Checked()
    if not run.events or run.status == "running":
        raise InvariantViolation("termination", "the saga did not end", run)
    for violation in audit_saga(run.record(), now=run.events[-1].at, flow=run.compiled,
                                expect_terminal=True):
        raise InvariantViolation(f"§4 {violation.rule}", violation.message, run, violation.seq)
    checked.invariants.append("saga guarantees (§4)")

    single = _single_final_fault(run)
    if single is not None:
        route = tuple(e.data.get("branch") for e in run.events if e.type == "choice.made")
        expected = plan(run.compiled, *single, route=route)
        taken = (run.status, run.reason, run.compensated())
        wanted = (expected.status, expected.reason, [s for s, _ in expected.compensations])
        if run.compiled.tracks:  # parallel branches: the plan assumes the other branches had
            # finished; in a run they may have stopped sooner, and they undo concurrently
            taken, wanted = _as_parallel(run.compiled, taken, wanted)
        if taken != wanted:
            raise InvariantViolation(
                "plan", f"{single[0]} {single[1]}: `saga plan` says {wanted}, the run took "
                f"{taken}", run)
        checked.invariants.append("recovery equals saga plan")

    if atomicity and run.status == "compensated":
        for name, before in run.snapshots_before.items():
            if before is None:
                checked.not_checked.append(f"atomicity of {name} (no snapshot())")
                continue
            after = run.snapshots_after[name]
            if after != before:
                raise InvariantViolation(
                    "semantic atomicity",
                    f"service {name!r} changed although the saga was compensated: "
                    f"before {before!r}, after {after!r}", run)
        checked.invariants.append("semantic atomicity")

    _business(run, run.services, invariants, checked)
    return checked


def check_batch(batch: BatchRun, *,
                invariants: Iterable[Callable[[Mapping[str, Any]], Any]] = ()) -> Checked:
    """Check sagas that ran concurrently on shared services: each one's guarantees (§4), then
    the business invariants once, over the services they shared. (Semantic atomicity is a
    property of a saga run alone, so it is not checked here.)"""
    checked = Checked()
    for run in batch.runs:
        if not run.events or run.status == "running":
            raise InvariantViolation("termination", "the saga did not end", run)
        for violation in audit_saga(run.record(), now=run.events[-1].at, flow=run.compiled,
                                    expect_terminal=True):
            raise InvariantViolation(f"§4 {violation.rule}", violation.message, run,
                                     violation.seq)
    checked.invariants.append(f"saga guarantees (§4) x{len(batch.runs)}")
    if batch.runs:
        _business(batch.runs[-1], batch.services, invariants, checked)
    return checked


def _business(run: HarnessRun, services: Mapping[str, Any],
              invariants: Iterable[Callable[[Mapping[str, Any]], Any]],
              checked: Checked) -> None:
    for name, service in services.items():
        for attr in dir(type(service)):
            method = getattr(service, attr, None)
            if callable(method) and getattr(method, _MARK, False):
                try:
                    method()
                except Exception as exc:
                    raise InvariantViolation(f"{name}.{attr}", f"{type(exc).__name__}: {exc}",
                                             run) from None
                checked.invariants.append(f"{name}.{attr}")
    for function in invariants:
        try:
            function(services)
        except Exception as exc:
            label = getattr(function, "__name__", repr(function))
            raise InvariantViolation(label, f"{type(exc).__name__}: {exc}", run) from None
        checked.invariants.append(getattr(function, "__name__", repr(function)))
