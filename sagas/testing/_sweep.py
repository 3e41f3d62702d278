"""The fault space of one route, covered before it is sampled.

A *fault point* is one thing that can go wrong along the route an input takes, as seen in its
run without faults: for each action and compensation that ran, each fault kind on its first
attempt, each fault kind on a retry (after an error), and each persistent fault (every
attempt); for each ``wait_for``, its event never coming; and a runtime crash after each event.
:func:`single_faults` lists them all; :func:`recovery_pairs` the pairs where recovery bugs hide
(an effect applied twice or left unknown, then a later step that forces compensation; or a
failure that forces compensation, then trouble in that compensation); :func:`other_pairs` the
rest of the pairs, in a seeded order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..language.model import Flow, Step
from ._harness import FAULTS, PERSISTENT_FAULTS, HarnessRun, Schedule

__all__ = ["FaultPoint", "other_pairs", "recovery_pairs", "single_faults"]

EFFECT_FAULTS = ("redeliver", "duplicate", "late", "lost")  # the effect happens, maybe twice
FORCING = (("reject", "first"), ("error", "every"))  # a later step that makes the saga undo
UNKNOWN_OUTCOME = ("lost", "error")  # every attempt of a step: compensated, outcome unknown


@dataclass(frozen=True, order=True)
class FaultPoint:
    """One fault point: ``slot`` is ``first`` (attempt 1), ``retry`` (attempt 2, after an
    error on attempt 1), ``every`` (a persistent fault) or ``crash`` (``step`` is then the
    number of events after which the runtime crashes)."""

    phase: str
    step: str
    slot: str
    kind: str

    def schedule(self) -> Schedule:
        if self.slot == "crash":
            return Schedule(crash_after=int(self.step))
        if self.slot == "every":
            return Schedule(persistent={(self.phase, self.step): self.kind})
        if self.slot == "retry":
            return Schedule({(self.phase, self.step, 1): "error",
                             (self.phase, self.step, 2): self.kind})
        return Schedule({(self.phase, self.step, 1): self.kind})

    def describe(self) -> str:
        if self.slot == "crash":
            return f"crash after event {self.step}"
        where = {"first": "attempt 1", "retry": "a retry", "every": "every attempt"}[self.slot]
        return f"{self.phase} {self.step} {where}: {self.kind}"


def _reached(run: HarnessRun) -> list[tuple[str, str]]:
    """The (phase, step) targets that ran, in the order they first did."""
    seen: dict[tuple[str, str], None] = {}
    for event in run.events:
        if event.type == "step.started" and event.step:
            seen.setdefault(("action", event.step), None)
        elif event.type == "compensation.started" and event.step:
            seen.setdefault(("compensation", event.step), None)
    return list(seen)


def _step(flow: Flow, name: str) -> Step | None:
    try:
        return flow.step(name)
    except KeyError:
        return None


def _points_of(flow: Flow, phase: str, name: str) -> list[FaultPoint]:
    step = _step(flow, name)
    if step is None or step.is_delay or step.is_parallel:
        return []  # a pause calls no service, nor does a block (its branches' steps do)
    if step.is_wait:
        return [FaultPoint(phase, name, "first", "timeout")] if phase == "action" else []
    points = [FaultPoint(phase, name, "first", kind) for kind in FAULTS]
    if step.retry.attempts >= 2 or (phase == "compensation"
                                    and step.on_compensation_failure == "retry_forever"):
        points += [FaultPoint(phase, name, "retry", kind) for kind in FAULTS]
    points += [FaultPoint(phase, name, "every", kind) for kind in PERSISTENT_FAULTS]
    return points


def single_faults(flow: Flow, baseline: HarnessRun, *, crashes: bool = True) -> list[FaultPoint]:
    """Every single fault point along the route ``baseline`` (a run without faults) took."""
    points: list[FaultPoint] = []
    for phase, name in _reached(baseline):
        points += _points_of(flow, phase, name)
    if crashes:
        points += [FaultPoint("runtime", str(n), "crash", "crash")
                   for n in range(1, len(baseline.events))]
    return points


def recovery_pairs(flow: Flow, baseline: HarnessRun) -> list[Schedule]:
    """Two faults where recovery bugs hide, along ``baseline``'s route:

    * an action whose effect happens twice or unseen (redelivered, duplicated, late, reply
      lost), then a later step that fails (rejected, or every attempt errs), so the first is
      compensated;
    * a later step that fails that way, then trouble in the compensation of an earlier one
      (any fault on its first attempt or a retry, or a persistent one);
    * a step whose every attempt is lost or errs (so it is compensated, its outcome unknown),
      then trouble in its own compensation.
    """
    actions = [name for phase, name in _reached(baseline) if phase == "action"]
    callers = [n for n in actions if (s := _step(flow, n)) is not None and s.calls_service]
    pairs: list[Schedule] = []
    for i, earlier in enumerate(callers):
        for later in callers[i + 1:]:
            for kind, slot in FORCING:
                forcing = FaultPoint("action", later, slot, kind).schedule()
                for effect in EFFECT_FAULTS:
                    pairs.append(FaultPoint("action", earlier, "first", effect).schedule()
                                 .merged(forcing))
    for j, later in enumerate(callers):
        for kind, slot in FORCING:
            forcing = FaultPoint("action", later, slot, kind).schedule()
            for earlier in callers[:j]:
                step = _step(flow, earlier)
                if step is None or step.compensation is None:
                    continue
                for point in _points_of(flow, "compensation", earlier):
                    pairs.append(forcing.merged(point.schedule()))
    # a step whose own outcome stays unknown (every attempt lost or erring) is compensated
    # itself: trouble in that compensation (the last step's undo is reached no other way)
    for name in callers:
        step = _step(flow, name)
        if step is None or step.compensation is None:
            continue
        for kind in UNKNOWN_OUTCOME:
            forcing = FaultPoint("action", name, "every", kind).schedule()
            for point in _points_of(flow, "compensation", name):
                pairs.append(forcing.merged(point.schedule()))
    return pairs


def other_pairs(singles: list[FaultPoint], seed: int, limit: int) -> Iterator[Schedule]:
    """Up to ``limit`` pairs of single fault points on different targets, in a seeded order."""
    n = len(singles)
    total = n * (n - 1) // 2
    rng = random.Random(f"pairs:{seed}")
    if limit >= total:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        rng.shuffle(pairs)
    else:
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < limit:
            i, j = sorted(rng.sample(range(n), 2))
            chosen.add((i, j))
        pairs = sorted(chosen, key=lambda _: rng.random())
    for i, j in pairs:
        a, b = singles[i], singles[j]
        if (a.phase, a.step) == (b.phase, b.step) or (a.slot == b.slot == "crash"):
            continue
        yield a.schedule().merged(b.schedule())
