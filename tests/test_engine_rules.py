"""DESIGN.md §4, items 1–6 and 9, through the public API, on virtual time: each rule, and the
corners of it (late replies of compensations, callbacks of repeated starts), with histories
checked against the §6 EVENT contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagas import IdConflict
from sagas.testing import SagaTestEnvironment
from tests.support import (
    Other,
    Scripted,
    StepSpec,
    attempts_of,
    check_history,
    make_flow,
    types,
)

THREE = ("a", "b", "c")


def env_with(script: dict | None = None, **kwargs) -> tuple[SagaTestEnvironment, Scripted]:
    service = Scripted(script)
    return SagaTestEnvironment(services={"svc": service}, **kwargs), service


def events_of(result, type_: str) -> list:
    return [e for e in result.history if e.type == type_]


# -- 1. termination ---------------------------------------------------------------------------
@pytest.mark.parametrize("script, status", [
    ({}, "completed"),
    ({("b", "action"): ["reject"]}, "compensated"),
    ({("b", "action"): ["error"]}, "compensated"),
    ({("b", "action"): ["error"], ("a", "compensation"): ["error"]}, "failed"),
])
def test_termination_each_saga_ends_in_exactly_one_terminal_state(script, status):
    env, _ = env_with(script)
    with env:
        result = env.run(make_flow(*THREE), {})
    assert result.status == status
    terminal = [e for e in result.history
                if e.type in ("saga.completed", "saga.compensated", "saga.failed")]
    assert len(terminal) == 1 and result.history[-1] is terminal[0]


# -- 2. backward recovery ---------------------------------------------------------------------
def test_backward_recovery_rejected_step_is_not_compensated():
    env, service = env_with({("b", "action"): ["reject"]})
    with env:
        result = env.run(make_flow(*THREE), {})
    assert result.status == "compensated"
    assert service.compensations() == ["a"]


def test_backward_recovery_step_that_ran_out_on_errors_is_compensated():
    env, service = env_with({("b", "action"): ["error", "error"]})
    with env:
        result = env.run(make_flow(*THREE, attempts=2), {})
    assert result.status == "compensated"
    assert service.compensations() == ["b", "a"]
    assert next(c.result for c in service.calls if c.phase == "compensation") is None


def test_backward_recovery_timed_out_step_is_compensated():
    env, service = env_with()
    env.faults.add(step="b", phase="action", kind="drop")
    with env:
        result = env.run(make_flow(*THREE), {})
    assert result.status == "compensated"
    assert types(result)[3:6] == ["step.started:b", "step.timed_out:b", "compensation.started:b"]
    assert service.compensations() == ["b", "a"]


def test_backward_recovery_compensations_run_one_at_a_time_in_reverse_order():
    env, service = env_with({("d", "action"): ["reject"]})
    with env:
        result = env.run(make_flow("a", "b", "c", "d"), {})
    comp = [e for e in result.history if e.type.startswith("compensation.")]
    assert [(e.type, e.step) for e in comp] == [
        ("compensation.started", "c"), ("compensation.succeeded", "c"),
        ("compensation.started", "b"), ("compensation.succeeded", "b"),
        ("compensation.started", "a"), ("compensation.succeeded", "a")]
    assert service.compensations() == ["c", "b", "a"]
    # the compensation carries the action's payload and its output
    assert [c.result["step"] for c in service.calls if c.phase == "compensation"] == \
        ["c", "b", "a"]


def test_backward_recovery_compensation_out_of_attempts_parks_saga_failed():
    env, service = env_with({("c", "action"): ["reject"],
                             ("b", "compensation"): ["error", "error"]})
    with env:
        result = env.run(make_flow(*THREE, attempts=2), {})
    assert (result.status, result.reason) == ("failed", "compensation_failed")
    assert service.compensations() == ["b", "b"]  # a is not compensated: parked at b
    assert events_of(result, "saga.failed")[0].data == {"reason": "compensation_failed"}


def test_backward_recovery_retry_resumes_a_parked_compensation_and_ends_compensated():
    """§4.2: after a compensation runs out of attempts (``park``), ``saga retry ID``
    "appends ``saga.retried`` and resumes from the parked compensation": ``Runtime.retry``
    re-hosts the ended saga (it once told the shard, which had forgotten it: a silent no-op)."""
    service = Scripted({("c", "action"): ["reject"], ("b", "compensation"): ["error", "error"]})
    with SagaTestEnvironment(services={"svc": service}) as env:
        first = env.run(make_flow("a", "b", "c", attempts=2), {})
        assert (first.status, first.reason) == ("failed", "compensation_failed")
        env.runtime.retry(first.saga_id)
        result = env.drive(first.saga_id)
    assert "saga.retried" in [e.type for e in result.history]
    assert result.status == "compensated"
    assert service.compensations() == ["b", "b", "b", "a"]
    check_history(result.history)


def test_backward_recovery_retry_forever_keeps_compensating_until_it_succeeds():
    env, service = env_with({("b", "action"): ["reject"],
                             ("a", "compensation"): ["error"] * 12})
    with env:
        result = env.run(make_flow(*THREE, attempts=2, max_backoff="30s",
                                   on_compensation_failure="retry_forever"), {})
    assert result.status == "compensated"
    assert len([c for c in service.calls if c.phase == "compensation"]) == 13
    delays = [e.data["next_attempt_at"] - e.at for e in events_of(result, "compensation.retrying")]
    assert max(delays) == 30.0  # capped


# -- 3. the pivot -----------------------------------------------------------------------------
PIVOTED = ("a", "b", StepSpec("p", pivot=True), StepSpec("z", compensation=False))


def test_pivot_rejected_recovers_backward():
    env, service = env_with({("p", "action"): ["reject"]})
    with env:
        result = env.run(make_flow(*PIVOTED), {})
    assert result.status == "compensated"
    assert service.compensations() == ["b", "a"]


def test_pivot_out_of_attempts_ends_failed_pivot_unknown_with_nothing_compensated():
    env, service = env_with({("p", "action"): ["error", "error", "error"]})
    with env:
        result = env.run(make_flow(*PIVOTED, attempts=3), {})
    assert (result.status, result.reason) == ("failed", "pivot_unknown")
    assert service.compensations() == []


def test_pivot_success_makes_recovery_forward_later_failure_ends_forward_recovery():
    env, service = env_with({("z", "action"): ["error", "error", "reject"]})
    with env:
        result = env.run(make_flow(*PIVOTED, attempts=3), {})
    assert (result.status, result.reason) == ("failed", "forward_recovery")
    assert service.actions().count("z") == 3  # retried first
    assert service.compensations() == []


def test_pivot_success_then_later_step_retries_to_completion():
    env, _ = env_with({("z", "action"): ["error", "error"]})
    with env:
        result = env.run(make_flow(*PIVOTED, attempts=3), {})
    assert result.status == "completed"


# -- 4. deadline and cancel -------------------------------------------------------------------
def test_deadline_before_pivot_times_out_in_flight_step_and_compensates():
    env, service = env_with()
    env.faults.add(step="b", phase="action", kind="drop")
    with env:
        result = env.run(make_flow(*PIVOTED, timeout="1m", deadline="10s"), {})
    assert result.status == "compensated"
    t = types(result)
    i = t.index("saga.deadline_exceeded")
    assert t[i + 1] == "step.timed_out:b"
    assert service.compensations() == ["b", "a"]
    deadline = events_of(result, "saga.deadline_exceeded")[0]
    assert deadline.at == result.history[0].at + 10


def test_deadline_cancels_pending_backoff():
    env, service = env_with({("b", "action"): ["error"] * 5})
    with env:
        result = env.run(make_flow(*THREE, attempts=5, backoff="20s", deadline="30s"), {})
    assert result.status == "compensated"
    assert service.actions().count("b") == 2  # at t≈0 and t≈20; the 40s retry never came
    assert "saga.deadline_exceeded" in types(result)
    assert service.compensations() == ["b", "a"]


def test_deadline_in_flight_pivot_ends_failed_pivot_unknown():
    env, _ = env_with()
    env.faults.add(step="p", phase="action", kind="drop")
    with env:
        result = env.run(make_flow(*PIVOTED, timeout="1m", deadline="10s"), {})
    assert (result.status, result.reason) == ("failed", "pivot_unknown")


def test_deadline_after_pivot_leaves_forward_steps_alone():
    env, _ = env_with({("z", "action"): ["error"] * 3})
    with env:
        result = env.run(make_flow(*PIVOTED, attempts=5, backoff="10s", deadline="15s"), {})
    assert result.status == "completed"
    t = types(result)
    assert "saga.deadline_exceeded" in t
    assert t.index("saga.deadline_exceeded") > t.index("step.succeeded:p")


def test_deadline_is_disarmed_while_compensating():
    env, _ = env_with({("b", "action"): ["reject"]})
    env.faults.add(step="a", phase="compensation", kind="drop", attempts={1})
    with env:
        result = env.run(make_flow(*THREE, attempts=2, timeout="20s", deadline="10s"), {})
    assert result.status == "compensated"
    assert "saga.deadline_exceeded" not in types(result)


def test_cancel_running_saga_takes_the_deadline_path():
    env, service = env_with({("b", "action"): ["block"]})
    with env:
        saga_id = env.start(make_flow(*THREE), {})
        assert service.blocked.wait(10)
        env.runtime.cancel(saga_id)
        service.release.set()
        result = env.drive(saga_id)
    assert result.status == "compensated"
    t = types(result)
    assert t[t.index("saga.cancelled") + 1] == "step.timed_out:b"
    assert service.compensations() == ["b", "a"]


def test_cancel_terminal_saga_does_nothing():
    env, _ = env_with()
    with env:
        result = env.run(make_flow(*THREE), {})
        again = env.runtime.cancel(result.saga_id)
    assert again.status == "completed"
    assert len(again.history) == len(result.history)


# -- 5. replies -------------------------------------------------------------------------------
def test_replies_late_success_from_timed_out_attempt_ends_the_step():
    env, service = env_with({("b", "action"): ["block"]})
    with env:
        saga_id = env.start(make_flow(*THREE, attempts=3, timeout="5s", backoff="1m"), {})
        assert service.blocked.wait(10)
        env.advance(5)  # attempt 1 of b times out; backoff of 1m begins
        env.wait_for(saga_id, "step.retrying", step="b")
        service.release.set()  # the late reply of attempt 1 arrives during backoff
        env.wait_for(saga_id, "step.succeeded", step="b")
        result = env.drive(saga_id)
    assert result.status == "completed"
    b = [(e.type, e.attempt) for e in result.history if e.step == "b"]
    assert b == [("step.started", 1), ("step.timed_out", 1), ("step.retrying", 1),
                 ("step.succeeded", 1)]


def test_replies_late_error_and_duplicates_are_recorded_as_ignored():
    env, _ = env_with()
    env.faults.add(step="a", phase="action", kind="duplicate")
    with env:
        result = env.run(make_flow(*THREE), {})
    assert result.status == "completed"
    ignored = events_of(result, "reply.ignored")
    assert len(ignored) == 1
    assert ignored[0].data == {"phase": "action", "attempt": 1, "outcome": "succeeded"}


def test_replies_never_recorded_after_a_terminal_event():
    other = Other({("c", "action"): ["block"]})
    env = SagaTestEnvironment(services={"svc": Scripted(), "other": other})
    flow = make_flow("a", "b", StepSpec("c", service="other", compensation=False,
                                        extra={"effects": "none"}), timeout="5s")
    with env:
        saga_id = env.start(flow, {})
        assert other.blocked.wait(10)
        env.advance(5)  # c times out; b and a are compensated on svc; the saga ends
        env.wait_for(saga_id, "saga.compensated")
        other.release.set()  # c's late reply comes after the end
        env.settle()
        result = env.result(saga_id)
    assert result.history[-1].type == "saga.compensated"
    assert "reply.ignored" not in types(result)


def _compensation_attempt_1_rejected_late(attempts: int) -> tuple[Any, Scripted]:
    """b is rejected; a's compensation attempt 1 blocks past its 5s timeout; after the 1s
    backoff attempt 2 is sent (and queues behind the blocked call); then attempt 1 answers
    ``Rejected``, late. The saga's result once driven to its end, and the service."""
    service = Scripted({("b", "action"): ["reject"], ("a", "compensation"): ["block_reject"]})
    flow = make_flow("a", "b", attempts=attempts, timeout="5s", backoff="1s")
    with SagaTestEnvironment(services={"svc": service}) as env:
        saga_id = env.start(flow, {})
        assert service.blocked.wait(10)
        env.advance(5)
        env.wait_for(saga_id, "compensation.timed_out", step="a", attempt=1)
        env.advance(1)
        env.wait_for(saga_id, "compensation.started", step="a", attempt=2)
        service.release.set()
        return env.drive(saga_id), service


def test_late_rejected_compensation_reply_does_not_end_compensation_with_attempt_2_in_flight():
    """§3: a compensation's ``Rejected`` counts as a failed attempt; §4.5: only a late
    *succeeded*/*rejected* reply that ends the step is acted on, any other late reply is
    ``reply.ignored``. Here a's compensation attempt 1 timed out (already counted as a failed
    attempt) and attempt 2 is in flight when attempt 1's late ``Rejected`` arrives: it must not
    count attempt 1 a second time and exhaust the compensation while attempt 2 (which then
    succeeds) is still running. §4.2: the saga ends ``compensated``."""
    result, _ = _compensation_attempt_1_rejected_late(attempts=2)
    assert (result.status, result.reason) == ("compensated", None)
    assert attempts_of(result.history, "compensation.succeeded", "a") == [2]
    check_history(result.history)


def test_late_rejected_compensation_reply_does_not_discard_the_in_flight_attempts_success():
    """§4.5: replies are matched on (phase, step, attempt); only "a late error, a reply for a
    step no longer in progress, a duplicate" are ``reply.ignored``. With ``attempts: 3``,
    attempt 1's late ``Rejected`` (attempt 2 in flight) must not be recorded as
    ``compensation.failed`` #1 — that would mark the saga as having nothing in flight and
    schedule a backoff, attempt 2's ``succeeded`` would then be ``reply.ignored`` and a third,
    needless compensation attempt would run. Attempt 2's success completes the compensation;
    the handler runs twice."""
    result, service = _compensation_attempt_1_rejected_late(attempts=3)
    assert result.status == "compensated"
    assert attempts_of(result.history, "compensation.succeeded", "a") == [2]
    assert [c.attempt for c in service.calls if c.phase == "compensation"] == [1, 2]
    check_history(result.history)


def test_duplicate_late_rejected_compensation_reply_records_one_outcome_for_the_attempt():
    """§4.5: "an attempt has at most one ``timed_out`` and one reply outcome"; a duplicate
    reply is ``reply.ignored``. A's compensation attempt 1 times out, then its ``Rejected``
    arrives twice (a duplicated delivery) during the backoff: at most one
    ``compensation.failed`` is recorded for attempt 1, and one ``compensation.retrying``."""
    service = Scripted({("b", "action"): ["reject"],
                        ("a", "compensation"): ["block_reject", "reject"]})
    flow = make_flow("a", "b", attempts=5, timeout="5s", backoff="1m")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.faults.add(step="a", phase="compensation", kind="duplicate", attempts={1})
        saga_id = env.start(flow, {})
        assert service.blocked.wait(10)
        env.advance(5)
        env.wait_for(saga_id, "compensation.retrying", step="a")
        service.release.set()
        env.settle()
        result = env.drive(saga_id)
    assert result.status == "compensated"
    assert len(attempts_of(result.history, "compensation.failed", "a")) <= 1
    assert len(attempts_of(result.history, "compensation.retrying", "a")) == 1
    check_history(result.history)


# -- 6. ordering ------------------------------------------------------------------------------
def test_ordering_events_of_a_saga_are_gapless_and_causally_linked():
    env, _ = env_with({("c", "action"): ["error", "reject"]})
    with env:
        ids = [env.start(make_flow(*THREE, attempts=2), {"n": n}) for n in range(20)]
        env.drive_all()
        results = [env.result(i) for i in ids]
    for result in results:
        assert [e.seq for e in result.history] == list(range(1, len(result.history) + 1))
        ids_seen = {e.event_id for e in result.history}
        for event in result.history[1:]:
            assert event.causation_id in ids_seen  # every event traces back into its log
        assert [e.at for e in result.history] == sorted(e.at for e in result.history)


def test_ordering_histories_through_the_runtime_keep_the_event_contract():
    """§6 EVENT shape and §4.5 on real runs: retries, a timeout with a late success, a
    duplicate, compensations, a cancel."""
    service = Scripted({("b", "action"): ["block"], ("c", "action"): ["error", "reject"]})
    flow = make_flow("a", "b", "c", attempts=3, backoff="1m", timeout="5s")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.faults.add(step="a", kind="duplicate")
        saga_id = env.start(flow, {})
        assert service.blocked.wait(10)
        env.advance(5)
        env.wait_for(saga_id, "step.retrying", step="b")
        service.release.set()
        result = env.drive(saga_id)
        cancelled = env.runtime.cancel(saga_id)  # terminal: nothing happens
    assert result.status == "compensated"
    assert len(cancelled.history) == len(result.history)
    check_history(result.history)
    doc = result.to_json()
    assert json.loads(json.dumps(doc)) == doc
    for event in doc["history"]:
        if event["type"].startswith("saga."):
            assert event["attempt"] is None


# -- 9. identity ------------------------------------------------------------------------------
def test_identity_same_id_same_input_returns_the_existing_saga():
    env, service = env_with()
    flow = make_flow(*THREE)
    with env:
        first = env.run(flow, {"order": 1}, saga_id="order-42")
        second = env.run(flow, {"order": 1}, saga_id="order-42")
    assert second.saga_id == first.saga_id == "order-42"
    assert second.history == first.history
    assert service.actions() == ["a", "b", "c"]  # nothing ran twice


def test_identity_same_id_different_input_is_an_error():
    env, _ = env_with()
    flow = make_flow(*THREE)
    with env:
        env.run(flow, {"order": 1}, saga_id="order-42")
        with pytest.raises(IdConflict, match="different input"):
            env.start(flow, {"order": 2}, saga_id="order-42")
        with pytest.raises(IdConflict, match="different flow definition"):
            env.start(make_flow("a", "b"), {"order": 1}, saga_id="order-42")


def test_identity_on_end_of_the_first_caller_survives_an_idempotent_start():
    """§4.9 (starting an existing id returns the existing saga) and ``Runtime.start``'s
    contract: ``on_end`` "is called when the saga ends". A second, idempotent ``start`` of a
    running saga with its own ``on_end`` adds its callback: it does not overwrite the first
    caller's (as ``self._callbacks[saga_id] = on_end`` in ``runtime.py`` once did)."""
    service = Scripted({("a", "action"): ["block"]})
    seen: list[tuple[str, str, str, str | None]] = []
    flow = make_flow("a")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.runtime.start(flow, {"n": 1}, "order-1",
                          on_end=lambda *args: seen.append(("first", *args)))
        assert service.blocked.wait(10)
        assert env.runtime.start(flow, {"n": 1}, "order-1",
                                 on_end=lambda *args: seen.append(("second", *args))) \
            == "order-1"
        service.release.set()
        env.drive("order-1")
        env.settle()
    assert sorted(seen) == [("first", "order-1", "completed", None),
                            ("second", "order-1", "completed", None)]


def test_identity_a_conflicting_start_does_not_drop_the_running_sagas_on_end():
    """§4.9: a start with a different input is an error ("id exists with different input") —
    and nothing else: the failed start neither overwrites the running saga's ``on_end`` nor
    drops it (it once did both), so the original caller is told the saga ended (``saga run
    --count`` waits on exactly this callback)."""
    service = Scripted({("a", "action"): ["block"]})
    seen: list[tuple[str, str | None]] = []
    flow = make_flow("a")
    with SagaTestEnvironment(services={"svc": service}) as env:
        env.runtime.start(flow, {"n": 1}, "order-2",
                          on_end=lambda _id, status, reason: seen.append((status, reason)))
        assert service.blocked.wait(10)
        with pytest.raises(IdConflict, match="different input"):
            env.runtime.start(flow, {"n": 2}, "order-2", on_end=lambda *args: None)
        service.release.set()
        env.drive("order-2")
        env.settle()
    assert seen == [("completed", None)]
