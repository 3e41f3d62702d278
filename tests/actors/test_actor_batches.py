"""Batches: ``ServicePool.tell_many`` and the write-ahead inbox commit of a service actor."""

from __future__ import annotations

import logging
import threading
from typing import Any

from actor_doubles import WAIT, Replies, Scripted, command, saga_for

from actors import Activity, Command, MemoryInbox, StoredReply
from actors._inbox_buffer import InboxBuffer


class CountingInbox(MemoryInbox):
    """A memory inbox that counts batch commits, and can refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[tuple[list[str], list[str]]] = []
        self.refuse = threading.Event()

    def write_many(self, replies: Any, tombstones: Any) -> None:
        if self.refuse.is_set():
            raise OSError("disk full")
        self.commits.append(([key for key, _ in replies], list(tombstones)))
        super().write_many(replies, tombstones)


class Watching(Replies):
    """Records, for each reply it receives, whether its inbox entry was already stored."""

    def __init__(self, inbox: MemoryInbox) -> None:
        super().__init__()
        self.inbox = inbox
        self.stored_first: list[bool] = []

    def tell(self, message: Any) -> None:
        batch = getattr(message, "replies", (message,))
        self.stored_first.extend(self.inbox.get(r.command.key) is not None for r in batch)
        super().tell(message)


def test_tell_many_answers_a_batch_in_order_with_one_message(start_pool):
    pool = start_pool([Scripted()])
    replies = Replies()
    commands = [command(f"saga-{n}") for n in range(20)]
    pool.tell_many(commands, replies)
    got = replies.wait(20)
    assert [r.command for r in got] == commands
    assert all(r.outcome == "succeeded" for r in got)
    assert replies.batches == 1


def test_tell_many_routes_each_command_to_its_saga_instance(start_pool):
    services = [Scripted(), Scripted(), Scripted()]
    pool = start_pool(services)
    ids = [saga_for(3, i % 3, prefix=f"p{i}") for i in range(9)]
    replies = Replies()
    pool.tell_many([command(saga_id) for saga_id in ids], replies)
    got = replies.wait(9)
    for reply in got:
        assert reply.instance == pool.route(reply.command.saga_id)
    for index, service in enumerate(services):
        assert {key.split(":")[0] for _, key, _ in service.runs} == \
            {saga_id for saga_id in ids if pool.route(saga_id) == index}


def test_a_batch_is_counted_in_flight_until_answered(start_pool):
    activity = Activity()
    pool = start_pool([Scripted()], activity=activity)
    replies = Replies()
    pool.tell_many([command(f"saga-{n}") for n in range(5)], activity.counting(replies))
    replies.wait(5)
    # the replies were counted when told; the test double never ends them: 1 message
    assert activity.count == 1


def test_replies_leave_only_after_their_inbox_entries_are_stored(start_pool):
    inbox = CountingInbox()
    pool = start_pool([Scripted()], inbox=inbox)
    replies = Watching(inbox)
    pool.tell_many([command(f"saga-{n}") for n in range(10)], replies)
    replies.wait(10)
    assert replies.stored_first == [True] * 10
    assert len(inbox.commits) == 1  # one commit for the batch
    assert sorted(inbox.commits[0][0]) == sorted(f"saga-{n}:reserve" for n in range(10))


def test_a_compensation_in_the_batch_of_its_action_is_tombstoned_in_one_commit(start_pool):
    inbox = CountingInbox()
    service = Scripted()
    pool = start_pool([service], inbox=inbox)
    replies = Replies()
    undo, late = command(phase="compensation"), command(attempt=2)
    pool.tell_many([undo, late], replies)
    first, second = replies.wait(2)
    assert first.outcome == "succeeded"
    assert second.outcome == "rejected" and second.error.startswith("compensated: ")
    assert service.runs == [("compensation", "saga-1:reserve:compensation", 1)]
    assert inbox.commits == [(["saga-1:reserve:compensation"], ["saga-1:reserve"])]
    assert inbox.is_tombstoned("saga-1:reserve")


def test_a_failed_commit_sends_no_reply_and_restarts_the_instance(start_pool, caplog):
    inbox = CountingInbox()
    service = Scripted()
    pool = start_pool([service], inbox=inbox)
    inbox.refuse.set()
    replies = Replies()
    with caplog.at_level(logging.WARNING, logger="actors"):
        pool.tell_many([command("a"), command("b")], replies)
        pool.call(0, lambda s: None, timeout=WAIT)  # waits for the batch and the restart
    assert len(replies) == 0  # nothing reported that is not stored
    assert inbox.get("a:reserve") is None
    assert pool.restarts == (1,)
    assert "disk full" in caplog.text
    inbox.refuse.clear()
    pool.tell(command("a", attempt=2), replies)  # the saga's retry runs the handler again
    (again,) = replies.wait(1)
    assert again.outcome == "succeeded" and not again.replayed
    assert [key for _, key, _ in service.runs] == ["a:reserve", "b:reserve", "a:reserve"]


def test_the_buffer_reads_its_own_writes_and_commits_them_at_once():
    inbox = MemoryInbox()
    buffer = InboxBuffer(inbox)
    reply = StoredReply("succeeded", {"n": 1}, None)
    buffer.put("s:a", reply)
    buffer.tombstone("s:b")
    assert buffer.get("s:a") == reply and buffer.is_tombstoned("s:b")
    assert inbox.get("s:a") is None and not inbox.is_tombstoned("s:b")
    assert buffer.waiting == 2
    buffer.commit()
    assert inbox.get("s:a") == reply and inbox.is_tombstoned("s:b")
    assert buffer.waiting == 0


def test_the_buffer_writes_one_at_a_time_to_an_inbox_without_batches():
    class Plain:
        def __init__(self) -> None:
            self.log: list[tuple[str, str]] = []

        def get(self, key: str) -> None:
            return None

        def is_tombstoned(self, key: str) -> bool:
            return False

        def put(self, key: str, reply: StoredReply) -> None:
            self.log.append(("put", key))

        def tombstone(self, key: str) -> None:
            self.log.append(("tombstone", key))

    plain = Plain()
    buffer = InboxBuffer(plain)  # type: ignore[arg-type]
    buffer.put("s:a:compensation", StoredReply("succeeded", {}, None))
    buffer.tombstone("s:a")
    buffer.commit()
    assert plain.log == [("tombstone", "s:a"), ("put", "s:a:compensation")]


class PrefetchingInbox(CountingInbox):
    """An inbox offering ``read_many``; counts the single-key reads that still happen."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_reads = 0
        self.single_reads = 0

    def read_many(self, keys: Any, action_keys: Any) -> tuple[dict[str, Any], set[str]]:
        self.bulk_reads += 1
        found = {k: MemoryInbox.get(self, k) for k in keys}
        replies = {k: reply for k, reply in found.items() if reply is not None}
        tombstoned = {k for k in action_keys if MemoryInbox.is_tombstoned(self, k)}
        return replies, tombstoned

    def get(self, key: str) -> Any:
        self.single_reads += 1
        return super().get(key)

    def is_tombstoned(self, action_key: str) -> bool:
        self.single_reads += 1
        return super().is_tombstoned(action_key)


def test_a_batch_reads_the_inbox_once_when_it_can(start_pool):
    inbox = PrefetchingInbox()
    inbox.put("done:reserve", StoredReply("succeeded", {"kept": True}, None))
    inbox.tombstone("gone:reserve")
    service = Scripted()
    pool = start_pool([service], inbox=inbox)
    replies = Replies()
    pool.tell_many([command("new"), command("done"), command("gone")], replies)
    new, done, gone = replies.wait(3)
    assert (new.outcome, new.replayed) == ("succeeded", False)
    assert (done.outcome, done.replayed, done.output) == ("succeeded", True, {"kept": True})
    assert gone.outcome == "rejected" and gone.error.startswith("compensated: ")
    assert [key for _, key, _ in service.runs] == ["new:reserve"]
    assert (inbox.bulk_reads, inbox.single_reads) == (1, 0)


class BreaksOn:
    """A fault injector that crashes the actor on one saga's command."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id

    def decide(self, command: Command) -> None:
        if command.saga_id == self.saga_id:
            raise RuntimeError("fault injector broke")


class Probe(Activity):
    """An Activity that records how many replies had arrived each time it became idle."""

    def __init__(self, received: list[Any]) -> None:
        super().__init__()
        self.received = received
        self.idle_at: list[int] = []

    def end(self, n: int = 1) -> None:
        super().end(n)
        if self.count == 0:
            self.idle_at.append(len(self.received))


class Ending(Replies):
    """Ends the activity of each reply batch once it holds the replies, as a shard would."""

    def __init__(self) -> None:
        super().__init__()
        self.activity = Probe(self.items)

    def tell(self, message: Any) -> None:
        super().tell(message)
        self.activity.end()


def test_a_crashing_batch_is_idle_only_after_its_replies_are_sent(start_pool):
    replies = Ending()
    activity = replies.activity
    pool = start_pool([Scripted()], faults=BreaksOn("boom"), activity=activity)
    pool.tell_many([command(saga_id) for saga_id in ["ok-1", "ok-2", "boom"]],
                   activity.counting(replies))
    received = replies.wait(3)
    assert activity.wait_idle(WAIT)
    assert [r.outcome for r in received] == ["succeeded", "succeeded", "error"]
    idle_at = activity.idle_at
    assert idle_at and all(n == 3 for n in idle_at), idle_at  # never idle with replies unsent
