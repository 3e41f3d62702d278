"""Supervision: a crashed service actor is restarted, and no message is lost on the way."""

from __future__ import annotations

import logging
import threading

import pykka
import pytest
from actor_doubles import WAIT, FlakyInbox, Replies, Scripted, command

from actors import Activity, ActorUnavailable, DeadLetters


@pytest.fixture
def flaky() -> FlakyInbox:
    return FlakyInbox()


def test_pykka_discards_the_queued_tells_of_a_crashed_actor():
    """The pykka behaviour the pool's pending ledger exists for (if it changes, revisit it)."""
    handled = []
    gate = threading.Event()

    class Fragile(pykka.ThreadingActor):
        def on_receive(self, message):
            if message == "wait":
                gate.wait(WAIT)
            elif message == "crash":
                raise RuntimeError("crash")
            else:
                handled.append(message)

    ref = Fragile.start()
    ref.tell("wait")
    ref.tell("crash")
    ref.tell("after")
    stopped = ref.actor_stopped
    gate.set()
    assert stopped.wait(WAIT)
    assert handled == []  # "after" was queued behind the crash and silently dropped


def test_an_inbox_failure_crashes_restarts_and_answers_with_an_error(start_pool, flaky, caplog):
    service = Scripted()
    pool = start_pool([service], inbox=flaky)
    flaky.poison.add("bad:reserve")
    replies = Replies()
    with caplog.at_level(logging.WARNING, logger="actors"):
        pool.tell(command("bad"), replies)
        (crashed,) = replies.wait(1)
    assert crashed.outcome == "error"
    assert crashed.error == "service actor crashed: OSError: disk gone"
    pool.call(0, lambda s: None, timeout=WAIT)  # the crash reply is sent before the restart
    assert pool.restarts == (1,)
    assert "svc[0] crashed (OSError: disk gone) and was restarted" in caplog.text
    pool.tell(command("good"), replies)
    assert replies.wait(2)[1].outcome == "succeeded"
    assert pool.instances == (service,)  # restarted over the same object
    assert service.runs == [("action", "good:reserve", 1)]


def test_messages_queued_behind_a_crash_are_redelivered_in_order(start_pool, flaky):
    activity = Activity()
    letters = DeadLetters()
    service = Scripted()
    service.script["first:reserve"] = ["block"]
    pool = start_pool([service], inbox=flaky, activity=activity, dead_letters=letters)
    flaky.poison.add("bad:reserve")
    replies = Replies()
    pool.tell(command("first"), replies)
    assert service.entered.wait(WAIT)
    pool.tell(command("bad"), replies)
    queued = [f"later-{i}" for i in range(5)]
    for saga_id in queued:
        pool.tell(command(saga_id), replies)
    service.release.set()
    got = replies.wait(7)
    assert [(r.command.saga_id, r.outcome) for r in got] == [
        ("first", "succeeded"),
        ("bad", "error"),
        *[(s, "succeeded") for s in queued],
    ]
    assert pool.restarts == (1,)
    assert [(lt.message.command.saga_id, lt.redelivered) for lt in letters.items()] == [
        (s, True) for s in queued
    ]
    assert activity.wait_idle(WAIT)


def test_a_tell_to_the_dead_actor_is_held_and_redelivered(start_pool, flaky):
    """The window between the crash and the restart: ``tell`` meets ``ActorDeadError``."""
    letters = DeadLetters()
    activity = Activity()
    pool = start_pool([Scripted()], inbox=flaky, dead_letters=letters, activity=activity)
    flaky.poison.add("bad:reserve")
    in_on_failure = threading.Event()
    resume = threading.Event()

    class SlowReplyTo:
        """The crash reply is told from on_failure: hold the dying actor right there."""

        def tell(self, message):
            in_on_failure.set()
            assert resume.wait(WAIT)

    pool.tell(command("bad"), SlowReplyTo())
    assert in_on_failure.wait(WAIT)
    replies = Replies()
    pool.tell(command("meanwhile"), replies)  # the old actor is dead, the new one not started
    # the crashed command is counted out only once its crash reply is sent (Activity's
    # contract: after what it caused was sent); this one is in flight too
    assert activity.count == 2
    resume.set()
    (reply,) = replies.wait(1)
    assert (reply.command.saga_id, reply.outcome) == ("meanwhile", "succeeded")
    (letter,) = letters.items()
    assert letter.redelivered and letter.message.command.saga_id == "meanwhile"
    assert activity.wait_idle(WAIT)


def test_a_base_exception_from_the_inbox_restarts_one_actor_not_all(start_pool):
    """pykka stops *every* actor on a BaseException; the service actor turns it into a crash."""
    flaky = FlakyInbox(SystemExit(9))
    flaky.poison.add("bad:reserve")
    bystander = start_pool([Scripted()], name="bystander")
    pool = start_pool([Scripted()], inbox=flaky)
    replies = Replies()
    pool.tell(command("bad"), replies)
    (crashed,) = replies.wait(1)
    assert crashed.error == "service actor crashed: SystemExit: 9"
    pool.call(0, lambda s: None, timeout=WAIT)
    assert pool.restarts == (1,)
    bystander.tell(command("x"), replies)
    pool.tell(command("y"), replies)
    assert [r.outcome for r in replies.wait(3)[1:]] == ["succeeded", "succeeded"]


def test_a_failing_fault_injector_is_a_crash_too(start_pool):
    class Broken:
        def decide(self, command):
            raise RuntimeError("injector bug")

    pool = start_pool([Scripted()], faults=Broken())
    replies = Replies()
    pool.tell(command(), replies)
    (reply,) = replies.wait(1)
    assert reply.error == "service actor crashed: RuntimeError: injector bug"
    pool.call(0, lambda s: None, timeout=WAIT)
    assert pool.restarts == (1,)


def test_call_follows_the_restarted_actor(start_pool, flaky):
    service = Scripted()
    pool = start_pool([service], inbox=flaky)
    flaky.poison.add("bad:reserve")
    replies = Replies()
    pool.tell(command("bad"), replies)
    replies.wait(1)
    assert pool.call(0, lambda s: s is service, timeout=WAIT)


def test_an_actor_stopped_from_outside_is_not_restarted(start_pool):
    letters = DeadLetters()
    pool = start_pool([Scripted()], dead_letters=letters)
    ref = pool._slots[0].ref
    assert ref.stop(timeout=WAIT)
    pool.tell(command(), Replies())
    assert [lt.reason for lt in letters.items()] == ["instance stopped"]
    with pytest.raises(ActorUnavailable):
        pool.call(0, lambda s: None, timeout=WAIT)
    assert pool.restarts == (0,)
