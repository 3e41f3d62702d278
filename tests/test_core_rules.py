"""DESIGN.md §3–§5 on the pure core: one saga driven through ``sagas.engine.core`` by hand
(``sagas.testing.CoreDriver``), replies and timers in exact, chosen orders — a late reply
while the next attempt is in flight, a deadline and a reply at one instant, a cancel in a
backoff — that a runtime cannot pin down. Every history is checked against the §6 EVENT
contract and the §4.5 invariants (``tests.support.check_history``).
"""

from __future__ import annotations

import pytest

from sagas.testing import CoreDriver
from tests.support import StepSpec, attempts_of, check_history, make_flow


# -- §4.5: late replies ------------------------------------------------------------------------
def test_a_late_success_of_a_timed_out_attempt_ends_the_step_while_attempt_2_is_in_flight():
    """§4.5: a late ``succeeded`` from timed-out attempt 1 ends the step with attempt
    1 while attempt 2 is in flight; attempt 2's reply is then ``reply.ignored``."""
    run = CoreDriver(make_flow("a", "b", attempts=3, backoff="1s", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    run.fire("backoff", "b", 1)
    run.reply("b", 1)
    run.reply("b", 2)
    b = [(e.type, e.attempt) for e in run.events if e.step == "b"]
    assert b == [("step.started", 1), ("step.timed_out", 1), ("step.retrying", 1),
                 ("step.started", 2), ("step.succeeded", 1)]
    assert run.status == "completed"
    check_history(run.events)


def test_a_late_reply_or_a_cancel_after_a_terminal_event_records_nothing():
    """§4.5: "never after a terminal event" — at the level of the core."""
    run = CoreDriver(make_flow("a", attempts=2, backoff="1s", timeout="5s"))
    run.fire("timeout", "a", 1)
    run.fire("backoff", "a", 1)
    run.reply("a", 2)
    assert run.status == "completed"
    assert run.reply("a", 1) == [] and run.reply("a", 2) == []
    assert run.cancel() == []
    check_history(run.events)


def test_a_late_rejection_of_a_timed_out_attempt_recovers_backward_without_compensating_the_step():
    """§4.2/§4.5: attempt 1 of b timed out, attempt 2 is in flight, attempt 1's late
    ``Rejected`` ends b as rejected: b is not compensated, a is."""
    run = CoreDriver(make_flow("a", "b", attempts=3, backoff="1s", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    run.fire("backoff", "b", 1)
    run.reply("b", 1, "rejected")
    assert run.types()[-2:] == ["step.failed:b", "compensation.started:a"]
    assert run.events[-2].attempt == 1 and run.events[-2].data["kind"] == "rejected"
    run.reply("b", 2, "rejected")  # attempt 2's (replayed) rejection: ignored
    run.reply("a", 1, phase="compensation")
    assert run.status == "compensated"
    assert "compensation.started:b" not in run.types()
    check_history(run.events)


def test_a_late_error_of_a_timed_out_attempt_is_ignored_and_not_counted_again():
    """§4.5: a late *error* is ``reply.ignored`` and does not count again."""
    run = CoreDriver(make_flow("a", attempts=2, backoff="1s", timeout="5s"))
    run.fire("timeout", "a", 1)
    run.reply("a", 1, "error")
    assert run.events[-1].type == "reply.ignored"
    assert run.events[-1].data == {"phase": "action", "attempt": 1, "outcome": "error"}
    run.fire("backoff", "a", 1)
    run.reply("a", 2)
    assert run.status == "completed"
    check_history(run.events)


# -- §4.4: the deadline and cancel -------------------------------------------------------------
def test_a_deadline_during_backoff_compensates_the_step_without_a_timed_out():
    """§4.4: a deadline during backoff cancels it; the step (started, its outcome an
    error) is compensated (§4.2); no ``step.timed_out`` since nothing was in flight."""
    run = CoreDriver(make_flow("a", "b", attempts=3, backoff="1m", timeout="5s",
                             deadline="30s"))
    run.reply("a", 1)
    run.reply("b", 1, "error")
    run.fire("deadline")
    assert run.types()[-2:] == ["saga.deadline_exceeded", "compensation.started:b"]
    assert run.fire("backoff", "b", 1) == []  # the cancelled backoff is stale
    run.reply("b", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.status == "compensated"
    check_history(run.events)


def test_a_deadline_and_a_timeout_due_at_the_same_instant_time_the_attempt_out_once():
    """§4.4/§4.5: timeout and deadline both at t+10, in either order: one
    ``step.timed_out`` for the attempt, recovery backward once."""
    for order in (("timeout", "deadline"), ("deadline", "timeout")):
        run = CoreDriver(make_flow("a", "b", timeout="10s", deadline="10s"))
        for kind in order:
            if kind == "deadline":
                run.fire("deadline")
            else:
                run.fire("timeout", "a", 1)
        assert [e.type for e in run.events].count("step.timed_out") == 1
        assert run.types()[-1] == "compensation.started:a"
        check_history(run.events)


def test_a_deadline_and_a_reply_at_the_same_instant_give_one_outcome_per_attempt_either_order():
    """§4.4/§4.5: the deadline first: the in-flight b counts as timed out, its reply is
    then ``reply.ignored`` and b is compensated; the reply first: b succeeded, c (now in
    flight) counts as timed out. Either way one outcome per attempt."""
    run = CoreDriver(make_flow("a", "b", "c", timeout="1m", deadline="10s"))
    run.reply("a", 1)
    run.fire("deadline")
    run.reply("b", 1)
    assert run.types()[-4:] == ["saga.deadline_exceeded", "step.timed_out:b",
                                "compensation.started:b", "reply.ignored:b"]
    check_history(run.events)
    run = CoreDriver(make_flow("a", "b", "c", timeout="1m", deadline="10s"))
    run.reply("a", 1)
    run.advance(10)
    run.reply("b", 1)
    run.fire("deadline")
    assert run.types()[-3:] == ["saga.deadline_exceeded", "step.timed_out:c",
                                "compensation.started:c"]
    check_history(run.events)


def test_a_cancel_during_backoff_compensates_the_step_in_backoff():
    """§4.4: cancel takes the deadline path: backoff dropped, no ``step.timed_out``,
    the errored step and its predecessors are compensated. A second cancel does nothing."""
    run = CoreDriver(make_flow("a", "b", attempts=3, backoff="1m"))
    run.reply("a", 1)
    run.reply("b", 1, "error")
    run.cancel()
    assert run.types()[-2:] == ["saga.cancelled", "compensation.started:b"]
    assert run.cancel() == []
    run.reply("b", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.status == "compensated"
    check_history(run.events)


def test_a_cancel_after_the_pivot_is_recorded_and_the_saga_carries_on():
    """§4.4: after the pivot succeeded, a cancel records ``saga.cancelled`` and forward
    recovery carries on (the in-flight step is left alone)."""
    run = CoreDriver(make_flow(StepSpec("p", pivot=True), StepSpec("z", compensation=False)))
    run.reply("p", 1)
    assert run.cancel()[0].type == "saga.cancelled"
    assert run.status == "running" and run.saga.in_flight
    run.reply("z", 1)
    assert run.status == "completed"
    check_history(run.events)


# -- §4.3: the pivot ---------------------------------------------------------------------------
@pytest.mark.parametrize("outcome, status, reason", [
    ("succeeded", "completed", None),
    ("rejected", "compensated", None),
    ("error", "failed", "pivot_unknown"),
])
def test_a_flow_of_only_a_pivot_ends_as_the_pivot_did_with_nothing_compensated(outcome, status,
                                                                               reason):
    """§4.3: a lone pivot: success completes; rejected recovers backward (nothing to
    undo: ``compensated``); out of attempts, its outcome is unknown: ``pivot_unknown``."""
    run = CoreDriver(make_flow(StepSpec("p", pivot=True)))
    run.reply("p", 1, outcome)
    assert (run.status, run.reason) == (status, reason)
    assert not any(e.type.startswith("compensation.") for e in run.events)
    check_history(run.events)


def test_a_first_step_pivot_in_flight_at_the_deadline_ends_pivot_unknown():
    """§4.4: an in-flight pivot at the deadline counts as timed out: ``failed``
    (``pivot_unknown``), nothing compensated — also when it is the first step."""
    run = CoreDriver(make_flow(StepSpec("p", pivot=True), StepSpec("z", compensation=False),
                             timeout="1m", deadline="10s"))
    run.fire("deadline")
    assert run.types()[-3:] == ["saga.deadline_exceeded", "step.timed_out:p", "saga.failed"]
    assert run.reason == "pivot_unknown"
    check_history(run.events)


def test_a_pivot_in_backoff_at_the_deadline_ends_pivot_unknown():
    """§4.3/§4.4: a pivot whose attempt errored, in backoff at the deadline, has an
    unknown outcome: ``pivot_unknown`` and nothing compensated."""
    run = CoreDriver(make_flow("a", StepSpec("p", pivot=True), attempts=3, backoff="1m",
                             deadline="10s"))
    run.reply("a", 1)
    run.reply("p", 1, "error")
    run.fire("deadline")
    assert (run.status, run.reason) == ("failed", "pivot_unknown")
    assert not any(e.type.startswith("compensation.") for e in run.events)


# -- §4.2 and §3: compensations ----------------------------------------------------------------
def test_steps_without_a_compensation_are_passed_over_backward():
    """§4.2: steps without a compensation (a and c) are passed over; b is undone."""
    flow = make_flow(StepSpec("a", compensation=False, extra={"effects": "none"}), "b",
                     StepSpec("c", compensation=False, extra={"effects": "none"}),
                     StepSpec("p", pivot=True))
    run = CoreDriver(flow)
    for step in ("a", "b", "c"):
        run.reply(step, 1)
    run.reply("p", 1, "rejected")
    assert [t for t in run.types() if t.startswith("compensation.started")] == \
        ["compensation.started:b"]
    run.reply("b", 1, phase="compensation")
    assert run.status == "compensated"
    check_history(run.events)


def test_a_compensation_that_timed_out_then_succeeded_late_completes_once():
    """§4.2 ("each completes exactly once") and §4.5: a's compensation attempt 1 times
    out; its late success during backoff ends it (attempt 1); the stale backoff and a
    duplicate success do nothing more."""
    run = CoreDriver(make_flow("a", "b", attempts=3, backoff="1m", timeout="5s"))
    run.reply("a", 1)
    run.reply("b", 1, "rejected")
    run.fire("timeout", "a", 1, phase="compensation")
    run.reply("a", 1, phase="compensation")
    assert run.status == "compensated"
    assert run.reply("a", 1, phase="compensation") == []
    assert attempts_of(run.events, "compensation.succeeded", "a") == [1]
    check_history(run.events)


def test_retry_forever_keeps_compensating_through_timeouts_with_capped_backoff():
    """§4.1/§4.2: ``retry_forever`` never gives up on timeouts either, its backoff
    capped; the deadline stays disarmed while compensating."""
    run = CoreDriver(make_flow("a", "b", attempts=2, backoff="10s", max_backoff="40s",
                             timeout="5s", deadline="1h", on_compensation_failure="retry_forever"))
    run.reply("a", 1)
    run.reply("b", 1, "rejected")
    for attempt in range(1, 9):
        run.fire("timeout", "a", attempt, phase="compensation")
        run.fire("backoff", "a", attempt, phase="compensation")
    assert run.status == "compensating"
    assert run.fire("deadline") == []
    delays = [e.data["next_attempt_at"] - e.at for e in run.events
              if e.type == "compensation.retrying"]
    assert max(delays) == 40.0
    run.reply("a", 9, phase="compensation")
    assert run.status == "compensated"
    check_history(run.events)


def test_a_compensation_carries_its_actions_payload_and_result_under_its_own_key():
    """§3: a compensation carries its action's payload and ``result`` (the output, or
    ``None`` when the action's outcome is unknown), key ``saga_id:step:compensation``."""
    run = CoreDriver(make_flow("a", "b", timeout="5s"))
    run.reply("a", 1)
    run.fire("timeout", "b", 1)
    comps = [c for c in run.sent if c.phase == "compensation"]
    assert [(c.step, c.key, c.result) for c in comps] == [("b", "saga-1:b:compensation", None)]
    run.reply("b", 1, phase="compensation")
    a_comp = [c for c in run.sent if c.phase == "compensation"][-1]
    a_action = next(c for c in run.sent if c.step == "a" and c.phase == "action")
    assert (a_comp.key, a_comp.payload, a_comp.result) == \
        ("saga-1:a:compensation", a_action.payload, {"attempt": 1})
    assert a_action.key == "saga-1:a"


# -- §5: a replayed and resumed saga keeps its causation -----------------------------------------
def test_resume_rearms_the_deadline_with_its_causation():
    """§5: every event carries ``causation_id`` (the event or command that caused it). A saga
    replayed and resumed (§4.7) re-arms its deadline with ``saga.started`` as the cause, so the
    ``saga.deadline_exceeded`` it later records traces back to it, as an un-resumed saga's
    does (``core.resume`` once re-armed it with ``causation_id=None``)."""
    run = CoreDriver(make_flow("a", deadline="10s", timeout="1m"))
    armed = len(run.timers)
    run.restart()
    assert "deadline" in [t.kind for t in run.timers[armed:]]  # re-armed by the resume
    events = run.fire("deadline")  # the timer set last: the re-armed one
    assert events[0].type == "saga.deadline_exceeded"
    assert events[0].causation_id == run.events[0].event_id  # saga.started


def test_resume_keeps_causation_of_backoff_and_timeout_after_an_ignored_reply():
    """§5 causation. After an ignored reply, ``core.resume`` re-arms the backoff with its
    ``step.retrying`` as the cause, so the next ``step.started`` traces back to it as it does
    without a resume (it once took ``saga.last_event_id``, the ``reply.ignored`` event)."""
    run = CoreDriver(make_flow("a", attempts=3, backoff="1m", timeout="5s"))
    run.fire("timeout", "a", 1)  # a#1 timed out, backoff 1m
    run.reply("a", 1, "error")  # late error: reply.ignored
    assert run.events[-1].type == "reply.ignored"
    retrying = next(e for e in run.events if e.type == "step.retrying")
    armed = len(run.timers)
    run.restart()
    assert "backoff" in [t.kind for t in run.timers[armed:]]  # re-armed by the resume
    events = run.fire("backoff", "a", 1)  # the timer set last: the re-armed one
    assert events[0].type == "step.started" and events[0].causation_id == retrying.event_id
