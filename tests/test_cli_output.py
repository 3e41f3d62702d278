"""What the CLI prints says why: whole error texts, aligned columns, the cause of a failed
parallel branch, escaped control characters, every schema violation, an empty list; and
``--version`` and every command's ``--help``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sagas
from cli import main
from tests.noisy_services import LONG_REASON
from tests.support import SAGA_CODE, read_until, saga_cli

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "flows" / "output"


def saga(*args: str, cwd: Path = ROOT, stdin: str | None = None,
         columns: int = 100) -> subprocess.CompletedProcess[str]:
    return saga_cli(*args, cwd=cwd, stdin=stdin, timeout=120,
                    env={**os.environ, "COLUMNS": str(columns)})


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_a_rejection_text_is_shown_whole_and_columns_fit_long_step_names():
    proc = saga("run", str(OUTPUT / "long_names.yaml"), "--input", "{}", "--store", "memory://",
                columns=80)
    assert proc.returncode == 1, proc.stderr
    assert LONG_REASON in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if "#1" in line]
    details = {line.index("{") for line in lines if "{" in line}
    assert len(details) == 1, proc.stdout  # outputs start in one column


def test_a_failed_parallel_branch_says_which_step_failed_and_why():
    proc = saga("run", str(OUTPUT / "parallel_refused.yaml"), "--input", "{}", "--store",
                "memory://", columns=400)
    assert proc.returncode == 1
    block = next(line for line in proc.stdout.splitlines()
                 if "step.failed" in line and "reserve_all #1" in line)
    assert "branch reserve_all.car failed (car_step #1 rejected: insufficient stock" in block
    undone = next(line for line in proc.stdout.splitlines()
                  if "compensation.succeeded" in line and "reserve_all #1" in line)
    assert "null" not in undone


def test_control_characters_from_a_handler_are_escaped():
    proc = saga("run", str(OUTPUT / "escapes.yaml"), "--input", "{}", "--store", "memory://")
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "bell\\x07 and \\x1b]0;owned\\x07 title" in proc.stdout


def test_a_handler_returning_a_non_object_is_explained_in_the_timeline():
    proc = saga("run", str(OUTPUT / "not_an_object.yaml"), "--input", "{}", "--store",
                "memory://", columns=60)
    assert "returned int 42, not a JSON object: return a dict" in proc.stdout


def test_every_schema_violation_is_reported_on_one_line():
    proc = saga("run", "flows/order_inventory.yaml", "--input",
                '{"qty": -1, "amount": "x", "sku": 5}', "--store", "memory://")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    for part in ("'order_id' is a required property", "input.amount", "input.qty",
                 "input.sku"):
        assert part in proc.stderr


def test_plan_groups_the_branches_undone_concurrently():
    proc = saga("plan", "flows/trip_booking.yaml", "--fail", "confirm_itinerary")
    assert proc.returncode == 0
    assert "1. the branches, concurrently (each in reverse):" in proc.stdout
    assert "2." not in proc.stdout


def test_an_empty_list_says_so(tmp_path):
    saga("run", "flows/order_inventory.yaml", "--input",
         '{"order_id": "o", "sku": "widget", "qty": 1, "amount": 1}',
         "--store", f"sqlite:///{tmp_path}/s.db")
    proc = saga("list", "--store", f"sqlite:///{tmp_path}/s.db", "--status", "failed")
    assert proc.returncode == 0 and proc.stdout.strip() == "no sagas"
    assert saga("list", "--store", f"sqlite:///{tmp_path}/s.db", "--status", "failed",
                "--json").stdout.strip() == "[]"


def test_send_reads_data_from_a_file_or_stdin(tmp_path):
    store = f"sqlite:///{tmp_path}/s.db"
    big = {"lines": [{"sku": f"item-{n}", "qty": n} for n in range(20_000)]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(big))
    proc = saga("send", "PaymentConfirmed", "--key", "o-1", "--data-file", str(path),
                "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    piped = saga("send", "PaymentConfirmed", "--key", "o-2", "--data-file", "-", "--store",
                 store, stdin='{"psp": "acme"}')
    assert piped.returncode == 0, piped.stderr
    both = saga("send", "E", "--key", "k", "--data", "{}", "--data-file", "-", "--store", store)
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1


def test_deeply_nested_json_is_one_line_and_exit_2(tmp_path):
    deep = "[" * 5000 + "]" * 5000
    for args in (("send", "E", "--key", "k", "--data", deep),
                 ("run", "flows/order_inventory.yaml", "--input", deep)):
        proc = saga(*args, "--store", f"sqlite:///{tmp_path}/s.db")
        assert proc.returncode == 2, proc.stderr
        assert "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_closed_pipe_ends_saga_list_quietly(tmp_path):
    store = f"sqlite:///{tmp_path}/s.db"
    saga("run", "flows/order_inventory.yaml", "--input",
         '{"order_id": "o", "sku": "widget", "qty": 1, "amount": 1}', "--count", "3000",
         "--store", store)
    shell = f"{sys.executable} -c {SAGA_CODE!r} list --store {store} | head -1; " \
            "echo \"status ${PIPESTATUS[0]}\""
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.strip().splitlines()[-1] in ("status 141", "status 0")


def test_serve_reports_events_it_cannot_start(tmp_path):
    store = f"sqlite:///{tmp_path}/s.db"
    saga("send", "OrderPlaced", "--key", "o-1", "--data", '{"order_id": "o-1"}', "--store",
         store)
    serve = subprocess.Popen([sys.executable, "-c", SAGA_CODE, "serve",
                              "flows/order_inventory.yaml", "--store", store],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert serve.stderr is not None
        lines = read_until(serve.stderr, lambda line: line.startswith("skipped event"), 30)
        assert any("skipped event" in line and "order_inventory" in line
                   and "'sku' is a required property" in line for line in lines), lines
    finally:
        serve.send_signal(signal.SIGINT)
        serve.communicate(timeout=30)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"saga {sagas.__version__}\n"
    done = saga("--version")
    assert done.returncode == 0 and done.stdout == f"saga {sagas.__version__}\n"


@pytest.mark.parametrize("command", [None, *sorted(main.commands)])
def test_help_of_every_command(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""
