"""``saga resume``: finish every in-flight saga whose owner process is gone."""

from __future__ import annotations

from .interrupts import stop_reporting
from .session import runtime_session

__all__ = ["resume_orphans"]


def resume_orphans(store_url: str) -> dict[str, int]:
    """Adopt the sagas in flight on the store at ``store_url`` that no live process drives,
    drive each until it ends, and say how many there were and how they ended:
    ``{"resumed", "completed", "compensated", "failed"}``. Sagas of a live process are left to
    it. A first Ctrl-C or SIGTERM stops gracefully; its ``Stopped`` says how many were left."""
    counts = {"completed": 0, "compensated": 0, "failed": 0}
    adopted: list[str] = []

    def left_in_flight() -> str:
        left = len(adopted) - sum(counts.values())
        return (f"interrupted: {left} of {len(adopted)} resumed sagas were left in flight; "
                "'saga resume' again finishes them")

    with stop_reporting(left_in_flight), runtime_session(store_url) as runtime:
        adopted = runtime.recover()
        for saga_id in adopted:
            status = runtime.wait(saga_id).status
            counts[status] = counts.get(status, 0) + 1
    return {"resumed": len(adopted), **counts}
