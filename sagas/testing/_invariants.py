"""Checking a run: the saga guarantees (README, Guarantees), the flow's plan, business rules.

:func:`check_invariants` raises :class:`InvariantViolation` (an ``AssertionError``, so pytest and
hypothesis treat it as a test failure) naming the invariant and the place in the history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit import audit_saga
from ..language.plan import plan
from ._guard import current_watch
from ._harness import BatchRun, HarnessRun
from ._marks import INVARIANT_MARK, invariant

__all__ = ["Checked", "InvariantViolation", "check_batch", "check_invariants", "invariant"]

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
    if schedule.crash_after is not None or schedule.size != 1:
        return None
    if schedule.persistent:  # every attempt of the action fails: the step's attempts run out
        ((phase, step_name), kind), = schedule.persistent.items()
        attempt = 1
    else:
        ((phase, step_name, attempt), kind), = schedule.faults.items()
    if phase != "action":
        return None
    try:
        step = run.flow.step(step_name)
    except KeyError:  # a kept counterexample naming a step the flow no longer has
        return None
    first = next((e for e in run.events if e.type in ("step.failed", "step.timed_out")), None)
    if first is None or (first.step, first.attempt) != (step_name, attempt):
        return None  # the fault never decided anything: the step was not reached, or failed
    if step.is_wait:
        return step_name, "timeout"  # any fault on a wait: its event never comes
    if schedule.persistent:
        if kind == "error":
            return step_name, "error"
        return (step_name, "timeout") if kind in ("timeout", "lost") else None
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
                     atomicity: bool = True, reference: HarnessRun | None = None) -> Checked:
    """Check one run; raise :class:`InvariantViolation` on the first broken invariant.

    * every call into a service returned (within the harness's ``handler_timeout``);
    * every guarantee of the engine over the history (:mod:`sagas.audit`; the README's
      Guarantees section lists them);
    * for a schedule with a single fault that decides a step's outcome: the recovery taken is
      the one ``saga plan`` states for that failure (up to the saga's first end);
    * semantic atomicity: a saga that ends ``compensated`` leaves every service's
      ``snapshot()`` as it was (services without one are listed as not checked);
    * effects as without faults: given ``reference``, a run of the same input without faults
      (on fresh services), a saga that ends ``completed`` on the same route leaves every
      service's ``snapshot()`` as the reference did — a fault the engine recovers from must not
      apply an effect twice, or lose one;
    * business invariants: service methods marked :func:`invariant`, and ``invariants``
      (functions of the services by name).
    """
    checked = Checked()
    if run.hung is not None:
        raise InvariantViolation("handlers return", run.hung, run)
    if not run.events or run.status == "running":
        raise InvariantViolation("termination", _not_ended(run), run)
    for violation in audit_saga(run.record(), now=run.events[-1].at, flow=run.compiled,
                                expect_terminal=True):
        raise InvariantViolation(f"guarantee {violation.rule}", violation.message, run,
                                 violation.seq)
    checked.invariants.append("saga guarantees")

    single = _single_final_fault(run)
    if single is not None:
        route = tuple(e.data.get("branch") for e in run.events if e.type == "choice.made")
        expected = plan(run.compiled, *single, route=route)
        taken = (run.first_status, run.first_reason, run.compensated(until_first_end=True))
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
            if _broken_snapshot(before) or _broken_snapshot(after):
                checked.not_checked.append(f"atomicity of {name} (its snapshot() raised)")
                continue
            if canonical(after) != canonical(before):
                raise InvariantViolation(
                    "semantic atomicity",
                    f"service {name!r} changed although the saga was compensated: "
                    f"before {before!r}, after {after!r}", run)
        checked.invariants.append("semantic atomicity")

    if reference is not None:
        _same_effects(run, reference, checked)

    _business(run, run.services, invariants, checked)
    return checked


def canonical(value: Any) -> Any:
    """A snapshot compared as what it holds, not in which order: lists are compared as
    multisets (parallel branches may append in another order when a fault delays one), dict
    keys as sets."""
    if isinstance(value, Mapping):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted((canonical(item) for item in value),
                      key=lambda item: json.dumps(item, sort_keys=True, default=repr))
    return value


def _broken_snapshot(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<snapshot raised ")


def _not_ended(run: HarnessRun) -> str:
    if len(run.events) < 50:
        return "the saga did not end"
    retrying = [e.step for e in run.events[-20:] if e.type == "compensation.failed"]
    if retrying:
        return (f"the saga did not end: after {len(run.events)} events it still retries the "
                f"compensation of {retrying[-1]!r} (retry_forever), which never succeeds")
    return f"the saga did not end within {len(run.events)} events"


def _same_effects(run: HarnessRun, reference: HarnessRun, checked: Checked) -> None:
    """A run that completed under faults left the services as the fault-free run did."""
    if (run.status != "completed" or reference.status != "completed"
            or run.route() != reference.route() or run.input != reference.input
            or run.snapshots_before != reference.snapshots_before):
        return
    for name, wanted in reference.snapshots_after.items():
        if wanted is None or (reference.stable is not None and name not in reference.stable):
            continue  # no snapshot(), or one that differs between runs without faults
        after = run.snapshots_after.get(name)
        if _broken_snapshot(wanted) or _broken_snapshot(after):
            checked.not_checked.append(f"effects as without faults on {name} (its snapshot() "
                                       "raised)")
            continue
        if canonical(after) != canonical(wanted):
            raise InvariantViolation(
                "effects as without faults",
                f"service {name!r} ended {after!r}, but {wanted!r} when the same input ran "
                "without faults: an effect was applied twice or lost", run)
    checked.invariants.append("effects as without faults")


def check_batch(batch: BatchRun, *,
                invariants: Iterable[Callable[[Mapping[str, Any]], Any]] = ()) -> Checked:
    """Check sagas that ran concurrently on shared services: each one's guarantees, then
    the business invariants once, over the services they shared. (Semantic atomicity is a
    property of a saga run alone, so it is not checked here.)"""
    checked = Checked()
    for run in batch.runs:
        if run.hung is not None:
            raise InvariantViolation("handlers return", run.hung, run)
        if not run.events or run.status == "running":
            raise InvariantViolation("termination", _not_ended(run), run)
        for violation in audit_saga(run.record(), now=run.events[-1].at, flow=run.compiled,
                                    expect_terminal=True):
            raise InvariantViolation(f"guarantee {violation.rule}", violation.message, run,
                                     violation.seq)
    checked.invariants.append(f"saga guarantees x{len(batch.runs)}")
    if batch.runs:
        _business(batch.runs[-1], batch.services, invariants, checked)
    return checked


def _business(run: HarnessRun, services: Mapping[str, Any],
              invariants: Iterable[Callable[[Mapping[str, Any]], Any]],
              checked: Checked) -> None:
    watch = current_watch()  # inside saga test: a hanging invariant is found like a handler
    for name, service in services.items():
        for attr in dir(type(service)):
            method = getattr(service, attr, None)
            if callable(method) and getattr(method, INVARIANT_MARK, False):
                try:
                    if watch is not None:
                        watch.enter(f"invariant {name}.{attr}()", run)
                    method()
                except Exception as exc:
                    raise InvariantViolation(f"{name}.{attr}", f"{type(exc).__name__}: {exc}",
                                             run) from None
                finally:
                    if watch is not None:
                        watch.leave()
                checked.invariants.append(f"{name}.{attr}")
    for function in invariants:
        label = getattr(function, "__name__", repr(function))
        try:
            if watch is not None:
                watch.enter(f"invariant {label}()", run)
            function(services)
        except Exception as exc:
            raise InvariantViolation(label, f"{type(exc).__name__}: {exc}", run) from None
        finally:
            if watch is not None:
                watch.leave()
        checked.invariants.append(label)
