"""``saga resume``: finish every in-flight saga whose owner process is gone.

On a PostgreSQL store whose members are alive there is nothing to resume: they take a dead
member's partitions over and finish its sagas themselves; the command says so and resumes
none. With no member alive it is a temporary member, holding every partition while it drives
their sagas to their end; a saga whose flow's services do not import here is left in flight
then (a member that can run it finishes it), and said so.
"""

from __future__ import annotations

from collections.abc import Callable

from ..engine.runtime import Runtime
from ..errors import SagaTimeout
from .interrupts import stop_reporting
from .session import live_members, runtime_session

__all__ = ["resume_orphans"]


def resume_orphans(store_url: str, *,
                   on_note: Callable[[str], None] | None = None) -> dict[str, int]:
    """Adopt the sagas in flight on the store at ``store_url`` that no live process drives,
    drive each until it ends, and say how many there were and how they ended:
    ``{"resumed", "completed", "compensated", "failed"}``. Sagas of a live process are left to
    it, and so is everything while members drive the store (``on_note(text)`` says so). A
    first Ctrl-C or SIGTERM stops gracefully; its ``Stopped`` says how many were left."""
    counts = {"completed": 0, "compensated": 0, "failed": 0}
    adopted: list[str] = []

    def left_in_flight() -> str:
        left = len(adopted) - sum(counts.values())
        return (f"interrupted: {left} of {len(adopted)} resumed sagas were left in flight; "
                "'saga resume' again finishes them")

    with stop_reporting(left_in_flight), runtime_session(store_url) as runtime:
        if runtime.client:
            if on_note is not None:
                members = live_members(runtime.store)
                who = (f"member {members[0]} drives this store's sagas and finishes"
                       if len(members) == 1 else
                       f"{len(members)} members drive this store's sagas and finish")
                on_note(f"{who} those in flight, a dead member's too; 'saga members' shows "
                        "who drives what")
            return {"resumed": 0, **counts}
        adopted = runtime.recover()
        left = []
        for saga_id in adopted:
            status = _wait(runtime, saga_id)
            if status is None:
                left.append(saga_id)
            else:
                counts[status] = counts.get(status, 0) + 1
    if left and on_note is not None:
        what = "1 saga was" if len(left) == 1 else f"{len(left)} sagas were"
        on_note(f"{what} left in flight: their flows' services do not import here (a member "
                "that runs them finishes them; 'saga members' lists them)")
    return {"resumed": len(adopted) - len(left), **counts}


def _wait(runtime: Runtime, saga_id: str) -> str | None:
    """How the saga ended; ``None`` if this member leaves it to another that can run it."""
    membership = runtime.membership
    if membership is None:
        return runtime.wait(saga_id).status
    while True:
        try:
            return runtime.wait(saga_id, timeout=1.0).status
        except SagaTimeout:
            if membership.is_undriven(saga_id):
                return None
