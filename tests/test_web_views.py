"""The console's filters (``sagas.web.views.SagaFilter``) leave to the store what its ``list``
can do — one status and a flow, a list per status when several are asked for — and filter the
rest (reason, time, prefix) themselves; bulk actions read only the sagas they may act on. No
server: the views are plain functions of a store."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sagas.web.views import SagaFilter, act_on_many, saga_rows

STATUSES = ["completed", "running", "failed", "compensating", "compensated", "running"]


class ListingStore:
    """A store's ``list`` over plain headers (newest first, as the port says), recording
    each call's arguments."""

    def __init__(self, count: int) -> None:
        self.headers = [SimpleNamespace(
            saga_id=f"s-{n:03d}", flow="a" if n % 2 else "b", status=STATUSES[n % 6],
            reason="pivot_unknown" if STATUSES[n % 6] == "failed" else None,
            started_at=float(n // 2), updated_at=float(n), version=1, definition="x")
            for n in range(count)]
        self.calls: list[dict[str, Any]] = []

    def list(self, *, status: str | None = None, flow: str | None = None,
             limit: int | None = None) -> list[Any]:
        self.calls.append({"status": status, "flow": flow, "limit": limit})
        found = sorted((h for h in self.headers if (status is None or h.status == status)
                        and (flow is None or h.flow == flow)),
                       key=lambda h: (h.started_at, h.saga_id), reverse=True)
        return found if limit is None else found[:limit]


def _expected(store: ListingStore, chosen: SagaFilter) -> list[str]:
    return [h.saga_id for h in store.list() if chosen.matches(h)]


def test_several_statuses_are_a_list_each_merged_newest_first():
    store = ListingStore(60)
    chosen = SagaFilter(statuses=("running", "compensating"), flow="a")
    rows, more = saga_rows(store, chosen, limit=5, offset=2)
    assert [r["saga_id"] for r in rows] == _expected(store, chosen)[2:7] and more
    assert store.calls[:2] == [{"status": "running", "flow": "a", "limit": 8},
                               {"status": "compensating", "flow": "a", "limit": 8}]


def test_what_the_store_cannot_filter_is_filtered_here_over_the_statuses_asked_for():
    store = ListingStore(60)
    chosen = SagaFilter(statuses=("failed", "running"), since=10.0, prefix="s-0")
    rows, more = saga_rows(store, chosen, limit=100)
    assert [r["saga_id"] for r in rows] == _expected(store, chosen) and not more
    assert rows and {c["status"] for c in store.calls[:2]} == {"failed", "running"}
    assert all(c["limit"] is None for c in store.calls[:2])


def test_a_bulk_cancel_preview_reads_only_the_sagas_in_flight():
    store = ListingStore(60)
    preview = act_on_many(store, "cancel", chosen=SagaFilter(flow="b"), dry_run=True)
    assert sorted(s["saga_id"] for s in preview["sagas"]) == sorted(
        h.saga_id for h in store.headers if h.flow == "b" and h.status in (
            "running", "compensating"))
    assert {c["status"] for c in store.calls} == {"running", "compensating"}
