"""The wall-clock guard of the deterministic harness (``sagas.testing._guard``): one worker
thread reused from run to run, what the work raised handed back, a call that blocks found and
its worker abandoned."""

from __future__ import annotations

import threading
import time

import pytest

from sagas.testing._guard import HandlerHung, current_watch, guarded


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sagactor-test-worker"]


def test_guarded_work_returns_its_value_on_one_reused_worker() -> None:
    assert guarded(lambda: 1, 5.0) == 1
    before = len(_workers())
    seen = {guarded(threading.get_ident, 5.0) for _ in range(200)}
    assert threading.get_ident() not in seen  # it ran on a worker
    assert len(seen) == 1 and len(_workers()) == before  # the same one, every time


def test_what_the_work_raises_reaches_the_caller_and_the_worker_serves_again() -> None:
    def fails() -> None:
        raise KeyError("boom")

    def exits() -> None:
        raise SystemExit(3)

    with pytest.raises(KeyError, match="boom"):
        guarded(fails, 5.0)
    with pytest.raises(SystemExit):
        guarded(exits, 5.0)
    assert guarded(lambda: "again", 5.0) == "again"


def test_without_a_timeout_or_inside_guarded_work_it_runs_inline() -> None:
    assert guarded(threading.get_ident, None) == threading.get_ident()
    outer, inner = guarded(lambda: (threading.get_ident(),
                                    guarded(threading.get_ident, 5.0)), 5.0)
    assert outer == inner  # nested: on the same worker, not handed over again
    assert current_watch() is None  # outside guarded work there is no watch


def test_a_call_that_blocks_is_hung_and_the_next_run_gets_a_fresh_worker() -> None:
    release = threading.Event()
    worker_ids: list[int] = []

    def blocks() -> None:
        worker_ids.append(threading.get_ident())
        watch = current_watch()
        assert watch is not None
        watch.enter("svc.blocks", ("context", 1))
        release.wait(30)
        watch.leave()

    started = time.monotonic()
    try:
        with pytest.raises(HandlerHung) as hung:
            guarded(blocks, 0.2)
        assert time.monotonic() - started < 5
        assert hung.value.label == "svc.blocks" and hung.value.context == ("context", 1)
        assert str(hung.value) == "svc.blocks did not return within 0.2s"
        # the blocked worker is abandoned: the next piece of work runs on another thread
        assert guarded(threading.get_ident, 5.0) != worker_ids[0]
    finally:
        release.set()


def test_slow_work_outside_any_watched_call_is_not_hung() -> None:
    def slow() -> str:
        time.sleep(0.3)  # longer than the timeout, but no call into service code is open
        return "done"

    assert guarded(slow, 0.1) == "done"
