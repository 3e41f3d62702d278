"""Flows started by events: ``trigger``, ``Runtime.add_trigger`` and ``saga serve``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli
from sagas import Runtime
from sagas.errors import FlowErrors, SagactorError, UnknownSaga
from sagas.language.loader import load_flow, parse_flow
from sagas.stores import open_store
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "flows" / "order_inventory.yaml"
TRADE = ROOT / "flows" / "trip_booking.yaml"  # a flow without a trigger
WAIT = 20.0


def order(order_id: str, qty: int = 1) -> dict[str, Any]:
    return {"order_id": order_id, "sku": "widget", "qty": qty, "amount": 2500}


def statuses(store: Any) -> dict[str, str]:
    return {h.saga_id: h.status for h in store.list()}


# -- the language ------------------------------------------------------------------------------
def test_the_shipped_order_flow_declares_its_trigger():
    trigger = load_flow(ORDER).trigger
    assert trigger is not None
    assert (trigger.event, trigger.id) == ("OrderPlaced", "$.input.order_id")


BASE = "saga: t\nservices: {s: a.b:C}\nsteps: [{name: a, service: s, action: x, effects: none}]\n"


@pytest.mark.parametrize(("trigger", "line", "fragment"), [
    ("trigger: {event: 9bad, id: $.input.x}", 4, "trigger.event must be an event type"),
    ("trigger: {event: Placed, id: $.steps.a.x}", 4, "trigger.id must be a path into"),
    ("trigger: {event: Placed, id: $.input}", 4, "trigger.id must be a path into"),
    ("trigger: {event: Placed, id: order}", 4, "malformed path"),
    ("trigger: {event: Placed}", 4, "missing required key 'id'"),
    ("trigger: {event: Placed, id: $.input.x, when: now}", 4, "unknown key 'when'"),
    ("trigger: OrderPlaced", 4, "trigger must be a mapping"),
])
def test_a_bad_trigger_is_an_error_at_its_line(trigger: str, line: int, fragment: str):
    with pytest.raises(FlowErrors) as info:
        parse_flow(BASE + trigger + "\n", source="t.yaml")
    errors = [e for e in info.value.errors if fragment in e.message]
    assert errors and errors[0].line == line, [e.format() for e in info.value.errors]


# -- the Python API ----------------------------------------------------------------------------
def test_each_event_starts_one_saga_with_its_data_as_input():
    with Runtime() as runtime:
        started: list[str] = []
        runtime.add_trigger(ORDER, on_start=started.append)
        runtime.send("OrderPlaced", "o-1", order("o-1"), event_id="shop:1")
        runtime.send("OrderPlaced", "o-2", order("o-2"), event_id="shop:2")
        runtime.send("PaymentConfirmed", "o-1", {})  # another type: starts nothing
        eventually(lambda: len(started) == 2, WAIT)
        first = runtime.wait("order_inventory.o-1", timeout=10)
        second = runtime.wait("order_inventory.o-2", timeout=10)
    assert started == ["order_inventory.o-1", "order_inventory.o-2"]
    assert first.status == second.status == "completed"
    assert first.context["input"] == order("o-1")


def test_the_same_event_or_id_starts_one_saga():
    with Runtime() as runtime:
        started: list[str] = []
        runtime.add_trigger(ORDER, on_start=started.append)
        runtime.send("OrderPlaced", "o-1", order("o-1"), event_id="shop:1")
        runtime.send("OrderPlaced", "o-1", order("o-1"), event_id="shop:1")  # ignored: same id
        runtime.send("OrderPlaced", "o-1", order("o-1"), event_id="shop:1-again")  # same saga
        eventually(lambda: len(started) == 2, WAIT)
        runtime.wait("order_inventory.o-1", timeout=10)
        sagas = [h.saga_id for h in runtime.store.list()]
    assert sagas == ["order_inventory.o-1"]
    assert started == ["order_inventory.o-1", "order_inventory.o-1"]


def test_events_that_cannot_start_the_flow_are_logged_and_passed_over(caplog):
    caplog.set_level(logging.WARNING, logger="sagas.engine.triggers")
    with Runtime() as runtime:
        started: list[str] = []
        runtime.add_trigger(ORDER, on_start=started.append)
        runtime.send("OrderPlaced", "x", {"order_id": "o-3", "qty": 1}, event_id="bad-input")
        runtime.send("OrderPlaced", "x", {"sku": "widget"}, event_id="no-id")
        runtime.send("OrderPlaced", "x", order("o 4"), event_id="bad-id")
        runtime.send("OrderPlaced", "o-1", order("o-1"), event_id="good")
        runtime.send("OrderPlaced", "o-1", order("o-1", qty=2), event_id="taken-id")
        runtime.send("OrderPlaced", "o-5", order("o-5"), event_id="after")
        eventually(lambda: len(started) == 2, WAIT)
        runtime.wait("order_inventory.o-5", timeout=10)
        # the trigger saves its cursor once it has acted on the events up to it: at the last
        # event, none of them can start a saga any more
        last = runtime.store.events_after(0)[-1].position
        eventually(lambda: runtime.store.cursor("trigger:order_inventory") == last, WAIT)
        sagas = sorted(h.saga_id for h in runtime.store.list())
    assert sagas == ["order_inventory.o-1", "order_inventory.o-5"]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for event_id in ("bad-input", "no-id", "bad-id", "taken-id"):
        assert f"event {event_id} (OrderPlaced) starts no saga" in warned


def test_a_flow_without_a_trigger_is_refused():
    with Runtime() as runtime, pytest.raises(SagactorError, match="has no trigger"):
        runtime.add_trigger(TRADE)


def test_events_sent_while_nothing_served_the_flow_start_later_once(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with Runtime(url) as sender:  # no trigger here: the events wait in the store
        sender.send("OrderPlaced", "o-1", order("o-1"), event_id="e1")
        sender.send("OrderPlaced", "o-2", order("o-2"), event_id="e2")
    with Runtime(url) as server:
        started: list[str] = []
        server.add_trigger(ORDER, on_start=started.append)
        eventually(lambda: len(started) == 2, WAIT)
        for saga_id in started:
            assert server.wait(saga_id, timeout=10).status == "completed"
        position = server.store.events_after(0)[-1].position
        eventually(lambda: server.store.cursor("trigger:order_inventory") == position, WAIT)
    with Runtime(url) as again:  # the cursor is durable: nothing is started twice
        started_again: list[str] = []
        again.add_trigger(ORDER, on_start=started_again.append)
        again.send("OrderPlaced", "o-3", order("o-3"), event_id="e3")
        eventually(lambda: started_again == ["order_inventory.o-3"], WAIT)
        again.wait("order_inventory.o-3", timeout=10)
        assert sorted(statuses(again.store)) == ["order_inventory.o-1", "order_inventory.o-2",
                                                 "order_inventory.o-3"]


def test_a_subscriber_cannot_move_a_triggers_cursor():
    """A trigger's cursor is ``trigger:<flow>`` in the store; the bus refuses a subscriber of
    that name, so no subscriber moves it and the trigger goes on starting a saga per event."""
    def exists(runtime: Runtime, saga_id: str) -> bool:
        try:
            runtime.store.header(saga_id)
        except UnknownSaga:
            return False
        return True

    with Runtime(poll_interval=0.02) as runtime:
        with pytest.raises(ValueError, match="reserved for flow triggers"):
            runtime.subscribe("trigger:order_inventory", ["*"], lambda delivery: None)
        runtime.add_trigger(ORDER)
        runtime.send("OrderPlaced", "o-1", order("o-1"))
        eventually(lambda: exists(runtime, "order_inventory.o-1"), 5)
        runtime.wait("order_inventory.o-1", timeout=5)
        assert runtime.bus.wait_caught_up(5)
        runtime.send("OrderPlaced", "o-2", order("o-2"))
        eventually(lambda: exists(runtime, "order_inventory.o-2"), 5)


# -- the CLI -----------------------------------------------------------------------------------
def _saga(*args: str, **popen: Any) -> subprocess.Popen[str]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import cli; cli.main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **popen)


def test_saga_serve_starts_a_saga_for_an_event_sent_from_another_shell(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    early = _saga("send", "OrderPlaced", "--key", "o-1", "--id", "shop:1", "--data",
                  json.dumps(order("o-1")), "--store", url)
    assert early.wait(30) == 0, early.stderr.read()  # sent before anything serves the flow
    server = _saga("serve", str(ORDER), "--store", url, "--for", "60")
    try:
        sent = _saga("send", "OrderPlaced", "--key", "o-2", "--id", "shop:2", "--data",
                     json.dumps(order("o-2")), "--store", url)
        assert sent.wait(30) == 0, sent.stderr.read()
        store = open_store(url)
        try:
            eventually(lambda: statuses(store) == {"order_inventory.o-1": "completed",
                                                   "order_inventory.o-2": "completed"}, 30)
        finally:
            store.close()
    finally:
        server.terminate()  # SIGTERM: a clean stop
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out.splitlines() == ["started order_inventory.o-1", "started order_inventory.o-2"]
    assert "serving order_inventory: a saga per OrderPlaced event" in err


def test_saga_serve_refuses_a_flow_without_a_trigger(tmp_path: Path):
    result = CliRunner().invoke(cli.main, ["serve", str(TRADE), "--store",
                                           f"sqlite:///{tmp_path / 's.db'}", "--for", "0"])
    assert result.exit_code == 2
    assert "has no trigger to serve" in result.output
    assert "Traceback" not in result.output
