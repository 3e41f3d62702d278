"""The web console in a real browser: Playwright drives the system's Chromium (Debian's
``chromium``, headless; no browser download) against ``saga ui`` serving a SQLite store filled
by running sagas (``console_data.py``): it loads the list, filters it, opens a saga and reads
its timeline and the step marked on its diagram, cancels the saga in flight (the confirm dialog
accepted) and sees it end, since the runtime that drives it runs in this process and acts on
the request; and what it shows of an orphan, a bulk retry, the flows and the stuck sagas.

Screenshots go to ``$SAGA_TEST_ARTIFACTS`` (default ``build/test-artifacts/web-console``,
ignored by git). Under ``CI=true`` a missing Playwright or Chromium fails the test; elsewhere
it is skipped with one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas.commands.ui import start_ui
from tests.browser.console_data import (
    ENDS,
    HELD,
    ORPHAN,
    XSS,
    ConsoleStore,
    filled_store,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SAGA_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000  # the page polls every 2 s


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _playwright_or_skip() -> Any:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        problem = "playwright is not installed (pip install 'sagactor[browser-tests]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SAGA_CHROMIUM)"
    if problem is not None:
        if _in_ci():
            pytest.fail(f"the browser test cannot run under CI: {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    base = Path(os.environ.get("SAGA_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    where = base / "web-console" / request.node.name
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser_page(artifacts: Path) -> Iterator[Any]:
    sync_playwright = _playwright_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.problems = []
        page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
        page.on("console", lambda message: page.problems.append(f"console: {message.text}")
                if message.type == "error" else None)
        try:
            yield page
        except BaseException:
            page.screenshot(path=str(artifacts / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[ConsoleStore, str]]:
    with filled_store(tmp_path) as filled:
        served = start_ui(filled.url, "127.0.0.1:0")
        try:
            yield filled, served.url
        finally:
            served.stop()


ROWS_OF = ("() => { const rows = [...document.querySelectorAll('#sagas tbody tr')]; "
           "return rows.length === 2 && rows.every(r => %s.includes(r.dataset.status)); }")
"""A page listing two sagas, every one with a status of the list given (JavaScript)."""


def listed(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#sagas tbody tr", "rows => Object.fromEntries(rows.map(r => "
        "[r.dataset.sagaId, r.dataset.status]))")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_the_console_in_a_browser(console, browser_page, artifacts):
    filled, url = console
    page = browser_page
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)

    # the list, newest first, then filtered by status
    page.goto(url)
    page.wait_for_selector(f'#sagas tbody tr[data-saga-id="{ORPHAN}"]')
    assert listed(page) == {**{s: status for s, (status, _) in ENDS.items()},
                            HELD: "running", ORPHAN: "running"}
    assert page.text_content("#store-url") == filled.store.url
    shot(page, artifacts, "01-list")
    page.select_option("#filter-status", "failed")
    page.wait_for_function("() => [...document.querySelectorAll('#sagas tbody tr')]"
                           ".every(r => r.dataset.status === 'failed')")
    assert listed(page) == {"demo-pivot-unknown": "failed", "demo-compensation-failed": "failed"}
    assert "status=failed" in page.evaluate("location.hash")
    shot(page, artifacts, "02-failed")

    # one saga: the timeline, errors in full, the step it failed at marked
    page.click('#sagas a[href="#/saga/demo-pivot-unknown"]')
    history = filled.store.load("demo-pivot-unknown").events
    page.wait_for_function(f"() => document.querySelectorAll('#timeline tbody tr').length"
                           f" === {len(history)}")
    assert page.get_attribute("#saga-status", "data-status") == "failed"
    assert page.eval_on_selector_all("#timeline tbody tr", "rows => rows.map(r => "
                                     "r.dataset.type)") == [e.type for e in history]
    errors = page.eval_on_selector_all("#timeline pre.error", "p => p.map(e => e.textContent)")
    assert errors == ["InjectedFault: carrier API: 503 Service Unavailable\n  retry later"] * 2
    marked = page.eval_on_selector_all("#graph g.node.marked", "g => g.map(n => "
                                       "[n.dataset.state, n.dataset.status])")
    assert marked == [["step:ship", "failed"]]
    assert page.eval_on_selector_all("#route li", "l => l.map(i => i.dataset.state)") == [
        "step:reserve", "step:pass_gate", "step:ship", "failed"]
    causes = page.eval_on_selector_all("#timeline a.cause", "a => a.map(e => e.textContent)")
    assert causes[:2] == ["#1", "#2"]
    shot(page, artifacts, "03-failed-saga")

    # text from the store is shown as text, never run
    page.goto(url + "#/saga/demo-rejected")
    page.wait_for_selector("#timeline pre.error")
    assert page.text_content("#timeline pre.error") == XSS
    assert page.evaluate("window.__xss") is None
    assert page.query_selector("#timeline img, #timeline script") is None

    # the saga in flight: its step marked, cancelled through the confirm dialog, then ended
    page.goto(url + "#/?status=running%2Ccompensating")
    page.wait_for_function(ROWS_OF % "['running', 'compensating']")  # not the last page's rows
    assert set(listed(page)) == {HELD, ORPHAN}
    page.click(f'#sagas a[href="#/saga/{HELD}"]')
    # its own graph, not the last page's (which marks pass_gate too, as failed)
    page.wait_for_selector('#graph g.node.marked[data-state="step:pass_gate"]'
                           '[data-status="active"]')
    assert page.text_content("#saga-id") == HELD
    assert page.eval_on_selector_all("#graph g.node.marked", "g => g.map(n => "
                                     "[n.dataset.state, n.dataset.status])") == [
        ["step:pass_gate", "active"]]
    assert "A live process drives this saga" in page.text_content("#saga-driven")
    assert page.is_enabled("#cancel-saga") and not page.is_enabled("#retry-saga")
    shot(page, artifacts, "04-in-flight")
    page.click("#cancel-saga")
    page.wait_for_selector('#saga-status[data-status="compensated"]')
    assert dialogs[-1].startswith(f"Cancel saga {HELD}?")
    page.wait_for_selector('#timeline tr[data-type="saga.cancelled"]')
    page.wait_for_selector('#graph g.node.marked[data-state="step:pass_gate"]'
                           '[data-status="failed"]')
    assert filled.store.header(HELD).status == "compensated"
    assert not page.is_enabled("#cancel-saga")
    shot(page, artifacts, "05-cancelled")

    # a saga nobody drives: the cancel is recorded, and the console says what to run
    page.goto(url + f"#/saga/{ORPHAN}")
    page.wait_for_selector("#saga-driven.no")
    page.click("#cancel-saga")
    page.wait_for_function("() => document.querySelector('#saga-note').textContent"
                           ".startsWith('no owner')")
    assert "saga resume" in page.text_content("#saga-note")
    assert filled.store.header(ORPHAN).status == "running"
    assert [r.kind for r in filled.store.requests_for(ORPHAN)] == ["cancel"]
    shot(page, artifacts, "06-orphan")

    # bulk: retry every failed saga, confirmed with the list of them
    page.goto(url + "#/?status=failed")
    page.wait_for_function(ROWS_OF % "['failed']")
    page.click("#bulk-retry")
    page.wait_for_function("() => document.querySelector('#toast').textContent"
                           ".startsWith('retry:')")
    assert dialogs[-1].startswith("Retry 2 sagas matching status=failed?")
    assert "demo-pivot-unknown" in dialogs[-1] and "demo-compensation-failed" in dialogs[-1]
    assert page.text_content("#toast").startswith("retry: 2 requests recorded")
    wait_until(lambda: all(any(e.type == "saga.retried" for e in filled.store.load(s).events)
                           for s in ("demo-pivot-unknown", "demo-compensation-failed")),
               what="both failed sagas retried by their runtime")

    # the flows and the stuck sagas
    page.click('nav a[data-nav="flows"]')
    page.wait_for_function("() => document.querySelectorAll('#flows tbody tr').length === 2")
    shas = page.eval_on_selector_all("#flows tbody tr", "r => r.map(e => e.dataset.definition)")
    assert set(shas) == {filled.store.header("demo-ok").definition,
                         filled.store.header("order-ok-1").definition}
    shot(page, artifacts, "07-flows")
    page.click('nav a[data-nav="stuck"]')
    page.fill("#stuck-after", "0")
    page.click("#stuck-form button")
    page.wait_for_selector(f'#stuck-violations a[href="#/saga/{ORPHAN}"]')
    assert "orphaned" in page.text_content("#stuck-violations")
    shot(page, artifacts, "08-stuck")
    assert page.problems == []


README_RUNS = {  # the README's Try it runs of order_inventory, and one that completes
    "readme-o-1": ({"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25}, ()),
    "readme-o-2": ({"order_id": "o-2", "sku": "widget", "qty": 10000000, "amount": 25}, ()),
    "readme-o-3": ({"order_id": "o-3", "sku": "widget", "qty": 1, "amount": 25},
                   ("--fail", "create_shipment")),
}


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_the_command_serves_a_page_the_browser_renders_with_the_readmes_sagas(
        command, tmp_path, browser_page, artifacts):
    """`saga ui --store sqlite:///…` (and `saga serve --http`) as a process of its own, over a
    store filled by `saga run` as the README runs it: the page lists those sagas."""
    import json
    import signal
    import subprocess
    import sys

    from tests.support import SAGA_CODE, read_until, saga_cli

    flow = str(ROOT / "flows" / "order_inventory.yaml")
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    statuses = {}
    for saga_id, (order, fail) in README_RUNS.items():
        ran = saga_cli("run", flow, "--input", json.dumps(order), "--id", saga_id, *fail,
                       "--store", store, "--json")
        assert ran.returncode in (0, 1), ran.stderr
        statuses[saga_id] = json.loads(ran.stdout)["status"]
    assert set(statuses.values()) == {"completed", "compensated"}
    argv = ["ui"] if command == "ui" else ["serve", flow]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    served = subprocess.Popen([sys.executable, "-c", SAGA_CODE, *argv, "--store", store,
                               "--http", "127.0.0.1:0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert served.stderr is not None
        said = read_until(served.stderr, lambda line: " on http://" in line, 30)
        url = said[-1].split(" on ", 1)[1].split()[0]
        browser_page.goto(url)
        browser_page.wait_for_function(
            f"() => document.querySelectorAll('#sagas tbody tr').length === {len(statuses)}")
        assert listed(browser_page) == statuses
        assert browser_page.problems == []
        shot(browser_page, artifacts, f"{command}-readme-runs")
    finally:
        served.send_signal(signal.SIGTERM)
        served.wait(30)
    assert served.returncode == 0
