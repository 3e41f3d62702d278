"""A SQLite saga store filled by running sagas, for the web console's tests: some completed,
compensated and failed (by injected faults, as ``saga run --fail`` injects them), one in flight
blocked in a handler with its runtime alive (it acts on a cancel), and one in flight whose
process was killed (nobody acts on it until ``saga resume``).

:func:`filled_store` builds it; the :class:`ConsoleStore` it yields keeps the live runtime
and opens the gates when the test is done.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import Faults
from sagas import Runtime
from sagas.stores import SagaStore
from tests.browser.console_services import Gate, Shipping, Stock

ROOT = Path(__file__).resolve().parents[2]
ORDER = str(ROOT / "flows" / "order_inventory.yaml")
DEMO = str(Path(__file__).resolve().parent / "console_demo.yaml")
GOOD = {"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 25}

# saga id -> how it ends (the statuses the tests expect)
ENDS = {
    "order-ok-1": ("completed", None),
    "order-ok-2": ("completed", None),
    "order-out-of-stock": ("compensated", None),
    "demo-ok": ("completed", None),
    "demo-rejected": ("compensated", None),
    "demo-pivot-unknown": ("failed", "pivot_unknown"),
    "demo-compensation-failed": ("failed", "compensation_failed"),
}
# a rejection whose text is HTML: the console shows it as text, never runs it
XSS = 'the gate refuses: <img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'
HELD = "demo-held"  # in flight, in pass_gate; its runtime is alive
ORPHAN = "demo-orphan"  # in flight, in pass_gate; its process was killed


def _faults() -> Faults:
    faults = Faults()
    faults.add("pass_gate", kind="reject", saga_id="demo-rejected", message=XSS)
    faults.add("ship", kind="error", saga_id="demo-pivot-unknown",
               message="carrier API: 503 Service Unavailable\n  retry later")
    faults.add("ship", kind="reject", saga_id="demo-compensation-failed",
               message="no carrier serves this address")
    faults.add("reserve", kind="error", phase="compensation", saga_id="demo-compensation-failed",
               message="stock service: connection reset")
    return faults


SERVICES = "tests.browser.console_services"


def _services(gate: Gate) -> dict[str, Any]:
    """The demo's service objects, by import path (the order flow has a shipping too)."""
    return {f"{SERVICES}:Stock": Stock(), f"{SERVICES}:Gate": gate,
            f"{SERVICES}:Shipping": Shipping()}


def wait_until(condition: Any, timeout: float = 20.0, what: str = "a condition") -> Any:
    give_up = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > give_up:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        time.sleep(0.02)
    return value


def _in_gate(store: SagaStore, saga_id: str) -> bool:
    return any(e.type == "step.started" and e.step == "pass_gate"
               for e in store.load(saga_id).events)


@dataclass
class ConsoleStore:
    """The store's URL, the live runtime (it drives :data:`HELD`) and the gates."""

    url: str
    runtime: Runtime
    gates: list[Gate] = field(default_factory=list)

    @property
    def store(self) -> SagaStore:
        return self.runtime.store


_ORPHAN_SCRIPT = """
import sys, time
from sagas import Runtime
from tests.browser.console_data import DEMO, ORPHAN, _in_gate, _services
from tests.browser.console_services import Gate
runtime = Runtime(sys.argv[1], services=_services(Gate()))
runtime.start(DEMO, {"hold": True}, ORPHAN)
while not _in_gate(runtime.store, ORPHAN):
    time.sleep(0.01)
print("held", flush=True)
time.sleep(600)
"""


def start_orphan(url: str) -> None:
    """:data:`ORPHAN`: started by a process killed (``kill -9``) while the saga waits in
    its gate, so its owner is gone and nobody drives it."""
    child = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, url], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "held\n", (line, child.stderr.read() if child.poll() is not None else "")
    finally:
        child.kill()
        child.wait(30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def filled_store(tmp_path: Path) -> Iterator[ConsoleStore]:
    url = f"sqlite:///{tmp_path}/console.db"
    start_orphan(url)
    gate = Gate()
    runtime = Runtime(url, services=_services(gate), faults=_faults())
    console = ConsoleStore(url, runtime, [gate])
    try:
        for n, saga_id in enumerate(("order-ok-1", "order-ok-2")):
            runtime.run(ORDER, {**GOOD, "order_id": f"o-{n}"}, saga_id, timeout=30)
        runtime.run(ORDER, {**GOOD, "order_id": "o-big", "qty": 10**9}, "order-out-of-stock",
                    timeout=30)
        for saga_id in ("demo-ok", "demo-rejected", "demo-pivot-unknown",
                        "demo-compensation-failed"):
            runtime.run(DEMO, {"hold": False}, saga_id, timeout=30)
        runtime.start(DEMO, {"hold": True}, HELD)  # last: the gate holds every later saga
        wait_until(lambda: _in_gate(runtime.store, HELD), what="the held saga in its gate")
        for saga_id, (status, reason) in ENDS.items():
            header = runtime.store.header(saga_id)
            assert (header.status, header.reason) == (status, reason), (saga_id, header)
        yield console
    finally:
        for each in console.gates:
            each.open()
        runtime.close(timeout=5)


@dataclass
class Answer:
    """An HTTP answer: status, headers (lower-case names) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A plain HTTP client of a console served on a real socket (``http.client``: the Host,
    Origin and every other header are exactly what the test gives)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.origin = f"http://{parts.netloc}"
        self.token = token
        self.csrf = self.get("/api/session").json()["csrf"]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, authorized: bool = True) -> Answer:
        """``authorized``: with the token, if the client has one (unless ``headers`` give
        their own ``Authorization``)."""
        sent = {"Host": self.netloc, **(headers or {})}
        if authorized and self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                          response.read())
        finally:
            connection.close()

    def get(self, path: str, headers: dict[str, str] | None = None,
            params: dict[str, str] | None = None, *, authorized: bool = True) -> Answer:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("GET", path, headers=headers, authorized=authorized)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None, *,
             csrf: bool = True, authorized: bool = True) -> Answer:
        """A JSON POST from the console's own page: its Origin and CSRF token (unless
        ``csrf`` is false), then ``headers``."""
        sent = {"Content-Type": "application/json", "Origin": self.origin,
                **({"X-CSRF-Token": self.csrf} if csrf else {}), **(headers or {})}
        return self.request("POST", path, json.dumps({} if body is None else body).encode(),
                            sent, authorized=authorized)
