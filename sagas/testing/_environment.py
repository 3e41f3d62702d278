"""Testing sagas: a runtime on virtual time, fault injection, and helpers to wait on events.

::

    from sagas.testing import SagaTestEnvironment

    def test_rejected_payment_releases_stock():
        with SagaTestEnvironment() as env:
            env.faults.add(step="charge_payment", kind="reject")
            result = env.run("flows/order_inventory.yaml",
                             {"order_id": "o-1", "sku": "widget", "qty": 2, "amount": 500})
            assert result.status == "compensated"

Time only moves when the environment moves it: :meth:`SagaTestEnvironment.run` and
:meth:`~SagaTestEnvironment.drive` wait until nothing is in flight, then jump the clock to the
next timer (a retry's backoff, a step's timeout, the deadline), so a saga with minutes of
timeouts finishes in milliseconds and always the same way for the same seed. For tests that
need to hold time still (a handler blocked on purpose), use :meth:`advance` and
:meth:`wait_for` instead.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors import Faults, Service, VirtualClock

from ..engine.runtime import Runtime, SagaResult
from ..events import Event
from ..language.model import Flow
from ..stores import TERMINAL, SagaStore

__all__ = ["EventLog", "SagaTestEnvironment"]

START = 1_700_000_000.0


class EventLog:
    """Every event a runtime commits, in commit order, with a way to wait for one."""

    def __init__(self) -> None:
        self._events: list[tuple[str, Event]] = []
        self._changed = threading.Condition()

    def __call__(self, saga_id: str, events: Sequence[Event]) -> None:
        with self._changed:
            self._events.extend((saga_id, e) for e in events)
            self._changed.notify_all()

    def events(self, saga_id: str | None = None) -> list[Event]:
        with self._changed:
            return [e for s, e in self._events if saga_id is None or s == saga_id]

    def wait_for(self, predicate: Callable[[str, Event], bool], timeout: float = 10.0,
                 count: int = 1) -> list[tuple[str, Event]]:
        """Block until ``count`` committed events satisfy ``predicate``; they are returned."""
        with self._changed:
            found: list[tuple[str, Event]] = []

            def ready() -> bool:
                found[:] = [(s, e) for s, e in self._events if predicate(s, e)]
                return len(found) >= count

            if not self._changed.wait_for(ready, timeout):
                raise TimeoutError(f"waited {timeout}s for {count} matching event(s); "
                                   f"saw {len(found)}")
            return found


class SagaTestEnvironment:
    """A :class:`~sagas.engine.runtime.Runtime` on a :class:`VirtualClock`, with :class:`Faults`.

    ``services`` supplies service objects by import path (``"flows.shop:Inventory"``) or
    service name instead of importing the flow's classes — handy for fakes. ``tracing``: a
    :class:`sagas.observe.tracing.SagaTracer` (``Runtime(tracing=...)``); its spans are the
    same in every run of a seed (ids from the saga ids, times from the virtual clock).
    """

    def __init__(self, store: str | SagaStore = "memory://", *, seed: int = 0,
                 start: float = START, shards: int = 2, faults: Faults | None = None,
                 services: Mapping[str, Service | Sequence[Service]] | None = None,
                 wait_timeout: float = 10.0, tracing: Any = None):
        self.clock = VirtualClock(start)
        self.faults = faults if faults is not None else Faults()
        self.log = EventLog()
        self.wait_timeout = wait_timeout
        id_source = random.Random(f"ids:{seed}")
        self.runtime = Runtime(store, clock=self.clock, random=seed, shards=shards,
                               faults=self.faults, services=services, listeners=[self.log],
                               ids=lambda: f"{id_source.getrandbits(64):016x}", tracing=tracing)

    def __enter__(self) -> SagaTestEnvironment:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self.runtime.close()

    # -- time -----------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def settle(self, timeout: float | None = None) -> None:
        """Wait until no message is in flight anywhere in the runtime."""
        if not self.runtime.wait_idle(timeout or self.wait_timeout):
            raise TimeoutError(f"the runtime did not go idle within {timeout or self.wait_timeout}s"
                               f" ({self.runtime.activity.count} messages in flight)")

    def advance(self, seconds: float) -> None:
        """Move virtual time forward, firing due timers; does not wait for their effects."""
        self.clock.advance(seconds)

    # -- sagas ----------------------------------------------------------------------------------
    def start(self, flow: Flow | str | os.PathLike[str], input: Any,
              saga_id: str | None = None) -> str:
        return self.runtime.start(flow, input, saga_id)

    def run(self, flow: Flow | str | os.PathLike[str], input: Any,
            saga_id: str | None = None) -> SagaResult:
        """Start a saga and drive virtual time until it ends."""
        return self.drive(self.start(flow, input, saga_id))

    def drive(self, saga_id: str | None = None, *, max_timers: int = 100_000) -> SagaResult:
        """Settle, then jump to the next timer, until ``saga_id`` (or every saga) has ended."""
        for _ in range(max_timers):
            self.settle()
            if saga_id is not None:
                if self.runtime.store.header(saga_id).status in TERMINAL:
                    return self.runtime.result(saga_id)
            elif not self.runtime.store.in_flight():
                return None  # type: ignore[return-value]
            due = self.runtime.scheduler.next_due()
            if due is None:
                raise TimeoutError(f"saga {saga_id or '(all)'} is stuck: nothing in flight and "
                                   "no timer pending")
            self.clock.advance_to(max(due, self.clock.now()), settle=self.runtime.activity,
                                  settle_timeout=self.wait_timeout)
        raise TimeoutError(f"saga {saga_id} did not end after {max_timers} timers")

    def drive_all(self) -> None:
        """Drive virtual time until no saga in the store is in flight."""
        self.drive(None)

    def wait_for(self, saga_id: str, type: str, *, step: str | None = None,
                 attempt: int | None = None, count: int = 1,
                 timeout: float | None = None) -> list[Event]:
        """Block until ``count`` events of ``type`` (for ``step``/``attempt``) are committed."""

        def match(s: str, e: Event) -> bool:
            return (s == saga_id and e.type == type and (step is None or e.step == step)
                    and (attempt is None or e.attempt == attempt))

        found = self.log.wait_for(match, timeout or self.wait_timeout, count)
        return [e for _, e in found]

    def result(self, saga_id: str) -> SagaResult:
        return self.runtime.result(saga_id)

    def instances(self, import_path: str) -> list[Service]:
        return self.runtime.instances(import_path)

    def reject(self, step: str, **match: Any) -> None:
        """Shortcut: every attempt of ``step``'s action is rejected."""
        self.faults.add(step=step, phase="action", kind="reject", **match)

