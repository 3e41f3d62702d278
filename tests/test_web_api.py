"""The web console's JSON API (``saga ui``), served on a real socket (:func:`start_ui`, as
``saga ui`` serves it) over a SQLite store filled by running sagas: completed, compensated and
failed ones, one in flight blocked in a handler whose runtime is alive, and one whose runtime
is gone (``tests/browser/console_data.py``).

The shapes are the CLI's ``--json`` ones where the CLI has the command; cancel and retry are
written to the store for the saga's owner, never driven by the console."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Faults
from sagas import Runtime, commands, parse_flow
from sagas.events import Event
from sagas.stores import SagaHeader, SagaRecord

if not os.environ.get("CI"):
    pytest.importorskip("starlette", reason="the web console needs the web extra")
    pytest.importorskip("uvicorn", reason="the web console needs the web extra")

from sagas.commands.ui import start_ui
from sagas.web.diagram import saga_diagram
from tests.browser.console_data import (
    DEMO,
    ENDS,
    HELD,
    ORPHAN,
    Client,
    ConsoleStore,
    filled_store,
    wait_until,
)

pytestmark = pytest.mark.slow  # a real server (redis-server or the console's) each

ROOT = Path(__file__).resolve().parent.parent
LIST_KEYS = {"saga_id", "flow", "version", "status", "started_at", "updated_at"}


@contextlib.contextmanager
def serving(url: str, **options: Any) -> Iterator[Client]:
    console = start_ui(url, "127.0.0.1:0", **options)
    try:
        yield Client(console.url, options.get("token"))
    finally:
        console.stop()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStore]:
    with filled_store(tmp_path_factory.mktemp("web")) as console:
        yield console


@pytest.fixture(scope="module")
def api(filled: ConsoleStore) -> Iterator[Client]:
    with serving(filled.url) as client:
        yield client


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[ConsoleStore, Client]]:
    """A store of one's own, for the tests that change it."""
    with filled_store(tmp_path) as console, serving(console.url) as client:
        yield console, client


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["saga_id"] for row in response.json()]


# -- reading ----------------------------------------------------------------------------------
def test_the_list_is_saga_list_json_newest_first_with_each_sagas_reason(filled, api):
    response = api.get("/api/sagas")
    rows = response.json()
    cli = commands.list_sagas(filled.url)
    assert [r["saga_id"] for r in rows] == [r["saga_id"] for r in cli]
    for row, listed in zip(rows, cli, strict=True):
        assert set(row) == LIST_KEYS | {"reason"}
        assert {k: row[k] for k in LIST_KEYS} == listed
    assert {r["saga_id"]: (r["status"], r["reason"]) for r in rows} == {
        **ENDS, HELD: ("running", None), ORPHAN: ("running", None)}
    assert response.headers["x-more"] == "0"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("query", "expected"), [
    ("status=compensated", {"order-out-of-stock", "demo-rejected"}),
    ("status=running,compensating", {HELD, ORPHAN}),
    ("status=failed&reason=pivot_unknown", {"demo-pivot-unknown"}),
    ("reason=compensation_failed", {"demo-compensation-failed"}),
    ("flow=order_inventory", {"order-ok-1", "order-ok-2", "order-out-of-stock"}),
    ("flow=order_inventory&status=completed", {"order-ok-1", "order-ok-2"}),
    ("prefix=demo-", {"demo-ok", "demo-rejected", "demo-pivot-unknown",
                      "demo-compensation-failed", HELD, ORPHAN}),
    ("prefix=order-ok&status=completed", {"order-ok-1", "order-ok-2"}),
    ("flow=nope", set()),
])
def test_the_list_filters(api, query, expected):
    assert set(ids(api.get(f"/api/sagas?{query}"))) == expected


def test_the_list_filters_by_start_time_in_unix_seconds_or_iso_8601(filled, api):
    headers = {h.saga_id: h for h in filled.store.list()}
    pivot = headers["demo-pivot-unknown"].started_at
    since = set(ids(api.get(f"/api/sagas?since={pivot}")))
    assert since == {s for s, h in headers.items() if h.started_at >= pivot}
    until = set(ids(api.get(f"/api/sagas?until={pivot}")))
    assert until == set(headers) - since
    second = int(pivot)  # ISO 8601 to the second, in UTC, with or without its offset
    iso = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).isoformat()
    expected = {s for s, h in headers.items() if h.started_at >= second}
    assert set(ids(api.get("/api/sagas", params={"since": iso}))) == expected
    assert set(ids(api.get("/api/sagas", params={"since": iso[:-6]}))) == expected


def test_the_list_is_paged(api):
    everything = ids(api.get("/api/sagas"))
    pages, offset = [], 0
    while True:
        response = api.get(f"/api/sagas?limit=4&offset={offset}")
        pages.extend(ids(response))
        if response.headers["x-more"] != "1":
            break
        offset += 4
    assert pages == everything and offset == 8
    filtered = api.get("/api/sagas?prefix=demo-&limit=2&offset=2")
    assert ids(filtered) == [s for s in everything if s.startswith("demo-")][2:4]
    assert filtered.headers["x-more"] == "1"


@pytest.mark.parametrize(("query", "message"), [
    ("status=bogus", "unknown status 'bogus'"),
    ("since=yesterday", "since must be a Unix time or an ISO 8601 date"),
    ("limit=-1", "limit must be a whole number"),
    ("reason=Not%20A%20Reason", "unknown reason"),
])
def test_a_malformed_filter_is_400_with_one_line(api, query, message):
    response = api.get(f"/api/sagas?{query}")
    assert response.status_code == 400
    assert message in response.json()["error"] and "\n" not in response.json()["error"]


def test_one_saga_is_saga_show_json(filled, api):
    for saga_id in [*ENDS, HELD]:
        response = api.get(f"/api/sagas/{saga_id}")
        assert response.status_code == 200
        assert response.json() == commands.show_saga(filled.url, saga_id).to_json()
    errors = [e["data"]["error"] for e in api.get("/api/sagas/demo-pivot-unknown").json()
              ["history"] if e["type"] == "step.failed"]
    assert errors == ["InjectedFault: carrier API: 503 Service Unavailable\n  retry later"] * 2
    missing = api.get("/api/sagas/no-such-saga")
    assert missing.status_code == 404 and "no-such-saga" in missing.json()["error"]


def node(graph: dict[str, Any], state: str) -> dict[str, Any]:
    return next(n for n in graph["nodes"] if n["id"] == state)


def taken(graph: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["source"], e["dest"]) for e in graph["edges"] if e["taken"]}


def test_the_diagram_marks_the_step_a_saga_failed_at(api):
    graph = api.get("/api/sagas/demo-pivot-unknown/graph").json()
    assert graph["mermaid"] == commands.draw_flow(DEMO, "mermaid")
    assert graph["marked"] == {"states": ["step:ship"], "why": "failed"}
    assert node(graph, "step:ship")["status"] == "failed" and node(graph, "step:ship")["marked"]
    assert node(graph, "step:ship")["label"] == "ship (pivot): shipping.ship"
    assert node(graph, "step:reserve")["status"] == "succeeded"
    assert node(graph, "compensation:reserve")["status"] is None  # nothing undone: pivot_unknown
    assert graph["route"] == ["step:reserve", "step:pass_gate", "step:ship", "failed"]
    assert taken(graph) == {("step:reserve", "step:pass_gate"), ("step:pass_gate", "step:ship"),
                            ("step:ship", "failed")}
    parked = api.get("/api/sagas/demo-compensation-failed/graph").json()
    assert parked["marked"] == {"states": ["compensation:reserve"], "why": "failed"}
    assert ("step:ship", "compensation:reserve") in taken(parked)


def test_the_diagram_marks_the_step_a_saga_is_on_and_where_it_went(api):
    held = api.get(f"/api/sagas/{HELD}/graph").json()
    assert held["marked"] == {"states": ["step:pass_gate"], "why": "current"}
    assert node(held, "step:pass_gate")["status"] == "active"
    assert held["driven"] is True
    assert api.get(f"/api/sagas/{ORPHAN}/graph").json()["driven"] is False
    compensated = api.get("/api/sagas/demo-rejected/graph").json()
    assert compensated["marked"] == {"states": ["step:pass_gate"], "why": "failed"}
    assert node(compensated, "compensation:reserve")["status"] == "succeeded"
    assert compensated["route"][-2:] == ["compensation:reserve", "compensated"]
    done = api.get("/api/sagas/order-ok-1/graph").json()
    assert done["marked"] == {"states": ["completed"], "why": "ended"}
    assert all(n["status"] in ("succeeded", "visited") for n in done["nodes"]
               if not n["id"].startswith("compensation:") and n["id"] not in
               ("compensated", "failed"))
    columns = {n["id"]: n["column"] for n in done["nodes"]}
    assert columns["step:reserve_inventory"] < columns["step:charge_payment"] < \
        columns["step:create_shipment"] < columns["completed"]
    assert api.get("/api/sagas/nope/graph").status_code == 404


def test_the_diagram_of_parallel_branches_marks_each_branchs_end():
    faults = Faults().add("book_car", kind="reject")
    with Runtime("memory://", faults=faults) as runtime:
        runtime.run(ROOT / "flows" / "trip_booking.yaml",
                    {"trip_id": "t", "traveller": "x", "flight": "LH-1", "hotel": "h",
                     "car": "suv", "nights": 2}, "trip", timeout=30)
        graph = saga_diagram(runtime.store.load("trip"))
    assert graph["marked"] == {"states": ["step:book_car"], "why": "failed"}
    assert node(graph, "step:book_car")["status"] == "failed"
    assert node(graph, "branch:book_travel.car:compensated")["status"] == "visited"
    assert node(graph, "compensation:book_flight")["status"] == "succeeded"
    assert node(graph, "step:confirm_itinerary")["status"] is None
    assert {c["track"] for c in graph["choices"] if c["ended"] == "compensated"} == {
        "book_travel.flight", "book_travel.hotel", "book_travel.car"}
    starts = [e for e in graph["edges"] if e["fork"] and e["label"].startswith("starts ")]
    assert len(starts) == 3 and all(e["taken"] for e in starts)
    assert ("step:book_car", "branch:book_travel.car:compensated") in taken(graph)


def test_the_diagram_shows_the_branch_a_choice_took():
    text = (ROOT / "tests" / "flows" / "planted" / "choose_route.yaml").read_text()
    flow = parse_flow(text)
    events = (Event(1, "saga.started", None, None, 1.0, "c/1", None, {"input": {}}),
              Event(2, "choice.made", "by_size", None, 2.0, "c/2", "c/1", {"branch": "bulk"}),
              Event(3, "step.started", "hold_bulk", 1, 3.0, "c/3", "c/2", {}))
    header = SagaHeader("c", flow.name, flow.version, flow.definition, {}, "running", None,
                        1.0, 3.0, 3)
    chosen = saga_diagram(SagaRecord(header, text, events))
    assert ("choice:by_size", "step:hold_bulk") in taken(chosen)
    assert ("choice:by_size", "step:hold_shop") not in taken(chosen)
    assert chosen["marked"] == {"states": ["step:hold_bulk"], "why": "current"}
    assert chosen["route"] == ["choice:by_size", "step:hold_bulk"]


def test_a_definition_that_no_longer_parses_gives_its_error_not_a_500(filled):
    record = filled.store.load("demo-ok")
    broken = SagaRecord(dataclasses.replace(record.header, definition="0" * 64),
                        "saga: [not a flow", record.events)
    graph = saga_diagram(broken)
    assert graph["error"] and graph["nodes"] == [] and "\n" not in graph["error"]


def test_flows_are_the_stored_definitions_with_their_sha256(filled, api):
    found = api.get("/api/flows").json()
    by_name = {f["flow"]: f for f in found}
    assert set(by_name) == {"order_inventory", "console_demo"}
    demo = by_name["console_demo"]
    assert demo["definition"] == filled.store.header("demo-ok").definition
    assert demo["version"] == 1 and demo["sagas"] == 6
    assert demo["statuses"] == {"completed": 1, "compensated": 1, "failed": 2, "running": 2}
    text = api.get(f"/api/definitions/{demo['definition']}").json()["text"]
    assert text == Path(DEMO).read_text()
    assert api.get(f"/api/definitions/{'f' * 64}").status_code == 404
    assert api.get("/api/definitions/..%2F..%2Fetc").status_code == 404


def test_stuck_is_saga_audits_orphaned_and_stuck_and_the_sagas_that_do_not_move(api):
    stuck = api.get("/api/stuck?after=0").json()
    assert stuck["after"] == 0
    assert [(v["saga_id"], v["rule"]) for v in stuck["violations"]] == [(ORPHAN, "orphaned")]
    assert set(stuck["violations"][0]) == {"saga_id", "seq", "rule", "message"}
    assert {s["saga_id"]: s["driven"] for s in stuck["stalled"]} == {ORPHAN: False, HELD: True}
    later = api.get("/api/stuck?after=3600").json()
    assert later["stalled"] == [] and [v["rule"] for v in later["violations"]] == ["orphaned"]
    assert api.get("/api/stuck?after=soon").status_code == 400


def test_members_is_saga_members_json(filled, api):
    assert api.get("/api/members").json() == commands.store_members(filled.url).to_json()


def test_info_says_which_store_and_that_dead_letters_need_a_broker(filled, api):
    info = api.get("/api/info").json()
    assert info["store"] == filled.store.url and info["broker"] is None
    assert info["dead_letters"] is False
    missing = api.get("/api/dead-letters")
    assert missing.status_code == 404 and "--broker" in missing.json()["error"]


def test_the_page_and_its_assets_are_served_from_the_package(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/console.js" defer></script>' in page.text
    assert "<script>" not in page.text and "//" not in page.text.split("<body")[0].replace(
        "http://", "")  # no inline script, nothing from elsewhere
    for asset, kind in (("console.js", "javascript"), ("console.css", "text/css")):
        response = api.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    script = api.get("/static/console.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "eval(" not in script and "document.write" not in script


# -- acting -----------------------------------------------------------------------------------
def test_cancel_is_written_for_the_live_owner_which_ends_the_saga(fresh):
    console, client = fresh
    response = client.post(f"/api/sagas/{HELD}/cancel")
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["recorded"] is True and done["driven"] is True
    assert isinstance(done["request_id"], int) and "acts on it" in done["message"]
    wait_until(lambda: console.store.header(HELD).status == "compensated",
               what="the held saga compensated")
    history = client.get(f"/api/sagas/{HELD}").json()["history"]
    cancelled = [e for e in history if e["type"] == "saga.cancelled"]
    assert len(cancelled) == 1
    assert cancelled[0]["data"]["requested_by"].startswith("saga-ui.")
    assert [e["type"] for e in history][-2:] == ["compensation.succeeded", "saga.compensated"]
    again = client.post(f"/api/sagas/{HELD}/cancel").json()
    assert again["recorded"] is False and "nothing to cancel" in again["message"]


def test_with_no_owner_the_cancel_is_recorded_and_the_answer_says_run_saga_resume(fresh):
    console, client = fresh
    done = client.post(f"/api/sagas/{ORPHAN}/cancel").json()
    assert done["recorded"] is True and done["driven"] is False
    assert done["message"].startswith("no owner") and "saga resume" in done["message"]
    assert [r.kind for r in console.store.requests_for(ORPHAN)] == ["cancel"]
    assert console.store.header(ORPHAN).status == "running"  # the console drives nothing


def test_retry_is_written_only_for_a_failed_saga(fresh):
    console, client = fresh
    done = client.post("/api/sagas/demo-pivot-unknown/retry").json()
    assert done["recorded"] is True and done["driven"] is True  # its runtime is alive
    wait_until(lambda: any(e.type == "saga.retried" for e in
                           console.store.load("demo-pivot-unknown").events),
               what="the retry acted on")
    refused = client.post("/api/sagas/demo-ok/retry").json()
    assert refused["recorded"] is False and "only a failed saga" in refused["message"]
    assert client.post("/api/sagas/nope/retry").status_code == 404
    assert client.post("/api/sagas/demo-ok/delete").status_code == 400


def test_bulk_actions_preview_then_act_on_the_sagas_confirmed(fresh):
    console, client = fresh
    preview = client.post("/api/sagas/cancel",
                   {"filter": {"prefix": "demo-"}, "dry_run": True}).json()
    assert preview["dry_run"] is True
    assert {s["saga_id"] for s in preview["sagas"]} == {HELD, ORPHAN}  # only those in flight
    assert console.store.requests_for(HELD) == []
    nothing = client.post("/api/sagas/cancel",
                   {"filter": {"status": "completed"}, "dry_run": True}).json()
    assert nothing["matched"] == 0 and nothing["sagas"] == []
    retry = client.post("/api/sagas/retry",
                 {"filter": {"reason": "pivot_unknown"}, "dry_run": True}).json()
    assert [s["saga_id"] for s in retry["sagas"]] == ["demo-pivot-unknown"]
    done = client.post("/api/sagas/cancel",
                {"saga_ids": [s["saga_id"] for s in preview["sagas"]]}).json()
    assert done["recorded"] == 2 and done["no_owner"] == 1
    assert {r["saga_id"]: r["driven"] for r in done["results"]} == {HELD: True, ORPHAN: False}
    wait_until(lambda: console.store.header(HELD).status == "compensated",
               what="the held saga compensated")
    assert client.post("/api/sagas/cancel", {}).status_code == 400
    assert client.post("/api/sagas/cancel", {"saga_ids": "x"}).status_code == 400
    assert client.post("/api/sagas/cancel",
                {"filter": {"status": "bogus"}}).status_code == 400


def test_saga_resume_acts_on_a_cancel_recorded_while_no_owner_was_alive(fresh, monkeypatch):
    console, client = fresh
    from tests.browser import console_services

    # saga resume's own gate holds the re-sent attempt for 5 s: the cancel comes first
    monkeypatch.setattr(console_services.Gate, "LIMIT", 5.0)
    assert client.post(f"/api/sagas/{ORPHAN}/cancel").json()["driven"] is False
    summary = commands.resume_orphans(console.url)
    assert summary == {"resumed": 1, "completed": 0, "compensated": 1, "failed": 0}
    assert console.store.header(ORPHAN).status == "compensated"
    assert console.store.requests_for(ORPHAN) == []


def test_the_pages_assets_are_package_data():
    """Every file of ``sagas/web/static`` is shipped in the package (pyproject's package
    data), so an installed console works offline."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sagas.web"]
    static = ROOT / "sagas" / "web" / "static"
    files = sorted(p.relative_to(static.parent).as_posix() for p in static.rglob("*")
                   if p.is_file())
    assert files == ["static/console.css", "static/console.js", "static/index.html"]
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files)


def test_a_console_that_ends_by_itself_says_so_and_one_that_is_stopped_does_not(
        filled: ConsoleStore) -> None:
    import threading

    ended: list[BaseException | None] = []
    told = threading.Event()

    def on_ended(error: BaseException | None) -> None:
        ended.append(error)
        told.set()

    stopped = start_ui(filled.url, "127.0.0.1:0")
    stopped.on_ended = on_ended
    stopped.stop()
    assert not stopped.alive and ended == []  # asked to stop: nothing to say

    console = start_ui(filled.url, "127.0.0.1:0")
    console.on_ended = on_ended
    try:
        console._server.should_exit = True  # the server ending on its own, as after a crash
        assert told.wait(10), "on_ended was not called"
        assert ended == [None] and not console.alive
    finally:
        console.stop()
