"""`saga run`, `saga list`, `saga show` through the CLI: one saga or a batch run to its end on the
default SQLite store or another, its timeline or JSON, the same id twice, and the one-line
errors of bad arguments, unimportable services and unusable or damaged stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from sagas.testing import SagaTestEnvironment
from tests.support import make_flow

ROOT = Path(__file__).resolve().parent.parent
ORDER = str(ROOT / "flows" / "order_inventory.yaml")
GOOD = '{"order_id":"o-1","sku":"widget","qty":1,"amount":25}'
HUGE = '{"order_id":"o-1","sku":"widget","qty":10000000,"amount":25}'


def saga(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `saga` command in a fresh process."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


def timeline_events(stdout: str) -> list[tuple[str, str]]:
    """(type, step) per timeline line of `saga run` / `saga show`."""
    rows = []
    for line in stdout.splitlines()[1:-1]:
        parts = line.split()
        step = parts[3] if len(parts) > 3 and not parts[3].startswith(("{", "rejected")) else ""
        rows.append((parts[2], step))
    return rows


def test_run_completes_on_the_default_sqlite_store(tmp_path):
    proc = saga("run", ORDER, "--input", GOOD, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "completed"
    assert (tmp_path / ".saga" / "sagas.db").exists()
    steps = [s for t, s in timeline_events(proc.stdout) if t == "step.succeeded"]
    assert steps == ["reserve_inventory", "charge_payment", "create_shipment", "notify_customer"]


def test_run_out_of_stock_is_rejected_and_nothing_is_compensated():
    code, out, _ = invoke("run", ORDER, "--input", HUGE, "--store", "memory://")
    assert code == 1
    events = timeline_events(out)
    assert ("step.failed", "reserve_inventory") in events
    assert not [t for t, _ in events if t.startswith("compensation.")]
    assert out.splitlines()[-1] == "compensated"
    assert "insufficient stock" in out


def test_run_fail_pivot_compensates_payment_then_inventory():
    code, out, _ = invoke("run", ORDER, "--input", GOOD, "--store", "memory://",
                          "--fail", "create_shipment")
    assert code == 1
    compensated = [s for t, s in timeline_events(out) if t == "compensation.succeeded"]
    assert compensated == ["charge_payment", "reserve_inventory"]


def test_run_fail_after_pivot_exits_3_failed_forward_recovery():
    code, out, _ = invoke("run", ORDER, "--input", GOOD, "--store", "memory://", "--json",
                          "--fail", "notify_customer")
    assert code == 3
    doc = json.loads(out)
    assert (doc["status"], doc["reason"]) == ("failed", "forward_recovery")


def test_run_json_has_the_documented_shape():
    code, out, _ = invoke("run", ORDER, "--input", GOOD, "--store", "memory://", "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["saga_id", "flow", "version", "definition", "status", "reason",
                         "context", "history"]
    assert doc["context"]["input"] == json.loads(GOOD)
    assert set(doc["context"]["steps"]) == {"reserve_inventory", "charge_payment",
                                            "create_shipment", "notify_customer"}
    for seq, event in enumerate(doc["history"], 1):
        assert list(event) == ["seq", "type", "step", "attempt", "at", "event_id",
                               "causation_id", "data"]
        assert event["seq"] == seq
    assert doc["history"][0]["type"] == "saga.started"
    assert doc["history"][0]["data"]["input"] == json.loads(GOOD)
    assert set(doc["history"][1]["data"]) == {"payload", "timeout_at"}


def write_batch(path: Path, n: int, every: int) -> int:
    """n inputs; every `every`-th orders more than is ever in stock. Returns how many fail."""
    with path.open("w") as handle:
        for i in range(n):
            qty = 20_000_000 if i % every == 0 else 1
            handle.write(json.dumps({"order_id": f"o-{i}", "sku": "widget", "qty": qty,
                                     "amount": 100}) + "\n")
    return len(range(0, n, every))


@pytest.mark.slow  # 2,000 sagas through the CLI
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_batch_of_2000_from_json_lines_reports_exact_counts(tmp_path, store):
    inputs = tmp_path / "it.jsonl"
    rejected = write_batch(inputs, 2000, 7)
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'batch.db'}"
    proc = saga("run", ORDER, "--input-file", str(inputs), "--count", "2000",
                "--concurrency", "100", "--json", "--store", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert list(summary) == ["count", "completed", "compensated", "failed", "elapsed_s",
                             "sagas_per_s", "latency_ms"]
    assert (summary["count"], summary["compensated"], summary["completed"],
            summary["failed"]) == (2000, rejected, 2000 - rejected, 0)
    assert list(summary["latency_ms"]) == ["p50", "p95", "p99"]
    if store == "sqlite":
        listed = saga("list", "--store", url, "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert len(rows) == len({r["saga_id"] for r in rows}) == 2000
        assert {r["status"] for r in rows} == {"completed", "compensated"}
        assert sum(r["status"] == "compensated" for r in rows) == rejected
        assert list(rows[0]) == ["saga_id", "flow", "version", "status", "started_at",
                                 "updated_at"]


def test_run_the_same_id_twice_returns_the_first_saga(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = saga("run", ORDER, "--input", GOOD, "--id", "order-42", "--store", url, "--json")
    second = saga("run", ORDER, "--input", GOOD, "--id", "order-42", "--store", url, "--json")
    assert first.returncode == second.returncode == 0
    assert json.loads(first.stdout) == json.loads(second.stdout)  # same saga, same history
    listed = json.loads(saga("list", "--store", url, "--json").stdout)
    assert [r["saga_id"] for r in listed] == ["order-42"]
    other = saga("run", ORDER, "--input", HUGE, "--id", "order-42", "--store", url)
    assert other.returncode == 2
    assert other.stderr.strip() == "error: saga id 'order-42' exists with different input"


def test_run_with_the_id_of_an_orphaned_running_saga_returns_instead_of_hanging(tmp_path):
    """§4.9: starting an id that exists with the same definition and input "returns the
    existing saga (running or finished)"; §5: ``saga run`` drives only its own sagas. A saga
    left ``running`` by a runtime that is gone is driven by no one, so ``saga run --id`` must
    not wait for it to end (without a timeout, it once hung): it prints the existing saga."""
    flow = make_flow("a", name="orphan_flow")
    path = tmp_path / "orphan_flow.yaml"
    path.write_text(flow.text, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with SagaTestEnvironment(store=url) as env:
        env.faults.add(step="a", kind="drop")  # a's reply never comes: the saga stays running
        env.start(path, {}, "order-7")
        env.settle()
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "run", str(path), "--input", "{}", "--id",
             "order-7", "--store", url, "--json"],
            capture_output=True, text=True, cwd=ROOT, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("`saga run --id` of an orphaned running saga hangs")
    assert json.loads(proc.stdout)["saga_id"] == "order-7", proc.stderr


def test_show_returns_the_full_history_and_unknown_ids_exit_4(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    run = json.loads(saga("run", ORDER, "--input", GOOD, "--store", url, "--json").stdout)
    shown = saga("show", run["saga_id"], "--store", url, "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == run
    text = saga("show", run["saga_id"], "--store", url)
    assert text.returncode == 0 and text.stdout.splitlines()[-1] == "completed"
    unknown = saga("show", "no-such-saga", "--store", url)
    assert unknown.returncode == 4
    assert unknown.stdout == ""
    assert unknown.stderr.strip() == "error: unknown saga id 'no-such-saga'"


def test_list_filters_by_status_flow_and_limit(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    for payload in (GOOD, HUGE, GOOD):
        invoke("run", ORDER, "--input", payload, "--store", url)
    code, out, _ = invoke("list", "--store", url, "--json", "--status", "compensated")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["compensated"]
    code, out, _ = invoke("list", "--store", url, "--json", "--limit", "2")
    rows = json.loads(out)
    assert len(rows) == 2 and rows[0]["started_at"] >= rows[1]["started_at"]
    code, out, _ = invoke("list", "--store", url, "--json", "--flow", "trip_booking")
    assert json.loads(out) == []


@pytest.mark.parametrize("args, message", [
    (["--input", "{bad"], "--input is not valid JSON"),
    (["--input", '{"order_id":"o","sku":"widget","qty":0,"amount":1}'],
     "input.qty: 0 is less than the minimum of 1"),
    (["--input", '{"order_id":"o"}'], "'sku' is a required property"),
    (["--input", "[1, 2]"], "saga input must be a JSON object"),
    (["--input", GOOD, "--store", "redis://localhost"], "unsupported store URL"),
    (["--input", GOOD, "--fail", "nope"], "no step 'nope'"),
    (["--input", GOOD, "--id", "bad id!"], "invalid saga id"),
    ([], "exactly one of --input JSON or --input-file FILE"),
    (["--input-file", "/no/such/file.jsonl"], "--input-file /no/such/file.jsonl"),
])
def test_bad_run_arguments_are_one_line_exit_2(args, message):
    proc = saga("run", ORDER, "--store", "memory://", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unimportable_service_is_one_line_exit_2(tmp_path):
    flow = (ROOT / "flows" / "order_inventory.yaml").read_text().replace(
        "flows.shop:Payment", "flows.nowhere:Payment")
    path = tmp_path / "broken.yaml"
    path.write_text(flow)
    proc = saga("run", str(path), "--input", GOOD, "--store", "memory://")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: cannot import flows.nowhere:Payment: "
                                   "ModuleNotFoundError: No module named 'flows.nowhere'")


def test_an_unusable_store_exits_5(tmp_path):
    bad = tmp_path / "not-a-db.db"
    bad.write_text("hello, I am not SQLite\n" * 10)
    proc = saga("list", "--store", f"sqlite:///{bad}")
    assert proc.returncode == 5
    assert len(proc.stderr.strip().splitlines()) == 1
    assert bad.read_text() == "hello, I am not SQLite\n" * 10


@pytest.mark.parametrize("command", [
    ["list"], ["show", "some-id"], ["resume"], ["audit"], ["retry", "some-id"],
    ["cancel", "some-id"], ["run", ORDER, "--input", GOOD],
])
@pytest.mark.parametrize("damage", ["text", "truncated", "newer_schema"])
def test_every_command_on_a_damaged_store_is_one_line_exit_5(tmp_path, command, damage):
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    if damage == "text":
        path.write_text("not a database at all\n" * 50)
    else:
        invoke("run", ORDER, "--input", GOOD, "--store", url)
        if damage == "truncated":
            data = path.read_bytes()
            for extra in tmp_path.glob("s.db-*"):
                extra.unlink()
            path.write_bytes(data[: len(data) // 3 or 100])
        else:
            import sqlite3

            db = sqlite3.connect(path)
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            db.commit()
            db.close()
    before = path.read_bytes()
    proc = saga(*command, "--store", url)
    assert proc.returncode == 5, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert path.read_bytes() == before  # never reset or overwritten
