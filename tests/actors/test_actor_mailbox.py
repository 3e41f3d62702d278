"""``fast_inbox``: pykka actors on a ``queue.SimpleQueue`` mailbox (pykka's private hook).

These tests pin the pykka behaviour the hook relies on: if a pykka release renames
``_create_actor_inbox`` or needs more of an inbox than ``put``/``get``/``empty``, they fail.
"""

from __future__ import annotations

import queue
import threading
from importlib.metadata import version
from typing import Any

import pykka
import pytest

from actors import fast_inbox


class Recorder(pykka.ThreadingActor):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return fast_inbox()

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.stopped = threading.Event()

    def on_receive(self, message: Any) -> Any:
        if message == "fail":
            raise ValueError("asked to fail")
        self.seen.append(message)
        return list(self.seen)

    def on_stop(self) -> None:
        self.stopped.set()


def test_the_supported_pykka_is_the_pinned_range():
    major = int(version("pykka").split(".")[0])
    assert major == 4, "fast_inbox is tested against pykka 4.x; re-check the hook first"


def test_an_actor_gets_a_simple_queue_and_handles_messages_in_order():
    ref = Recorder.start()
    try:
        assert isinstance(ref.actor_inbox, queue.SimpleQueue)
        for n in range(100):
            ref.tell(n)
        assert ref.ask("last", timeout=5) == [*range(100), "last"]
    finally:
        ref.stop()


def test_ask_errors_still_reach_the_caller():
    ref = Recorder.start()
    try:
        with pytest.raises(ValueError, match="asked to fail"):
            ref.ask("fail", timeout=5)
    finally:
        if ref.is_alive():
            ref.stop()


def test_stop_handles_what_was_queued_before_it_and_refuses_later_tells():
    seen: list[Any] = []
    stopped = threading.Event()

    class Watched(Recorder):
        def on_receive(self, message: Any) -> Any:
            seen.append(message)

        def on_stop(self) -> None:
            stopped.set()

    ref = Watched.start()
    for n in range(50):
        ref.tell(n)
    ref.stop(timeout=5)
    assert seen == list(range(50))
    assert stopped.is_set()
    assert ref.actor_inbox.empty()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
