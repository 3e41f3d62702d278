"""Services and a child process for the event bus tests (``tests/test_event_bus*.py``).

Run as a module, it is the process the crash test kills::

    python -m tests.bus_support DB_PATH OUT_FILE SAGAS

It opens the SQLite store at ``DB_PATH``, subscribes ``positions`` to every topic (each
delivered position appended to ``OUT_FILE`` as a line, flushed), recovers in-flight sagas of
dead owners, starts sagas ``s-0`` to ``s-<SAGAS - 1>`` that do not exist yet (a few at a time),
waits for every saga and for the subscriber to catch up, and prints ``done``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from actors import Service, handles, subscribes
from sagas import Delivery, Flow, Runtime, parse_flow

FLOW_TEXT = """\
saga: bus_flow
services:
  svc: tests.bus_support:Quick
defaults:
  retry: {attempts: 1}
steps:
  - {name: reserve, service: svc, action: do, compensation: undo}
  - {name: charge, service: svc, action: do, compensation: undo}
  - {name: ship, service: svc, action: do}
"""

NOTIFY_TEXT = """\
saga: bus_notify
services:
  svc: tests.bus_support:Quick
  notifications: tests.bus_support:Notifier
steps:
  - {name: reserve, service: svc, action: do, compensation: undo}
  - {name: notify, service: notifications, action: send}
"""


def flow(name: str = "bus_flow") -> Flow:
    """``bus_flow`` (three steps on ``Quick``) renamed ``name``."""
    return parse_flow(FLOW_TEXT.replace("saga: bus_flow", f"saga: {name}"), source=f"<{name}>")


def notify_flow() -> Flow:
    """``bus_notify``: a step on ``Quick``, then one on ``Notifier`` (which subscribes)."""
    return parse_flow(NOTIFY_TEXT, source="<bus_notify>")


class Quick(Service):
    """Every step succeeds at once."""

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        return {"step": command.step}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return {"undone": command.step}


class Notifier(Service):
    """A notifications service: a step's handler, and a subscriber to completed sagas."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.completed: list[str] = []

    @handles("send")
    def send(self, command: Any) -> dict[str, Any]:
        return {"sent": True}

    @subscribes("bus_notify.saga.completed")
    def on_completed(self, delivery: Delivery) -> None:
        with self.lock:
            self.completed.append(delivery.saga_id)


def main(db: str, out: str, sagas: int) -> None:
    """The crash test's child: see the module docstring."""
    with open(out, "a", encoding="utf-8") as sink:

        def record(delivery: Delivery) -> None:
            sink.write(f"{delivery.position}\n")
            sink.flush()
            time.sleep(0.002)  # a subscriber slower than the sagas: it is behind when killed

        with Runtime(f"sqlite:///{db}", recover=True) as runtime:
            runtime.subscribe("positions", ["*"], record)
            the_flow = flow()
            ids = [f"s-{n}" for n in range(sagas)]
            pending = []
            for saga_id in ids:
                pending.append(runtime.submit(the_flow, {}, saga_id))
                if len(pending) >= 20:
                    for submitted in pending:
                        submitted.result(30)
                    pending.clear()
            for submitted in pending:
                submitted.result(30)
            for saga_id in ids:
                runtime.wait(saga_id, timeout=60)
            assert runtime.bus.wait_caught_up(timeout=120), runtime.bus.subscriptions()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
