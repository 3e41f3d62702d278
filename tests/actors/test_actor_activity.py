"""Activity: counting in-flight messages, and going idle."""

from __future__ import annotations

import threading

import pytest
from actor_doubles import WAIT, Replies, Scripted, command

from actors import Activity, CountingRef, DeadLetters


def test_counts_and_goes_idle():
    activity = Activity()
    assert activity.count == 0 and activity.wait_idle(0)
    activity.begin(3)
    activity.end()
    assert activity.count == 2
    assert not activity.wait_idle(0.01)
    activity.end(2)
    assert activity.wait_idle(0)


def test_an_end_without_a_begin_is_an_error():
    activity = Activity()
    activity.begin()
    with pytest.raises(ValueError, match="without begin"):
        activity.end(2)
    assert activity.count == 1
    with pytest.raises(ValueError):
        activity.begin(-1)


def test_wait_idle_wakes_when_another_thread_ends():
    activity = Activity()
    activity.begin()
    waiting = threading.Event()
    result = []

    def wait():
        waiting.set()
        result.append(activity.wait_idle(WAIT))

    thread = threading.Thread(target=wait)
    thread.start()
    assert waiting.wait(WAIT)
    activity.end()
    thread.join(WAIT)
    assert result == [True]


def test_tell_counts_and_uncounts_a_failed_tell():
    activity = Activity()
    replies = Replies()
    activity.tell(replies, "hi")
    assert activity.count == 1 and replies.items == ["hi"]

    class Dead:
        def tell(self, message):
            raise RuntimeError("dead")

    with pytest.raises(RuntimeError):
        activity.tell(Dead(), "lost")
    assert activity.count == 1


def test_counting_refs_compare_by_target():
    activity = Activity()
    replies = Replies()
    assert activity.counting(replies) == CountingRef(replies, activity)
    assert activity.counting(replies) != CountingRef(replies, Activity())
    assert len({activity.counting(replies), activity.counting(replies)}) == 1


def test_a_pool_counts_each_message_until_handled(start_pool):
    activity = Activity()
    service = Scripted()
    service.script["first:reserve"] = ["block"]
    pool = start_pool([service], activity=activity)
    replies = Replies()
    pool.tell(command("first"), replies)
    for i in range(99):
        pool.tell(command(f"s{i}"), replies)
    assert service.entered.wait(WAIT)
    assert activity.count == 100
    assert not activity.wait_idle(0.01)
    service.release.set()
    assert activity.wait_idle(WAIT)
    assert len(replies) == 100  # idle means every reply has been sent


def test_counted_replies_stay_in_flight_until_the_receiver_ends_them(start_pool):
    activity = Activity()
    pool = start_pool([Scripted()], activity=activity)
    replies = Replies()
    for i in range(10):
        pool.tell(command(f"s{i}"), activity.counting(replies))
    replies.wait(10)
    pool.call(0, lambda s: None, timeout=WAIT)  # the pool has counted its own messages out
    assert activity.count == 10  # the replies: our "receiver" has not handled them yet
    activity.end(10)
    assert activity.wait_idle(0)


def test_a_message_to_a_stopped_pool_is_not_counted(inbox, start_pool):
    activity = Activity()
    letters = DeadLetters()
    pool = start_pool([Scripted()], activity=activity, dead_letters=letters)
    assert pool.stop(timeout=WAIT)
    pool.tell(command(), Replies())
    assert activity.count == 0 and len(letters) == 1
