"""`saga graph`: the compiled state machine as a diagram — Mermaid (the default) or Graphviz
``dot`` that Graphviz renders — with every state and every transition of the machine; and the
machine ``order_inventory`` compiles to, written out from DESIGN.md §4.2-4.3.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import main
from sagas.language.compiler import compile_flow
from sagas.language.loader import load_flow
from tests.support import saga_cli

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
ORDER = str(FLOWS / "order_inventory.yaml")
SHIPPED = sorted(FLOWS.glob("*.yaml"))


def saga(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


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
        done = saga_cli("graph", str(path), "--format", "dot", timeout=60)
        assert done.returncode == 0, done.stderr
        rendered = subprocess.run([dot, "-Tsvg"], input=done.stdout, capture_output=True,
                                  text=True, timeout=60)
        assert rendered.returncode == 0, (path.name, rendered.stderr)


def test_graph_rejects_an_unknown_format() -> None:
    result = saga("graph", ORDER, "--format", "svg")
    assert result.exit_code == 2
    assert result.stdout == ""
