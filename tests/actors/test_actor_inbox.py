"""The idempotent inbox (DESIGN §3), through the dispatcher a service actor runs: no threads."""

from __future__ import annotations

import pytest
from actor_doubles import FlakyInbox, Scripted, command

from actors import Fault, Faults, InboxStore, MemoryInbox, Service, StoredReply, handles
from actors._dispatch import Dispatcher


@pytest.fixture
def service() -> Scripted:
    return Scripted()


@pytest.fixture
def inbox(service: Scripted) -> MemoryInbox:
    inbox = MemoryInbox()
    service.inbox = inbox
    return inbox


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def dispatch(service, inbox, faults):
    dispatcher = Dispatcher(service, service_name="svc", instance=2, inbox=inbox, faults=faults)
    return lambda cmd: list(dispatcher.process(cmd))


def one(replies):
    assert len(replies) == 1, replies
    return replies[0]


def test_a_success_is_stored_and_replied(dispatch, service, inbox):
    reply = one(dispatch(command(payload={"value": 7})))
    assert (reply.outcome, reply.output, reply.error, reply.replayed) == (
        "succeeded", {"run": 1, "echo": 7}, None, False)  # fmt: skip
    assert (reply.service, reply.instance) == ("svc", 2)
    assert inbox.get("saga-1:reserve") == StoredReply("succeeded", {"run": 1, "echo": 7}, None)


def test_redelivery_after_success_replays_without_running(dispatch, service):
    first = one(dispatch(command(attempt=1)))
    again = one(dispatch(command(attempt=2)))
    assert len(service.runs) == 1
    assert again.replayed and again.outcome == "succeeded"
    assert again.output == first.output
    assert again.command.attempt == 2  # the reply answers the command that was delivered


def test_retry_after_error_runs_the_handler_again(dispatch, service, inbox):
    service.script["saga-1:reserve"] = ["raise"]
    failed = one(dispatch(command(attempt=1)))
    assert (failed.outcome, failed.error) == ("error", "ValueError: boom")
    assert inbox.get("saga-1:reserve") is None  # errors are not definitive
    retried = one(dispatch(command(attempt=2)))
    assert retried.outcome == "succeeded" and not retried.replayed
    assert len(service.runs) == 2


def test_an_actions_rejected_is_stored_as_definitive(dispatch, service, inbox):
    service.script["saga-1:reserve"] = ["reject"]
    first = one(dispatch(command(attempt=1)))
    assert (first.outcome, first.error, first.output) == ("rejected", "insufficient stock", None)
    assert inbox.get("saga-1:reserve") == StoredReply("rejected", None, "insufficient stock")
    again = one(dispatch(command(attempt=2)))
    assert (again.outcome, again.replayed) == ("rejected", True)
    assert len(service.runs) == 1


def test_a_late_action_after_its_compensation_is_rejected_without_running(dispatch, service):
    compensated = one(dispatch(command(phase="compensation")))
    assert compensated.outcome == "succeeded"
    late = one(dispatch(command()))
    assert late.outcome == "rejected"
    assert late.error.startswith("compensated: ")
    assert service.runs == [("compensation", "saga-1:reserve:compensation", 1)]


def test_the_tombstone_wins_over_a_stored_success(dispatch, service):
    assert one(dispatch(command())).outcome == "succeeded"
    assert one(dispatch(command(phase="compensation"))).outcome == "succeeded"
    redelivered = one(dispatch(command(attempt=2)))
    assert redelivered.outcome == "rejected" and redelivered.error.startswith("compensated: ")


def test_the_tombstone_is_written_before_the_compensation_runs(dispatch, service, inbox):
    one(dispatch(command(phase="compensation")))
    assert service.tombstoned_when_run == [True]
    assert inbox.is_tombstoned("saga-1:reserve")


def test_a_compensation_success_is_replayed(dispatch, service):
    first = one(dispatch(command(phase="compensation", attempt=1)))
    again = one(dispatch(command(phase="compensation", attempt=2)))
    assert again.replayed and again.output == first.output
    assert len(service.runs) == 1


@pytest.mark.parametrize("failure", ["reject", "raise"])
def test_a_failed_compensation_is_not_stored(dispatch, service, inbox, failure):
    service.script["saga-1:reserve:compensation"] = [failure]
    failed = one(dispatch(command(phase="compensation", attempt=1)))
    assert failed.outcome == ("rejected" if failure == "reject" else "error")
    assert inbox.get("saga-1:reserve:compensation") is None
    retried = one(dispatch(command(phase="compensation", attempt=2)))
    assert retried.outcome == "succeeded" and not retried.replayed
    assert len(service.runs) == 2


def test_a_compensation_receives_the_actions_result_frozen(inbox):
    seen = []

    class Keeper(Service):
        @handles("undo")
        def undo(self, command):
            seen.append(command.result)
            with pytest.raises(TypeError):
                command.result["reservation"] = "changed"
            return {}

    dispatcher = Dispatcher(Keeper(), service_name="s", instance=0, inbox=inbox)
    one(list(dispatcher.process(command(phase="compensation", result={"reservation": "r1"}))))
    assert seen == [{"reservation": "r1"}]


def test_an_unknown_command_is_an_error_and_touches_nothing(dispatch, service, inbox):
    reply = one(dispatch(command(phase="compensation", name="ship")))
    assert reply.outcome == "error"
    assert "unknown command 'ship'" in reply.error and "handles do, undo" in reply.error
    assert not inbox.is_tombstoned("saga-1:reserve") and len(inbox) == 0


def test_reply_outputs_are_private_copies(dispatch, service, inbox):
    first = one(dispatch(command()))
    first.output["echo"] = "mutated"
    again = one(dispatch(command(attempt=2)))
    again.output["run"] = "mutated too"
    assert inbox.get("saga-1:reserve").output == {"run": 1, "echo": 1}
    assert one(dispatch(command(attempt=3))).output == {"run": 1, "echo": 1}


def test_an_inbox_that_raises_escapes_the_dispatcher(service, faults):
    inbox = FlakyInbox()
    inbox.poison.add("saga-1:reserve")
    dispatcher = Dispatcher(service, service_name="svc", instance=0, inbox=inbox, faults=faults)
    with pytest.raises(OSError, match="disk gone"):
        list(dispatcher.process(command()))
    assert service.runs == []


# -- faults, applied at the handler-call point ----------------------------------------------------


def test_reject_fault_is_stored_like_a_real_rejected(dispatch, service, inbox, faults):
    faults.add(step="reserve", kind="reject", attempts={1})
    first = one(dispatch(command(attempt=1)))
    assert (first.outcome, first.error) == ("rejected", "injected rejection")
    assert service.runs == []
    assert inbox.get("saga-1:reserve").outcome == "rejected"
    again = one(dispatch(command(attempt=2)))  # no fault on attempt 2, but the "no" is definitive
    assert again.outcome == "rejected" and again.replayed and service.runs == []


def test_reject_fault_on_a_compensation_is_a_failed_attempt(dispatch, service, inbox, faults):
    faults.add(step="reserve", phase="compensation", kind="reject", attempts={1}, message="nope")
    first = one(dispatch(command(phase="compensation", attempt=1)))
    assert (first.outcome, first.error) == ("rejected", "nope")
    assert inbox.get("saga-1:reserve:compensation") is None
    assert one(dispatch(command(phase="compensation", attempt=2))).outcome == "succeeded"


def test_error_fault_behaves_like_a_raise(dispatch, service, inbox, faults):
    faults.add(step="reserve", kind="error", attempts={1})
    first = one(dispatch(command(attempt=1)))
    assert (first.outcome, first.error) == ("error", "InjectedFault: injected error")
    assert service.runs == [] and inbox.get("saga-1:reserve") is None
    assert one(dispatch(command(attempt=2))).outcome == "succeeded"


def test_drop_fault_runs_nothing_and_replies_nothing(dispatch, service, inbox, faults):
    faults.add(step="reserve", kind="drop")
    assert dispatch(command()) == []
    assert service.runs == [] and inbox.get("saga-1:reserve") is None


def test_run_then_drop_fault_runs_and_stores_but_replies_nothing(dispatch, service, inbox, faults):
    faults.add(step="reserve", kind="run_then_drop", attempts={1})
    assert dispatch(command(attempt=1)) == []
    assert len(service.runs) == 1
    assert inbox.get("saga-1:reserve").outcome == "succeeded"
    retry = one(dispatch(command(attempt=2)))
    assert retry.replayed and retry.outcome == "succeeded" and len(service.runs) == 1


def test_duplicate_fault_processes_twice_through_the_inbox(dispatch, service, faults):
    faults.add(step="reserve", kind="duplicate")
    first, second = dispatch(command())
    assert (first.outcome, first.replayed) == ("succeeded", False)
    assert (second.outcome, second.replayed) == ("succeeded", True)
    assert second.output == first.output and len(service.runs) == 1


def test_duplicate_of_an_error_runs_twice(dispatch, service, faults):
    faults.add(step="reserve", kind="duplicate")
    service.script["saga-1:reserve"] = ["raise"]
    first, second = dispatch(command())
    assert (first.outcome, second.outcome) == ("error", "succeeded")
    assert len(service.runs) == 2


def test_a_custom_injector_is_consulted_once_per_delivery(service, inbox):
    calls = []

    class Every:
        def decide(self, cmd):
            calls.append(cmd.attempt)
            return Fault("duplicate") if cmd.attempt == 1 else None

    dispatcher = Dispatcher(service, service_name="s", instance=0, inbox=inbox, faults=Every())
    assert len(list(dispatcher.process(command(attempt=1)))) == 2
    assert len(list(dispatcher.process(command(attempt=2)))) == 1
    assert calls == [1, 2]


# -- the memory inbox's batch write ----------------------------------------------------------------


def test_memory_inbox_writes_many_like_puts_and_tombstones():
    inbox = MemoryInbox()
    assert isinstance(inbox, InboxStore)
    inbox.put("k0", StoredReply("succeeded", {"old": 1}, None))
    inbox.write_many(
        [
            ("k0", StoredReply("rejected", None, "no")),
            ("k1", StoredReply("succeeded", {"first": 1}, None)),
            ("k1", StoredReply("succeeded", {"second": 2}, None)),  # in order: the later wins
        ],
        ("t1", "t2", "t1"),
    )
    assert inbox.get("k0") == StoredReply("rejected", None, "no")
    assert inbox.get("k1") == StoredReply("succeeded", {"second": 2}, None)
    assert inbox.is_tombstoned("t1") and inbox.is_tombstoned("t2")
    assert not inbox.is_tombstoned("k1") and inbox.get("t1") is None
    assert len(inbox) == 2
    inbox.write_many([], [])
    inbox.write_many(iter([("k2", StoredReply("succeeded", {}, None))]), iter(["t3"]))
    assert len(inbox) == 3 and inbox.is_tombstoned("t3")
    assert repr(inbox) == "MemoryInbox(3 replies, 3 tombstones)"


@pytest.mark.parametrize(
    ("replies", "tombstones"),
    [
        ([("k1", StoredReply("succeeded", {}, None)), ("k2", {"outcome": "succeeded"})], ["t"]),
        ([("k1", StoredReply("succeeded", {}, None))], "t"),  # one key, not a list of keys
        ({"k1": StoredReply("succeeded", {}, None)}, ["t"]),  # a dict, not a list of pairs
    ],
)
def test_memory_inbox_writes_none_of_a_refused_batch(replies, tombstones):
    inbox = MemoryInbox()
    with pytest.raises(TypeError):
        inbox.write_many(replies, tombstones)
    assert len(inbox) == 0 and not inbox.is_tombstoned("t")
