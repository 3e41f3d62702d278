"""The services of ``console_demo.yaml``, the flow the web console's tests run: a stock that
reserves and releases, a gate whose ``hold`` blocks until the test opens it (a saga in flight,
blocked in a handler), and a shipper (the pivot)."""

from __future__ import annotations

import threading
from typing import Any

from actors import Service, handles

__all__ = ["Gate", "Shipping", "Stock"]


class Stock(Service):
    @handles("reserve")
    def reserve(self, command: Any) -> dict[str, Any]:
        return {"reservation": command.key}

    @handles("release")
    def release(self, command: Any) -> dict[str, Any]:
        return {"released": command.action_key}


class Gate(Service):
    """``hold`` returns at once unless the saga's input says ``hold: true``: then it waits
    until :meth:`open`, at most ``limit`` seconds (:attr:`LIMIT` by default), so that no test
    leaves a thread behind."""

    LIMIT = 120.0

    def __init__(self, limit: float | None = None) -> None:
        super().__init__()
        self.opened = threading.Event()
        self.limit = self.LIMIT if limit is None else limit

    def open(self) -> None:
        self.opened.set()

    @handles("hold")
    def hold(self, command: Any) -> dict[str, Any]:
        if (command.payload or {}).get("hold"):
            self.opened.wait(self.limit)
        return {"passed": True}


class Shipping(Service):
    @handles("ship")
    def ship(self, command: Any) -> dict[str, Any]:
        return {"tracking": f"trk-{command.saga_id}"}
