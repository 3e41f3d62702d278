"""The flow commands of the ``saga`` CLI (DESIGN.md §6): validate, plan, graph, --version, --help.

Most tests drive ``cli.main`` with click's ``CliRunner`` (stdout and stderr apart); a few run the
real program in a subprocess, where a traceback or a stray print would show.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sagas
from cli import main
from sagas.language.compiler import compile_flow
from sagas.language.loader import load_flow

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
ORDER = str(FLOWS / "order_inventory.yaml")
SHIPPED = sorted(FLOWS.glob("*.yaml"))
WARNING_FLOW = Path(__file__).resolve().parent / "flows" / "warnings" / \
    "no_compensation_before_pivot.yaml"
INVALID_FLOW = Path(__file__).resolve().parent / "flows" / "invalid" / "duplicate_step_name.yaml"


def saga(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def one_clear_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- validate ---------------------------------------------------------------------------------
def test_validate_every_shipped_flow() -> None:
    result = saga("validate", *map(str, SHIPPED))
    assert result.exit_code == 0, result.output
    expected = []
    for path in SHIPPED:
        flow = load_flow(path)
        expected.append(f"ok: {flow.name} v{flow.version} ({len(flow.steps)} steps)")
    assert result.stdout.splitlines() == expected
    assert result.stderr == ""
    assert "ok: order_inventory v1 (4 steps)" in expected


def test_validate_one_step_says_step(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("saga: one\nversion: 7\nservices: {s: a.b:C}\n"
                    "steps: [{name: a, service: s, action: x, effects: none}]\n")
    result = saga("validate", "--no-import", str(path))  # a.b:C is not a module here
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: one v7 (1 step)\n"


def _write(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.yaml"
    if kind == "directory":
        return tmp_path
    path = tmp_path / f"{kind}.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        path.write_bytes("saga: caf\xe9\n".encode("latin-1"))
    elif kind == "control":  # binary without NUL bytes, valid UTF-8
        path.write_bytes(b"saga: demo\x01\x02\x1b\n")
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "empty", "latin1",
                                  "control"])
def test_validate_an_unreadable_file_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind)
    result = saga("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_clear_line(result.stderr)
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+: \S.*", line), line
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_unreadable_files_in_a_real_process(tmp_path: Path) -> None:
    for kind in ("missing", "directory", "binary", "empty"):
        path = _write(tmp_path, kind)
        done = run("validate", str(path))
        assert done.returncode == 2, (kind, done.stderr)
        assert done.stdout == ""
        line = one_clear_line(done.stderr)
        assert line.startswith(f"{path}:1:1: "), line


def test_validate_an_invalid_flow_prints_file_line_column() -> None:
    result = saga("validate", str(INVALID_FLOW))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_clear_line(result.stderr) == (
        f"{INVALID_FLOW}:9:11: duplicate step name 'reserve' (first at line 5)")


def test_validate_reports_every_file_and_fails_if_one_is_invalid() -> None:
    result = saga("validate", ORDER, str(INVALID_FLOW), str(FLOWS / "trip_booking.yaml"))
    assert result.exit_code == 2
    assert result.stdout.splitlines() == ["ok: order_inventory v1 (4 steps)",
                                          "ok: trip_booking v1 (5 steps)"]
    assert one_clear_line(result.stderr).startswith(f"{INVALID_FLOW}:9:11: ")


def test_validate_strict_turns_a_warning_into_exit_2() -> None:
    relaxed = saga("validate", str(WARNING_FLOW))
    assert relaxed.exit_code == 0, relaxed.output
    assert relaxed.stdout == "ok: demo v1 (2 steps)\n"
    assert one_clear_line(relaxed.stderr).startswith(
        f"{WARNING_FLOW}:6:5: warning: step 'reserve' has no compensation")

    strict = saga("validate", "--strict", str(WARNING_FLOW))
    assert strict.exit_code == 2
    assert strict.stdout == ""
    assert one_clear_line(strict.stderr).startswith(
        f"{WARNING_FLOW}:6:5: step 'reserve' has no compensation")

    shipped = saga("validate", "--strict", *map(str, SHIPPED))
    assert shipped.exit_code == 0, shipped.output


def test_validate_needs_a_file() -> None:
    result = saga("validate")
    assert result.exit_code == 2


# -- --version and --help ---------------------------------------------------------------------
def test_version() -> None:
    result = saga("--version")
    assert result.exit_code == 0
    assert result.stdout == f"saga {sagas.__version__}\n"
    done = run("--version")
    assert done.returncode == 0 and done.stdout == f"saga {sagas.__version__}\n"


@pytest.mark.parametrize("command", [None, *sorted(main.commands)])
def test_help_of_every_command(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = saga(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""


# -- plan ------------------------------------------------------------------------------------------
def plan_json(*args: str) -> dict:
    result = saga("plan", *args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)  # one JSON document, nothing else on stdout


def compensated(document: dict) -> list[str]:
    return [c["step"] for c in document["compensations"]]


def test_plan_of_a_step_after_a_choice_shows_each_route_that_recovers_differently() -> None:
    paid_later = str(ROOT / "flows" / "order_paid_later.yaml")
    text = saga("plan", paid_later, "--fail", "create_shipment")
    assert text.exit_code == 0, text.output
    assert "if create_shipment is rejected (after by_size: large)" in text.stdout
    assert "if create_shipment is rejected (after by_size: default)" in text.stdout
    large, default = text.stdout.split("(after by_size: default)")
    assert "insure_shipment (cancel)" in large and "insure_shipment" not in default
    document = plan_json(paid_later, "--fail", "create_shipment")
    assert document["route"] == [{"choice": "by_size", "branch": "large"}]
    every = plan_json(paid_later)["plans"]
    routes = {p["route"][0]["branch"]: [c["step"] for c in p["compensations"]] for p in every
              if p["fail"] == "create_shipment" and p["kind"] == "rejected"}
    assert routes == {"large": ["insure_shipment", "reserve_inventory"],
                      "default": ["reserve_inventory"]}
    table = saga("plan", paid_later)
    assert table.exit_code == 0 and "create_shipment" in table.stdout


def test_plan_rejected_payment_compensates_the_reservation_only() -> None:
    document = plan_json(ORDER, "--fail", "charge_payment")
    assert document == {
        "flow": "order_inventory", "version": 1, "fail": "charge_payment", "kind": "rejected",
        "route": [], "ran": ["reserve_inventory", "charge_payment"],
        "compensations": [{"step": "reserve_inventory", "compensation": "release"}],
        "status": "compensated", "reason": None,
    }
    assert plan_json(ORDER, "--fail", "charge_payment", "--kind", "rejected") == document

    text = saga("plan", ORDER, "--fail", "charge_payment")
    assert text.exit_code == 0, text.output
    numbered = re.findall(r"^\s*(\d+)\. (\w+)", text.stdout, re.MULTILINE)
    assert numbered == [("1", "reserve_inventory")]
    assert "compensated" in text.stdout
    assert "failed" not in text.stdout


def test_plan_payment_running_out_on_errors_compensates_it_then_the_reservation() -> None:
    document = plan_json(ORDER, "--fail", "charge_payment", "--kind", "error")
    assert document["kind"] == "error"
    assert document["compensations"] == [
        {"step": "charge_payment", "compensation": "refund"},
        {"step": "reserve_inventory", "compensation": "release"}]
    assert (document["status"], document["reason"]) == ("compensated", None)

    text = saga("plan", ORDER, "--fail", "charge_payment", "--kind", "error")
    assert text.exit_code == 0, text.output
    numbered = re.findall(r"^\s*(\d+)\. (\w+)", text.stdout, re.MULTILINE)
    assert numbered == [("1", "charge_payment"), ("2", "reserve_inventory")]


def test_plan_pivot_timing_out_ends_failed_pivot_unknown() -> None:
    document = plan_json(ORDER, "--fail", "create_shipment", "--kind", "timeout")
    assert document["ran"] == ["reserve_inventory", "charge_payment", "create_shipment"]
    assert document["compensations"] == []
    assert (document["status"], document["reason"]) == ("failed", "pivot_unknown")

    text = saga("plan", ORDER, "--fail", "create_shipment", "--kind", "timeout")
    assert text.exit_code == 0, text.output
    assert "failed" in text.stdout and "pivot_unknown" in text.stdout
    assert not re.search(r"^\s*\d+\. ", text.stdout, re.MULTILINE)


def test_plan_step_after_the_pivot_ends_failed_forward_recovery() -> None:
    for kind in ("rejected", "error", "timeout"):
        document = plan_json(ORDER, "--fail", "notify_customer", "--kind", kind)
        assert document["compensations"] == []
        assert (document["status"], document["reason"]) == ("failed", "forward_recovery")

    text = saga("plan", ORDER, "--fail", "notify_customer")
    assert text.exit_code == 0, text.output
    assert "failed" in text.stdout and "forward_recovery" in text.stdout
    assert not re.search(r"^\s*\d+\. ", text.stdout, re.MULTILINE)


def test_plan_rejected_pivot_is_rolled_back() -> None:
    document = plan_json(ORDER, "--fail", "create_shipment")
    assert compensated(document) == ["charge_payment", "reserve_inventory"]
    assert (document["status"], document["reason"]) == ("compensated", None)


def test_plan_without_fail_lists_every_step_and_kind() -> None:
    document = plan_json(ORDER)
    assert (document["flow"], document["version"]) == ("order_inventory", 1)
    keys = [(p["fail"], p["kind"]) for p in document["plans"]]
    steps = ["reserve_inventory", "charge_payment", "create_shipment", "notify_customer"]
    assert sorted(keys) == sorted((s, k) for s in steps for k in ("rejected", "error", "timeout"))
    table = saga("plan", ORDER)
    assert table.exit_code == 0, table.output
    for step in steps:
        assert step in table.stdout


def test_plan_json_in_a_real_process() -> None:
    done = run("plan", "flows/order_inventory.yaml", "--fail", "charge_payment", "--kind",
               "error", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    document = json.loads(done.stdout)
    assert compensated(document) == ["charge_payment", "reserve_inventory"]


@pytest.mark.parametrize("args", [
    ["--fail", "no_such_step"],
    ["--fail", "charge_payment", "--kind", "explosion"],
])
def test_plan_usage_errors_exit_2(args: list[str]) -> None:
    result = saga("plan", ORDER, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert args[-1] in result.stderr


def test_plan_and_graph_of_an_invalid_flow_exit_2() -> None:
    for command in ("plan", "graph"):
        result = saga(command, str(INVALID_FLOW))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert one_clear_line(result.stderr).startswith(f"{INVALID_FLOW}:9:11: ")


# -- graph -----------------------------------------------------------------------------------------
# The order_inventory machine, written out from DESIGN.md §4.2-4.3: (source, trigger, dest, reason)
ORDER_STATES = {
    "step:reserve_inventory", "step:charge_payment", "step:create_shipment",
    "step:notify_customer", "compensation:reserve_inventory", "compensation:charge_payment",
    "completed", "compensated", "failed",
}
ORDER_TRANSITIONS = {
    ("step:reserve_inventory", "succeeded", "step:charge_payment", None),
    ("step:reserve_inventory", "rejected", "compensated", None),
    ("step:reserve_inventory", "exhausted", "compensation:reserve_inventory", None),
    ("step:charge_payment", "succeeded", "step:create_shipment", None),
    ("step:charge_payment", "rejected", "compensation:reserve_inventory", None),
    ("step:charge_payment", "exhausted", "compensation:charge_payment", None),
    ("step:create_shipment", "succeeded", "step:notify_customer", None),
    ("step:create_shipment", "rejected", "compensation:charge_payment", None),
    ("step:create_shipment", "exhausted", "failed", "pivot_unknown"),
    ("step:notify_customer", "succeeded", "completed", None),
    ("step:notify_customer", "rejected", "failed", "forward_recovery"),
    ("step:notify_customer", "exhausted", "failed", "forward_recovery"),
    ("compensation:charge_payment", "succeeded", "compensation:reserve_inventory", None),
    ("compensation:charge_payment", "exhausted", "failed", "compensation_failed"),
    ("compensation:reserve_inventory", "succeeded", "compensated", None),
    ("compensation:reserve_inventory", "exhausted", "failed", "compensation_failed"),
}


def mermaid_id(state: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", state)


def parse_mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str, str | None]]]:
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    states: dict[str, str] = {}
    edges: set[tuple[str, str, str | None]] = set()
    for line in lines[1:]:
        if not line or line.startswith("%%"):
            continue
        if m := re.fullmatch(r'state "([^"]*)" as (\w+)', line):
            assert m[2] not in states, f"state {m[2]} declared twice"
            states[m[2]] = m[1]
        elif m := re.fullmatch(r"state (\w+) <<choice>>", line):
            assert m[1] in states and m[1].startswith("choice_"), line
        elif m := re.fullmatch(r"(\[\*\]|\w+) --> (\[\*\]|\w+)(?: : (.+))?", line):
            edges.add((m[1], m[2], m[3]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    return states, edges


def label(trigger: str, reason: str | None) -> str:
    return f"{trigger} [{reason}]" if reason else trigger


def test_mermaid_of_order_inventory_shows_every_state_and_transition() -> None:
    result = saga("graph", ORDER)
    assert result.exit_code == 0, result.output
    assert saga("graph", ORDER, "--format", "mermaid").stdout == result.stdout
    states, edges = parse_mermaid(result.stdout)
    assert set(states) == {mermaid_id(s) for s in ORDER_STATES}
    assert "pivot" in states[mermaid_id("step:create_shipment")]
    for state in ORDER_STATES - {"completed", "compensated", "failed"}:
        assert state.split(":")[1] in states[mermaid_id(state)]
    expected = {(mermaid_id(src), mermaid_id(dest), label(trigger, reason))
                for src, trigger, dest, reason in ORDER_TRANSITIONS}
    expected.add(("[*]", mermaid_id("step:reserve_inventory"), None))
    expected |= {(mermaid_id(t), "[*]", None) for t in ("completed", "compensated", "failed")}
    assert edges == expected


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_mermaid_matches_the_compiled_machine(path: Path) -> None:
    compiled = compile_flow(load_flow(path))
    result = saga("graph", str(path))
    assert result.exit_code == 0, result.output
    states, edges = parse_mermaid(result.stdout)
    assert set(states) == {mermaid_id(s) for s in compiled.machine.states}
    machine = set()
    for trigger, event in compiled.machine.events.items():
        for source, transitions in event.transitions.items():
            machine |= {(source, t.dest, trigger) for t in transitions}
    assert machine == {(e.source, e.dest, e.trigger) for e in compiled.edges}
    drawn = set()
    for edge in compiled.edges:
        if edge.trigger == "chosen":  # a choice's edge names its branch and condition
            branch = next(b for b in compiled.choices[edge.source.split(":")[1]].branches
                          if b.name == edge.label)
            text = f"{branch.name}: {branch.when.describe()}" if branch.when else "default"
        else:  # an edge that depends on the route taken says which
            text = label(edge.trigger, edge.reason) + (f" ({edge.label})" if edge.label else "")
        drawn.add((mermaid_id(edge.source), mermaid_id(edge.dest), text))
    for track, (block, branch) in compiled.tracks.items():  # a block starts its branches
        drawn.add((mermaid_id(f"step:{block.name}"), mermaid_id(compiled.track_initial[track]),
                   f"starts {branch.name}"))
        drawn.add((mermaid_id(f"compensation:{block.name}"),
                   mermaid_id(compiled.undo_entry[track]), f"undoes {branch.name}"))
    assert {e for e in edges if "[*]" not in e[:2]} == drawn


def test_mermaid_keeps_a_multiline_description_out_of_the_diagram(tmp_path: Path) -> None:
    # a description is free text: a second line of it must not become a Mermaid statement
    path = tmp_path / "described.yaml"
    path.write_text('saga: demo\ndescription: |\n  Line one\n  state "x" as injected\n'
                    "services: {s: a.b:C}\n"
                    "steps: [{name: a, service: s, action: x, effects: none}]\n")
    result = saga("graph", str(path))
    assert result.exit_code == 0, result.output
    states, _ = parse_mermaid(result.stdout)
    compiled = compile_flow(load_flow(path))
    assert set(states) == {mermaid_id(s) for s in compiled.machine.states}


def test_order_inventory_compiles_to_the_design_machine() -> None:
    compiled = compile_flow(load_flow(ORDER))
    assert set(compiled.machine.states) == ORDER_STATES
    got = set()
    for trigger, event in compiled.machine.events.items():
        for source, transitions in event.transitions.items():
            got |= {(source, trigger, t.dest, compiled.next(source, trigger)[1])
                    for t in transitions}
    assert got == ORDER_TRANSITIONS


def _dot_program() -> str:
    dot = shutil.which("dot")
    if dot is None:
        message = ("Graphviz 'dot' is not installed (CI installs Debian's graphviz: "
                   "apt-get install graphviz)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return dot


def test_dot_output_is_rendered_by_graphviz(tmp_path: Path) -> None:
    dot = _dot_program()
    result = saga("graph", ORDER, "--format", "dot")
    assert result.exit_code == 0, result.output
    source = result.stdout
    rendered = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True,
                              timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stderr == "", rendered.stderr  # no syntax warnings either
    assert "<svg" in rendered.stdout

    # Graphviz's own reading of the graph: every state a node, every transition an edge
    plain = subprocess.run([dot, "-Tplain"], input=source, capture_output=True, text=True,
                           timeout=60)
    assert plain.returncode == 0, plain.stderr
    nodes = [line for line in plain.stdout.splitlines() if line.startswith("node ")]
    edges = [line for line in plain.stdout.splitlines() if line.startswith("edge ")]
    assert len(nodes) == len(ORDER_STATES) + 1  # and the start point
    assert len(edges) == len(ORDER_TRANSITIONS) + 1  # and the start arrow
    for state in ORDER_STATES:
        assert f'"{state}"' in plain.stdout or f" {state} " in plain.stdout, state


def test_dot_of_every_shipped_flow_renders() -> None:
    dot = _dot_program()
    for path in SHIPPED:
        done = run("graph", str(path), "--format", "dot")
        assert done.returncode == 0, done.stderr
        rendered = subprocess.run([dot, "-Tsvg"], input=done.stdout, capture_output=True,
                                  text=True, timeout=60)
        assert rendered.returncode == 0, (path.name, rendered.stderr)


def test_graph_rejects_an_unknown_format() -> None:
    result = saga("graph", ORDER, "--format", "svg")
    assert result.exit_code == 2
    assert result.stdout == ""
