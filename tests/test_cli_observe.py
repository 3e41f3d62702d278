"""What an operator watches from the CLI: `saga serve --metrics` scraped while it drives
sagas, and `saga --log-format json` lines (issue 18, points 2 and 3)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sagas.stores import open_store
from tests.support import SAGA_CODE, eventually, read_until

pytestmark = pytest.mark.slow  # saga serve in a process of its own

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "flows" / "order_inventory.yaml")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _send_orders(store_url: str, count: int) -> None:
    store = open_store(store_url)
    try:
        for n in range(count):
            store.send_event("OrderPlaced", f"o-{n}", {"order_id": f"o-{n}", "sku": "widget",
                                                       "qty": 1, "amount": 5}, sent_at=0.0)
    finally:
        store.close()


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_scrape_of_saga_serve_counts_the_sagas_it_drove(tmp_path):
    pytest.importorskip("prometheus_client", reason="the metrics extra")
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "serve", FLOW, "--store", store,
                              "--metrics", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert serve.stderr is not None
        read_until(serve.stderr, lambda line: "metrics on" in line, 30)
        _send_orders(store, 40)
        url = f"http://127.0.0.1:{port}/metrics"
        ended = "saga_sagas_ended_total[('flow', 'order_inventory'), ('status', 'completed')]"
        samples = eventually(lambda: (s := _scrape(url)).get(ended) == 40 and s, 30,
                             what=lambda: f"40 sagas ended in a scrape of {url}")
        assert samples["saga_sagas_started_total[('flow', 'order_inventory')]"] == 40
        assert not any("o-1" in key for key in samples)  # no saga id in any label
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    assert serve.returncode == 0


def test_json_logs_carry_each_saga_event(tmp_path):
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    serve = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "--log-format", "json", "serve",
                              FLOW, "--store", store], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert serve.stderr is not None
        read_until(serve.stderr, lambda line: "serving order_inventory" in line, 30)
        _send_orders(store, 1)
        lines = read_until(serve.stderr, lambda line: "saga.completed" in line, 30)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    events = [r for r in records if r.get("event")]
    assert events and {r["saga_id"] for r in events} == {"order_inventory.o-0"}
    assert events[-1]["event"] == "saga.completed" and events[0]["trace_id"]
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)


def test_saga_ui_serves_the_stores_sagas_as_json(tmp_path):
    pytest.importorskip("starlette", reason="the web extra")
    from tests.support import saga_cli

    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    order = json.dumps({"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 5})
    assert saga_cli("run", FLOW, "--input", order, "--store", store).returncode == 0
    refused = saga_cli("run", FLOW, "--input", order, "--store", store, "--fail",
                       "create_shipment")
    assert refused.returncode == 1
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "ui", "--store", store, "--http",
                           f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert ui.stderr is not None
        read_until(ui.stderr, lambda line: "saga ui on" in line, 30)
        answer = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/sagas?status=compensated", timeout=5)
        rows = json.loads(answer.read())
        assert [row["status"] for row in rows] == ["compensated"]
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
    assert ui.returncode == 0


def _serve_with_console(store: str, *options: str, env: dict[str, str] | None = None
                        ) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`saga serve FLOW --store STORE OPTIONS...`, once it serves: the process, the console's
    port and what it said on stderr until then."""
    serve = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "serve", FLOW, "--store", store,
                              *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env=env)
    assert serve.stderr is not None
    try:
        said = read_until(serve.stderr, lambda line: "serving order_inventory" in line, 30)
    except BaseException:
        serve.kill()
        serve.wait(30)
        raise
    (console,) = [line.split()[-1] for line in said if line.startswith("console on ")]
    return serve, console.rstrip("/").rpartition(":")[2], said


def _get(port: str, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=(
        {"Authorization": f"Bearer {token}"} if token else {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}


def test_saga_serve_http_serves_the_console_over_the_sagas_it_drives(tmp_path):
    pytest.importorskip("starlette", reason="the web extra")
    store = f"sqlite:///{tmp_path / 'sagas.db'}"  # created by serve itself
    serve, port, said = _serve_with_console(store, "--http", "127.0.0.1:0", env=_environ())
    try:
        assert said[0].startswith("console on http://localhost:")  # before any saga is driven
        _send_orders(store, 3)

        def completed() -> list[dict[str, object]] | None:
            rows = json.loads(_get(port, "/api/sagas?status=completed")[1])
            return rows if len(rows) == 3 else None

        done = eventually(completed, 30, what="the three sagas serve drove, in /api/sagas")
        assert sorted(row["saga_id"] for row in done) == [f"order_inventory.o-{n}"
                                                          for n in range(3)]
        status, body = _get(port, "/api/sagas/order_inventory.o-1")
        assert status == 200 and json.loads(body)["history"][-1]["type"] == "saga.completed"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    assert serve.returncode == 0
    with pytest.raises(OSError):  # the console stopped with it
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()


def test_saga_serve_http_off_loopback_needs_the_token_from_its_file(tmp_path):
    pytest.importorskip("starlette", reason="the web extra")
    token = "serve-console-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    serve, port, said = _serve_with_console(store, "--http", "0.0.0.0:0", "--token-file",
                                            str(tmp_path / "token"), env=_environ())
    try:
        assert token not in "".join(said)
        assert _get(port, "/api/sagas")[0] == 401
        assert _get(port, "/api/sagas", token) == (200, b"[]")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    assert serve.returncode == 0
