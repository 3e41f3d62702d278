"""Crash safety (DESIGN.md §4.7–4.8, §5): kill -9 mid-flight, resume, ownership, versioning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors import Faults
from sagas import Runtime
from sagas.events import Event
from sagas.stores import Append, MemoryStore, open_store
from sagas.testing import SagaTestEnvironment
from tests.support import eventually, make_flow

pytestmark = pytest.mark.slow  # processes killed with kill -9 and resumed: CI runs these

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0

FLOW = """\
saga: crashy
services:
  svc: tests.crash_support:Blocking
defaults:
  retry: {attempts: 2, backoff: 10ms, max_backoff: 100ms}
  timeout: TIMEOUT
steps:
  - {name: a, service: svc, action: do, compensation: undo}
  - {name: b, service: svc, action: do, compensation: undo}
  - {name: c, service: svc, action: do, compensation: undo}
"""

# A child process that starts N sagas, reports once all of them are in flight at step b, and
# then waits to be killed. With CRASH_DROP_B=1, b's commands are lost (no reply ever comes);
# otherwise the service decides (see tests/crash_support.py).
CHILD = """
import os, sys, threading
from actors import Faults
from sagas import Runtime

store, flow, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
at_b = threading.Semaphore(0)
def listen(saga_id, events):
    for e in events:
        if e.type == "step.started" and e.step == "b":
            at_b.release()
faults = Faults()
if os.environ.get("CRASH_DROP_B") == "1":
    faults.add(step="b", kind="drop")
runtime = Runtime(store, listeners=[listen], faults=faults)
ids = [runtime.start(flow, {"n": n}) for n in range(count)]
for _ in ids:
    assert at_b.acquire(timeout=30)
print(" ".join(ids), flush=True)
sys.stdin.read()
"""


def env(**extra: str) -> dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = str(ROOT) + os.pathsep + values.get("PYTHONPATH", "")
    for key in ("CRASH_BLOCK_STEP", "CRASH_SUPPORT_BROKEN", "CRASH_UNDO_FAILS",
                "CRASH_RELEASE_FILE", "CRASH_DROP_B"):
        values.pop(key, None)
    values.update(extra)
    return values


def saga(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=120, env=env(**extra), cwd=ROOT)


class Child:
    """A process driving sagas that block at step b until it is killed."""

    def __init__(self, store: str, flow: Path, count: int, **extra: str):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, store, str(flow), str(count)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env(**extra), cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the child died before its sagas reached step b"
        self.ids = line.split()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        assert self.proc.returncode == -signal.SIGKILL


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "crashy.yaml"
    path.write_text(FLOW.replace("TIMEOUT", "30s"))
    return path


def history(store_url: str, saga_id: str) -> list[tuple[str, str | None, int | None]]:
    store = open_store(store_url)
    try:
        return [(e.type, e.step, e.attempt) for e in store.load(saga_id).events]
    finally:
        store.close()


def test_kill_9_mid_flight_then_resume_finishes_every_saga(tmp_path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    child = Child(url, flow, 20, CRASH_DROP_B="1")
    alive = saga("resume", "--store", url, "--json")  # the owner lives: nothing is adopted
    assert alive.returncode == 0, alive.stderr
    assert json.loads(alive.stdout)["resumed"] == 0
    child.kill()
    resumed = saga("resume", "--store", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"resumed": 20, "completed": 20, "compensated": 0,
                                          "failed": 0}
    for saga_id in child.ids:
        events = history(url, saga_id)
        # the same attempt of b was sent again: no new attempt, one outcome
        assert [e for e in events if e[1] == "b"] == [("step.started", "b", 1),
                                                      ("step.succeeded", "b", 1)]
        assert events[-1][0] == "saga.completed"
    listed = json.loads(saga("list", "--store", url, "--json").stdout)
    assert {r["status"] for r in listed} == {"completed"}
    audit = saga("audit", "--store", url)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_resume_records_a_timeout_for_attempts_past_their_timeout_at(tmp_path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    child = Child(url, flow, 3, CRASH_DROP_B="1")
    child.kill()
    # resume an hour later (virtual time): every in-flight attempt is past its timeout_at
    with SagaTestEnvironment(store=url, start=time.time() + 3600) as env:
        assert sorted(env.runtime.recover()) == sorted(child.ids)
        results = [env.drive(saga_id) for saga_id in child.ids]
    for result in results:
        b = [(e.type, e.attempt) for e in result.history if e.step == "b"]
        # attempt 1 timed out while the process was down; attempt 2 ran after the resume
        assert b[:4] == [("step.started", 1), ("step.timed_out", 1), ("step.retrying", 1),
                         ("step.started", 2)]
        assert result.status == "completed"


def test_a_changed_flow_file_does_not_change_running_sagas(tmp_path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    child = Child(url, flow, 1, CRASH_DROP_B="1")
    child.kill()
    flow.write_text(FLOW.replace("TIMEOUT", "30s").replace("name: c,", "name: c_renamed,")
                    + "  - {name: d, service: svc, action: do, compensation: undo}\n")
    assert saga("resume", "--store", url).returncode == 0
    old = [e[1] for e in history(url, child.ids[0]) if e[0] == "step.succeeded"]
    assert old == ["a", "b", "c"]  # finished on the definition it started with
    new = saga("run", str(flow), "--input", "{}", "--store", url, "--json")
    assert new.returncode == 0, new.stderr
    doc = json.loads(new.stdout)
    assert [e["step"] for e in doc["history"] if e["type"] == "step.succeeded"] == \
        ["a", "b", "c_renamed", "d"]
    store = open_store(url)
    try:
        assert store.header(child.ids[0]).definition != doc["definition"]
    finally:
        store.close()


def test_services_that_no_longer_import_park_the_saga_then_retry_finishes_it(tmp_path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    child = Child(url, flow, 1, CRASH_DROP_B="1")
    child.kill()
    broken = saga("resume", "--store", url, "--json", CRASH_SUPPORT_BROKEN="1")
    assert broken.returncode == 0, broken.stderr
    assert json.loads(broken.stdout)["failed"] == 1
    shown = json.loads(saga("show", child.ids[0], "--store", url, "--json").stdout)
    assert (shown["status"], shown["reason"]) == ("failed", "definition_unavailable")
    assert "broken on purpose" in shown["history"][-1]["data"]["error"]
    fixed = saga("retry", child.ids[0], "--store", url, "--json")
    assert fixed.returncode == 0, fixed.stderr
    doc = json.loads(fixed.stdout)
    assert doc["status"] == "completed"
    assert [e["type"] for e in doc["history"]].count("saga.retried") == 1
    assert saga("audit", "--store", url).returncode == 0


def test_retry_after_the_compensation_handler_is_fixed(tmp_path, monkeypatch):
    from actors import Faults
    from tests.crash_support import Blocking

    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    flow = tmp_path / "f.yaml"
    flow.write_text(FLOW.replace("TIMEOUT", "5s"))
    monkeypatch.setattr(Blocking, "undo_fails", True)
    with Runtime(url, faults=Faults().add(step="c", kind="reject")) as runtime:
        result = runtime.run(flow, {}, timeout=30)
        assert (result.status, result.reason) == ("failed", "compensation_failed")
        monkeypatch.setattr(Blocking, "undo_fails", False)  # a person fixes the handler
        again = runtime.retry(result.saga_id)
        if not again.terminal:
            again = runtime.wait(result.saga_id, timeout=30)
    assert again.status == "compensated"
    types = [e.type for e in again.history]
    assert types.count("saga.failed") == 1 and types.count("saga.retried") == 1
    undone = [e.step for e in again.history if e.type == "compensation.succeeded"]
    assert undone == ["b", "a"]
    assert saga("audit", "--store", url).returncode == 0


def test_cancel_from_another_process_reaches_the_owner(tmp_path, flow):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    release = tmp_path / "release"
    child = Child(url, flow, 1, CRASH_BLOCK_STEP="b", CRASH_RELEASE_FILE=str(release))
    canceller = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "cancel", child.ids[0],
                                  "--store", url, "--json"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    store = open_store(url)

    def cancelled() -> bool:
        if "saga.cancelled" in [e.type for e in store.load(child.ids[0]).events]:
            return True
        assert canceller.poll() is None, canceller.communicate()
        return False

    try:
        eventually(cancelled, 30, what="saga.cancelled in the owner's log")
    finally:
        store.close()
    release.write_text("go")  # b's blocked call returns; its compensation runs after it
    out, err = canceller.communicate(timeout=60)
    child.kill()
    assert canceller.returncode == 1, err
    doc = json.loads(out)
    assert doc["status"] == "compensated"
    assert [e["step"] for e in doc["history"] if e["type"] == "compensation.succeeded"] == \
        ["b", "a"]


def test_one_saga_that_cannot_be_resumed_does_not_strand_the_others():
    """A saga whose log cannot be resumed (a ``step.started`` without an attempt) is its own
    problem alone: ``recover`` adopts every orphan of the dead runtime, and the others finish."""
    flow = make_flow("a", "b", timeout="1h")
    store = MemoryStore()
    faults = Faults()
    faults.add(step="a", kind="drop")  # every saga stays in flight at step a
    first = Runtime(store, faults=faults)
    ids = [first.start(flow, {"n": n}, f"s-{n}") for n in range(5)]
    assert first.wait_idle(WAIT)
    header = store.header("s-0")  # a corrupt log: a step.started without an attempt
    seq = header.last_seq + 1
    store.append([Append("s-0", (Event(seq, "step.started", "a", None, time.time(),
                                       f"s-0/{seq}", None, {"payload": None}),),
                         "running", None, time.time())])
    store._owners.discard(first.owner)  # the first runtime "died": its sagas are orphans
    try:
        with Runtime(store) as second:
            assert sorted(second.recover(ids)) == ids
            for saga_id in ids[1:]:
                assert second.wait(saga_id, timeout=WAIT).status == "completed"
    finally:
        first.close()
