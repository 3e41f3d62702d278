"""Service actors and pools: dispatch, routing, threads, the handler guard, calls, stopping."""

from __future__ import annotations

import pickle
import threading
import zlib
from collections import Counter

import pytest
from actor_doubles import WAIT, Replies, Scripted, command, saga_for

from actors import (
    ActorUnavailable,
    CallFailed,
    CallTimeout,
    DeadLetters,
    Deliver,
    Rejected,
    Service,
    ServicePool,
    handles,
)

# -- dispatch and routing -------------------------------------------------------------------------


def test_a_command_is_handled_and_replied(start_pool):
    pool = start_pool([Scripted()])
    replies = Replies()
    pool.tell(command(payload={"value": 5}), replies)
    (reply,) = replies.wait(1)
    assert (reply.outcome, reply.output, reply.service, reply.instance) == (
        "succeeded", {"run": 1, "echo": 5}, "svc", 0)  # fmt: skip


def test_rejected_and_errors_become_replies(start_pool):
    service = Scripted()
    service.script = {"a:reserve": ["reject"], "b:reserve": ["raise"]}
    pool = start_pool([service])
    replies = Replies()
    pool.tell(command("a"), replies)
    pool.tell(command("b"), replies)
    rejected, error = replies.wait(2)
    assert (rejected.outcome, rejected.error) == ("rejected", "insufficient stock")
    assert (error.outcome, error.error) == ("error", "ValueError: boom")


def test_routing_is_crc32_of_the_saga_id_and_stable(start_pool):
    pool = start_pool([Scripted() for _ in range(4)])
    sagas = [f"order-{i}" for i in range(1000)]
    assert [pool.route(s) for s in sagas] == [zlib.crc32(s.encode()) % 4 for s in sagas]
    spread = Counter(pool.route(s) for s in sagas)
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 150


def test_all_commands_of_a_saga_go_to_one_instance_across_1000_sagas(start_pool):
    pool = start_pool([Scripted() for _ in range(4)])
    replies = Replies()
    sagas = [f"order-{i}" for i in range(1000)]
    for saga_id in sagas:
        pool.tell(command(saga_id), replies)
        pool.tell(command(saga_id, phase="compensation"), replies)
    got = replies.wait(2000)
    where: dict[str, set[int]] = {}
    for reply in got:
        where.setdefault(reply.command.saga_id, set()).add(reply.instance)
    assert all(len(instances) == 1 for instances in where.values())
    assert {s: i.pop() for s, i in where.items()} == {s: pool.route(s) for s in sagas}
    # each instance handled exactly its sagas, in arrival order (action before compensation)
    for index, service in enumerate(pool.instances):
        mine = [s for s in sagas if pool.route(s) == index]
        assert [key for _, key, _ in service.runs] == [
            k for s in mine for k in (f"{s}:reserve", f"{s}:reserve:compensation")
        ]


def test_handlers_run_on_their_actors_thread(start_pool):
    pool = start_pool([Scripted() for _ in range(3)])
    replies = Replies()
    for i in range(3):
        for n in range(5):
            pool.tell(command(saga_for(3, i, prefix=f"t{n}")), replies)
    replies.wait(15)
    threads = [service.threads for service in pool.instances]
    assert all(len(t) == 1 for t in threads)  # one thread per instance ...
    assert len(set().union(*threads)) == 3  # ... each its own ...
    assert threading.get_ident() not in set().union(*threads)  # ... never the caller's


def test_a_blocked_instance_does_not_hold_up_the_others(start_pool):
    pool = start_pool([Scripted() for _ in range(8)])
    blocked = 5
    stuck = saga_for(8, blocked, prefix="stuck")
    pool.instances[blocked].script[f"{stuck}:reserve"] = ["block"]
    replies = Replies()
    pool.tell(command(stuck), replies)
    assert pool.instances[blocked].entered.wait(WAIT)
    for i in range(8):
        if i != blocked:
            pool.tell(command(saga_for(8, i, prefix="free")), replies)
    others = replies.wait(7)
    assert {r.instance for r in others} == set(range(8)) - {blocked}
    pool.instances[blocked].release.set()
    last = replies.wait(8)[-1]
    assert (last.instance, last.outcome) == (blocked, "succeeded")


# -- the handler guard ----------------------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("cannot print me")

    def __repr__(self):
        raise RuntimeError("cannot repr me")


class Unpicklable(Exception):
    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()

    def __reduce__(self):
        raise TypeError("cannot pickle")


class Custom(BaseException):
    pass


RAISED = {
    "value": (ValueError("bad\nthing"), "ValueError: bad thing"),
    "unprintable": (Unprintable(), "Unprintable (unprintable exception)"),
    "unpicklable": (Unpicklable(), "Unpicklable: holds a lock"),
    "system_exit": (SystemExit(2), "SystemExit: 2"),
    "keyboard_interrupt": (KeyboardInterrupt(), "KeyboardInterrupt"),
    "generator_exit": (GeneratorExit(), "GeneratorExit"),
    "base_exception": (Custom("odd"), "Custom: odd"),
}


class Raiser(Service):
    @handles("raise_it")
    def raise_it(self, command):
        raise RAISED[command.payload["what"]][0]

    @handles("ping")
    def ping(self, command):
        return {"pong": True}


def test_the_unpicklable_double_really_is_unpicklable():
    with pytest.raises(TypeError):
        pickle.dumps(Unpicklable())


@pytest.mark.parametrize("what", sorted(RAISED))
def test_any_exception_becomes_an_error_reply_and_the_actor_lives(start_pool, what):
    pool = start_pool([Raiser()])
    replies = Replies()
    pool.tell(command(name="raise_it", payload={"what": what}), replies)
    pool.tell(command("other", name="ping"), replies)
    error, pong = replies.wait(2)
    assert (error.outcome, error.error) == ("error", RAISED[what][1])
    assert "\n" not in error.error
    assert pong.outcome == "succeeded"
    assert pool.restarts == (0,)


class Returner(Service):
    @handles("give")
    def give(self, command):
        return RETURNED[command.payload["what"]][0](command)


RETURNED = {
    "none": (lambda c: None, "returned NoneType None, not a JSON object"),
    "list": (lambda c: [1, 2], "returned list [1, 2], not a JSON object"),
    "str": (lambda c: "ok", "returned str 'ok', not a JSON object"),
    "set_inside": (lambda c: {"a": {1}}, "not JSON: TypeError: Object of type set"),
    "nan": (lambda c: {"a": float("nan")}, "not JSON: ValueError: Out of range float"),
    "object": (lambda c: {"a": object()}, "not JSON: TypeError: Object of type object"),
    "tuple_key": (lambda c: {(1, 2): 1}, "not JSON: TypeError: keys must be"),
}


@pytest.mark.parametrize("what", sorted(RETURNED))
def test_a_return_value_that_is_not_a_json_object_is_an_error(start_pool, what):
    pool = start_pool([Returner()])
    replies = Replies()
    pool.tell(command(name="give", payload={"what": what}), replies)
    (reply,) = replies.wait(1)
    assert reply.outcome == "error"
    assert "handler 'give' of Returner" in reply.error
    assert RETURNED[what][1] in reply.error


def test_returned_data_is_normalised_to_a_plain_private_copy(start_pool):
    kept = {}

    class Echo(Service):
        @handles("echo")
        def echo(self, command):
            kept["out"] = {"payload": command.payload, "pair": (1, 2), "n": 1}
            return kept["out"]

    pool = start_pool([Echo()])
    replies = Replies()
    pool.tell(command(name="echo", payload={"deep": {"x": [1]}}), replies)
    (reply,) = replies.wait(1)
    assert reply.output == {"payload": {"deep": {"x": [1]}}, "pair": [1, 2], "n": 1}
    assert reply.output is not kept["out"]
    kept["out"]["n"] = 99  # the handler keeping (and mutating) its dict does not reach the caller
    assert reply.output["n"] == 1


def test_a_handler_cannot_mutate_its_payload(start_pool):
    class Mutator(Service):
        @handles("top")
        def top(self, command):
            command.payload["sku"] = "changed"
            return {}

        @handles("nested")
        def nested(self, command):
            command.payload["lines"].append(3)
            return {}

    pool = start_pool([Mutator()])
    replies = Replies()
    payload = {"sku": "widget", "lines": [1, 2]}
    top = command("a", name="top", payload=payload)
    pool.tell(top, replies)
    pool.tell(command("b", name="nested", payload=payload), replies)
    first, second = replies.wait(2)
    assert first.outcome == second.outcome == "error"
    assert first.error.startswith("TypeError: 'mappingproxy' object does not support item")
    assert second.error.startswith("AttributeError: 'tuple' object has no attribute 'append'")
    assert top.payload == {"sku": "widget", "lines": (1, 2)}


def test_an_unknown_command_is_an_error_reply(start_pool):
    pool = start_pool([Scripted()])
    replies = Replies()
    pool.tell(command(name="ship"), replies)
    (reply,) = replies.wait(1)
    assert reply.outcome == "error" and "unknown command 'ship'" in reply.error


def test_a_deliver_told_straight_to_the_actor_is_handled(start_pool):
    pool = start_pool([Scripted()])
    replies = Replies()
    pool._slots[0].ref.tell(Deliver(command(), replies))  # not through the pool: not supervised
    (reply,) = replies.wait(1)
    assert reply.outcome == "succeeded"


def test_a_reply_to_that_refuses_the_reply_is_a_dead_letter(start_pool):
    class Refuses:
        def tell(self, message):
            raise RuntimeError("mailbox closed")

    letters = DeadLetters()
    pool = start_pool([Scripted()], dead_letters=letters)
    pool.tell(command("a"), Refuses())
    replies = Replies()
    pool.tell(command("b"), replies)
    replies.wait(1)  # the actor carried on after the refused reply
    (letter,) = letters.items()
    assert letter.message.outcome == "succeeded"
    assert "RuntimeError: mailbox closed" in letter.reason


# -- call, stop, start ----------------------------------------------------------------------------


def test_call_runs_on_the_actor_thread_after_queued_messages(start_pool):
    pool = start_pool([Scripted(), Scripted()])
    replies = Replies()
    saga = saga_for(2, 1)
    pool.tell(command(saga), replies)
    runs, thread = pool.call(1, lambda s: (list(s.runs), threading.get_ident()), timeout=WAIT)
    assert runs == [("action", f"{saga}:reserve", 1)]
    assert thread in pool.instances[1].threads
    assert pool.snapshots(timeout=WAIT) == [[], runs]


def test_call_reraises_what_the_function_raises(start_pool):
    pool = start_pool([Scripted()])

    def fail(service):
        raise LookupError("nope")

    with pytest.raises(LookupError, match="nope"):
        pool.call(0, fail, timeout=WAIT)

    def exit_(service):
        raise SystemExit(1)

    with pytest.raises(CallFailed, match="SystemExit: 1"):
        pool.call(0, exit_, timeout=WAIT)
    assert pool.call(0, lambda s: "alive", timeout=WAIT) == "alive"


def test_call_times_out_behind_a_blocked_handler(start_pool):
    pool = start_pool([Scripted()])
    service = pool.instances[0]
    service.script["saga-1:reserve"] = ["block"]
    pool.tell(command(), Replies())
    assert service.entered.wait(WAIT)
    with pytest.raises(CallTimeout, match=r"svc\[0\] did not answer within 0.05s"):
        pool.call(0, lambda s: None, timeout=0.05)
    service.release.set()


@pytest.mark.parametrize("timeout", [None, 0, -1])
def test_call_always_needs_a_timeout(start_pool, timeout):
    pool = start_pool([Scripted()])
    with pytest.raises(ValueError, match="timeout"):
        pool.call(0, lambda s: None, timeout=timeout)


def test_stop_processes_what_was_queued_then_stops(inbox):
    pool = ServicePool.start("svc", [Scripted(), Scripted()], inbox=inbox)
    replies = Replies()
    for i in range(50):
        pool.tell(command(f"s{i}"), replies)
    assert pool.stop(timeout=WAIT)
    assert len(replies) == 50
    assert all(not t.is_alive() for t in threading.enumerate() if t.name.startswith("sagactor-svc"))
    assert pool.stop(timeout=WAIT)  # idempotent


def test_after_stop_tells_are_dead_letters_and_calls_fail(inbox):
    letters = DeadLetters()
    pool = ServicePool.start("svc", [Scripted()], inbox=inbox, dead_letters=letters)
    assert pool.stop(timeout=WAIT)
    pool.tell(command(), Replies())
    (letter,) = letters.items()
    assert letter.reason == "pool stopped" and letter.message.command == command()
    with pytest.raises(ActorUnavailable, match=r"svc\[0\] is stopped"):
        pool.call(0, lambda s: None, timeout=WAIT)


def test_context_manager_stops_the_pool(inbox):
    with ServicePool.start("svc", [Scripted()], inbox=inbox) as pool:
        replies = Replies()
        pool.tell(command(), replies)
        replies.wait(1)
    pool.tell(command(), replies)
    assert pool.dead_letters.total == 1


def test_start_checks_its_arguments(inbox, start_pool):
    with pytest.raises(ValueError, match="at least one"):
        ServicePool.start("svc", [], inbox=inbox)
    with pytest.raises(ValueError, match="non-empty name"):
        ServicePool.start("", [Scripted()], inbox=inbox)
    with pytest.raises(TypeError, match="is not a Service"):
        ServicePool.start("svc", [object()], inbox=inbox)  # type: ignore[list-item]
    same = Scripted()
    with pytest.raises(ValueError, match="appears twice"):
        ServicePool.start("svc", [same, same], inbox=inbox)
    start_pool([same])
    with pytest.raises(ValueError, match="another live pool"):
        ServicePool.start("other", [same], inbox=inbox)


def test_a_service_object_may_run_again_once_its_pool_stopped(inbox):
    service = Scripted()
    ServicePool.start("one", [service], inbox=inbox).stop(timeout=WAIT)
    with ServicePool.start("two", [service], inbox=inbox) as pool:
        assert pool.instances == (service,)


def test_rejected_from_a_pool_instance_is_definitive_across_redelivery(start_pool, inbox):
    class No(Service):
        runs = 0

        @handles("do")
        def do(self, command):
            No.runs += 1
            raise Rejected("closed")

    pool = start_pool([No()])
    replies = Replies()
    pool.tell(command(attempt=1), replies)
    pool.tell(command(attempt=2), replies)
    first, second = replies.wait(2)
    assert (first.replayed, second.replayed) == (False, True)
    assert No.runs == 1 and inbox.get("saga-1:reserve").outcome == "rejected"
