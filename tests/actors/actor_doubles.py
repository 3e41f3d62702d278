"""Test doubles for the actor runtime's tests: a reply collector, a scripted service, commands."""

from __future__ import annotations

import threading
from typing import Any

import actors
from actors import Command, MemoryInbox, Rejected, Service, StoredReply, handles

WAIT = 5.0  # seconds: the most any test waits for something that should happen at once


def command(
    saga_id: str = "saga-1",
    step: str = "reserve",
    phase: str = "action",
    *,
    name: str | None = None,
    attempt: int = 1,
    payload: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> Command:
    """A command with the keys DESIGN §3 prescribes (``do`` for actions, ``undo`` otherwise)."""
    key = f"{saga_id}:{step}" if phase == "action" else f"{saga_id}:{step}:compensation"
    return Command(
        command_id=f"{key}#{attempt}",
        saga_id=saga_id,
        step=step,
        phase=phase,  # type: ignore[arg-type]
        name=name or ("do" if phase == "action" else "undo"),
        attempt=attempt,
        key=key,
        payload=payload if payload is not None else {"value": 1},
        result=result,
    )


class Replies:
    """A ``reply_to`` that collects the replies it is told (a batch counts for each reply it
    holds, and ``batches`` counts the batches); tests wait on it (never sleep)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Any] = []
        self.batches = 0

    def tell(self, message: Any) -> None:
        with self._cond:
            if isinstance(message, actors.Replies):
                self.items.extend(message.replies)
                self.batches += 1
            else:
                self.items.append(message)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = WAIT) -> list[Any]:
        """The first ``n`` messages, waiting up to ``timeout`` for them; fails the test if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= n, timeout):
                raise AssertionError(f"expected {n} replies within {timeout}s, got {self.items}")
            return list(self.items[:n])

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)


class Scripted(Service):
    """Handlers ``do`` (actions) and ``undo`` (compensations) that follow a script.

    ``script[key]`` lists what each successive run of that key does: ``ok``, ``reject``,
    ``raise`` or ``block`` (set ``entered``, wait for ``release``, succeed). Runs past the list
    succeed. Every run is recorded in ``runs`` with the thread it ran on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[str, list[str]] = {}
        self.runs: list[tuple[str, str, int]] = []  # (phase, key, attempt)
        self.threads: set[int] = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.tombstoned_when_run: list[bool] = []
        self.inbox: MemoryInbox | None = None

    def _run(self, command: Command) -> dict[str, Any]:
        self.runs.append((command.phase, command.key, command.attempt))
        self.threads.add(threading.get_ident())
        if self.inbox is not None:
            self.tombstoned_when_run.append(self.inbox.is_tombstoned(command.action_key))
        plan = self.script.get(command.key, [])
        done = sum(1 for _, key, _ in self.runs if key == command.key) - 1
        what = plan[done] if done < len(plan) else "ok"
        if what == "reject":
            raise Rejected("insufficient stock")
        if what == "raise":
            raise ValueError("boom")
        if what == "block":
            self.entered.set()
            if not self.release.wait(WAIT):
                raise TimeoutError("the test never released the handler")
        return {"run": len(self.runs), "echo": command.payload.get("value")}

    @handles("do")
    def do(self, command: Command) -> dict[str, Any]:
        return self._run(command)

    @handles("undo")
    def undo(self, command: Command) -> dict[str, Any]:
        return self._run(command)

    def snapshot(self) -> Any:
        return list(self.runs)


class FlakyInbox(MemoryInbox):
    """A memory inbox whose ``get`` raises ``error`` for the keys in ``poison``."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__()
        self.poison: set[str] = set()
        self.error = error if error is not None else OSError("disk gone")

    def get(self, key: str) -> StoredReply | None:
        if key in self.poison:
            raise self.error
        return super().get(key)


def saga_for(pool_size: int, instance: int, *, prefix: str = "saga") -> str:
    """A saga id that a pool of ``pool_size`` routes to ``instance``."""
    import zlib

    for i in range(100_000):
        saga_id = f"{prefix}-{i}"
        if zlib.crc32(saga_id.encode()) % pool_size == instance:
            return saga_id
    raise AssertionError("no saga id found")
