"""A service for crash and recovery tests, steered by environment variables of its process.

- ``CRASH_BLOCK_STEP=b``: the action of step ``b`` blocks until the file named by
  ``CRASH_RELEASE_FILE`` exists (or forever without one) — so a process can be killed mid-step.
- ``CRASH_SUPPORT_BROKEN=1``: importing this module fails (the definition is unavailable).
- ``CRASH_UNDO_FAILS=1``: every compensation raises (to park a saga ``failed``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from actors import Service, handles

if os.environ.get("CRASH_SUPPORT_BROKEN") == "1":
    raise ImportError("crash_support is broken on purpose (CRASH_SUPPORT_BROKEN=1)")


class Blocking(Service):
    undo_fails = os.environ.get("CRASH_UNDO_FAILS") == "1"

    def __init__(self) -> None:
        super().__init__()
        self.block_step = os.environ.get("CRASH_BLOCK_STEP")
        self.release_file = os.environ.get("CRASH_RELEASE_FILE")
        self.wakeup = threading.Event()

    @handles("do")
    def do(self, command: Any) -> dict[str, Any]:
        if command.step == self.block_step:
            while not (self.release_file and os.path.exists(self.release_file)):
                # a stand-in for a slow remote call, until the test kills this process or
                # releases it: the release comes from another process, as a file, so it is
                # polled
                self.wakeup.wait(0.01)
        return {"step": command.step, "pid": os.getpid()}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        if type(self).undo_fails:
            raise RuntimeError("the compensation is broken")
        return {"undone": command.step}
