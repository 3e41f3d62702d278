"""Runs of the deterministic harness on service objects the caller passes in, run after run:
each run starts from an empty inbox, a run after one that hung is not held up by it, runs from
several threads do not mix, and snapshots are taken as the services define them."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from sagas.testing import run_schedule
from tests.support import Scripted, make_flow


def test_runs_on_the_same_objects_each_start_from_an_empty_inbox() -> None:
    flow = make_flow("a", "b")
    svc = Scripted()
    for _ in range(3):  # the same saga id every time: an inbox kept would replay the replies
        run = run_schedule(flow, {}, services={"svc": svc})
        assert run.status == "completed"
        assert run.invocations == [("action", "a", 1), ("action", "b", 1)]
    assert svc.actions() == ["a", "b"] * 3


def test_a_run_after_one_that_hung_on_the_same_objects_completes() -> None:
    flow = make_flow("a", "b")
    svc = Scripted({("a", "action"): ["block"]})  # the first call blocks until released
    try:
        hung = run_schedule(flow, {}, services={"svc": svc}, handler_timeout=0.2)
        assert hung.hung is not None and "svc.do" in hung.hung
        assert svc.blocked.is_set()  # still inside the handler, on the abandoned worker
        run = run_schedule(flow, {}, services={"svc": svc}, saga_id="again")
        assert run.status == "completed" and run.hung is None
        assert run.invocations == [("action", "a", 1), ("action", "b", 1)]
    finally:
        svc.release.set()


@pytest.mark.parametrize("handler_timeout", [None, 5.0])
def test_runs_from_several_threads_on_the_same_objects_do_not_mix(
        handler_timeout: float | None) -> None:
    flow = make_flow("a", "b", "c")
    svc = Scripted()
    runs: dict[str, list[Any]] = {}

    def many(tag: str) -> None:
        runs[tag] = [run_schedule(flow, {}, services={"svc": svc}, saga_id=f"{tag}-{n}",
                                  handler_timeout=handler_timeout) for n in range(40)]

    threads = [threading.Thread(target=many, args=(tag,)) for tag in ("x", "y", "z")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(runs) == ["x", "y", "z"]
    for tag, done in runs.items():
        for n, run in enumerate(done):
            assert run.saga_id == f"{tag}-{n}" and run.status == "completed"
            assert run.invocations == [("action", s, 1) for s in ("a", "b", "c")]
            assert {e.event_id.split("/")[0] for e in run.events} == {run.saga_id}
    assert len(svc.actions()) == 3 * 40 * 3


class Counting(Scripted):
    """Hands out the same dict every time, changed in place."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {"calls": []}

    def snapshot(self) -> dict[str, Any]:
        self.state["calls"][:] = [c.step for c in self.calls]
        return self.state


def test_snapshots_are_copies_taken_as_each_service_defines_them() -> None:
    flow = make_flow("a", "b")
    counting = Counting()
    run = run_schedule(flow, {}, services={"svc": counting})
    assert run.snapshots_before == {"svc": {"calls": []}}
    assert run.snapshots_after == {"svc": {"calls": ["a", "b"]}}
    run_schedule(flow, {}, services={"svc": counting}, saga_id="later")
    assert run.snapshots_after == {"svc": {"calls": ["a", "b"]}}  # a copy: later runs keep it

    plain = Scripted()
    assert run_schedule(flow, {}, services={"svc": plain}).snapshots_after == {"svc": None}
    plain.snapshot = lambda: {"set": "on the object"}  # type: ignore[method-assign]
    assert run_schedule(flow, {}, services={"svc": plain}).snapshots_after == {
        "svc": {"set": "on the object"}}


@pytest.mark.parametrize("handler_timeout", [None, 5.0])
def test_a_run_leaves_no_reference_cycles_for_the_collector(handler_timeout: float | None) -> None:
    """What a run allocates goes when its last reference does: cyclic garbage would wait for
    the collector (S5 spent 7 % of its time there when a saga's record pointed back at its
    harness), and hold every run's objects until then."""
    flow = make_flow("a", "b")
    svc = Scripted()
    run_schedule(flow, {}, services={"svc": svc}, handler_timeout=handler_timeout)  # warm
    gc.collect()
    gc.disable()
    try:
        for n in range(20):
            run = run_schedule(flow, {}, services={"svc": svc}, saga_id=f"s-{n}",
                               handler_timeout=handler_timeout)
            assert run.status == "completed"
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0
