"""``saga list`` and ``saga show``: what a store holds, read without creating a store."""

from __future__ import annotations

from typing import Any

from ..engine.results import SagaResult, load_result
from .session import store_session

__all__ = ["list_sagas", "show_saga"]


def list_sagas(store_url: str, *, status: str | None = None, flow: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """The sagas in the store, newest first, each as ``{"saga_id", "flow", "version",
    "status", "started_at", "updated_at"}``; only those with ``status`` or of ``flow`` if
    given, at most ``limit``."""
    with store_session(store_url, create=False) as store:
        headers = store.list(status=status, flow=flow, limit=limit)
    return [{"saga_id": h.saga_id, "flow": h.flow, "version": h.version, "status": h.status,
             "started_at": h.started_at, "updated_at": h.updated_at} for h in headers]


def show_saga(store_url: str, saga_id: str) -> SagaResult:
    """One saga with its full history; ``UnknownSaga`` if there is none."""
    with store_session(store_url, create=False) as store:
        return load_result(store, saga_id)
