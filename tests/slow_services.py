"""Services that take their time, or never return: for the CLI's exit and signal handling."""

from __future__ import annotations

import threading
import time
from typing import Any

from actors import Service, handles


class Slow(Service):
    """Each call takes 20 ms (a batch stays in flight long enough to be interrupted)."""

    @handles("work")
    def work(self, command: Any) -> dict[str, Any]:
        time.sleep(0.02)  # the behaviour: a slow call keeps a batch in flight to interrupt
        return {}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return {}


class Stuck(Service):
    """``work`` never returns."""

    @handles("work")
    def work(self, command: Any) -> dict[str, Any]:
        threading.Event().wait()
        return {}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return {}
