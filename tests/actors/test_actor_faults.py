"""Fault injection: rule matching, and every kind as a pool's caller sees it."""

from __future__ import annotations

import pytest
from actor_doubles import WAIT, Replies, Scripted, command

from actors import Activity, Fault, FaultInjector, Faults


def test_no_rules_no_fault():
    assert Faults().decide(command()) is None


def test_rules_match_step_phase_attempts_and_saga():
    faults = Faults().add(step="reserve", kind="reject", attempts={2, 3}, saga_id="s1")
    assert faults.decide(command("s1", attempt=2)) == Fault("reject")
    assert faults.decide(command("s1", attempt=1)) is None
    assert faults.decide(command("s2", attempt=2)) is None
    assert faults.decide(command("s1", "charge", attempt=2)) is None
    assert faults.decide(command("s1", phase="compensation", attempt=2)) is None


def test_none_matches_anything():
    faults = Faults().add(step=None, phase=None, kind="error")
    assert faults.decide(command("x", "y", "compensation", attempt=9)) == Fault("error")


def test_first_match_wins():
    faults = (
        Faults()
        .add(step="reserve", kind="drop", attempts={1})
        .add(step="reserve", kind="reject", message="later")
    )
    assert faults.decide(command(attempt=1)).kind == "drop"
    assert faults.decide(command(attempt=2)) == Fault("reject", "later")
    assert len(faults) == 2
    faults.clear()
    assert faults.decide(command()) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "drop", "phase": "undo"}, "phase"),
        ({"kind": "drop", "attempts": set()}, "attempts"),
        ({"kind": "drop", "attempts": {0}}, "attempts"),
        ({"kind": "drop", "attempts": {True}}, "attempts"),
    ],
)
def test_bad_rules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Faults().add(step="x", **kwargs)


def test_faults_is_a_fault_injector():
    assert isinstance(Faults(), FaultInjector)


# -- each kind, through a pool --------------------------------------------------------------------


@pytest.fixture
def activity() -> Activity:
    return Activity()


def test_reject_through_a_pool(start_pool, activity):
    faults = Faults().add(step="reserve", kind="reject", message="injected by --fail reserve")
    pool = start_pool([Scripted()], faults=faults, activity=activity)
    replies = Replies()
    pool.tell(command(attempt=1), replies)
    pool.tell(command(attempt=2), replies)
    first, second = replies.wait(2)
    assert (first.outcome, first.error, first.replayed) == (
        "rejected", "injected by --fail reserve", False)  # fmt: skip
    assert (second.outcome, second.replayed) == ("rejected", True)
    assert pool.instances[0].runs == []


def test_error_through_a_pool(start_pool, activity):
    pool = start_pool([Scripted()], faults=Faults().add(step="reserve", kind="error"))
    replies = Replies()
    pool.tell(command(), replies)
    (reply,) = replies.wait(1)
    assert (reply.outcome, reply.error) == ("error", "InjectedFault: injected error")


def test_drop_through_a_pool_is_a_timeout_with_nothing_run(start_pool, activity):
    faults = Faults().add(step="reserve", kind="drop", attempts={1})
    pool = start_pool([Scripted()], faults=faults, activity=activity)
    replies = Replies()
    pool.tell(command(attempt=1), replies)
    assert activity.wait_idle(WAIT)  # handled (and counted out) without a reply
    assert len(replies) == 0 and pool.instances[0].runs == []
    pool.tell(command(attempt=2), replies)
    (reply,) = replies.wait(1)
    assert (reply.outcome, reply.replayed, reply.command.attempt) == ("succeeded", False, 2)


def test_run_then_drop_through_a_pool_is_a_timeout_with_the_action_run(start_pool, activity):
    faults = Faults().add(step="reserve", kind="run_then_drop", attempts={1})
    pool = start_pool([Scripted()], faults=faults, activity=activity)
    replies = Replies()
    pool.tell(command(attempt=1), replies)
    assert activity.wait_idle(WAIT)
    assert len(replies) == 0 and len(pool.instances[0].runs) == 1
    pool.tell(command(attempt=2), replies)
    (reply,) = replies.wait(1)
    assert reply.replayed and reply.outcome == "succeeded"


def test_duplicate_through_a_pool_sends_both_replies(start_pool, activity):
    faults = Faults().add(step="reserve", kind="duplicate")
    pool = start_pool([Scripted()], faults=faults, activity=activity)
    replies = Replies()
    pool.tell(command(), replies)
    first, second = replies.wait(2)
    assert first.command == second.command
    assert (first.replayed, second.replayed) == (False, True)
    assert activity.wait_idle(WAIT)
    assert len(replies) == 2
