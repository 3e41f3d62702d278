"""Large flows validate in time linear in their size, and their errors keep exact positions.

Position lookup used to rescan the whole text for every YAML value (a 10,000-step flow took
minutes); the checks on top had their own quadratic steps (every warning compared with every
earlier one, every branch copying the names of all the steps before it, a large mapping looked
up key by key). These tests build flows of the sizes that exposed it and check what loading them
gives — every step, and errors at their exact ``line:column`` deep in the file. They assert no
wall-clock time: without the fixes they run for minutes and hit the suite's timeout.
"""

from __future__ import annotations

import pytest

from sagas.errors import FlowErrors
from sagas.language.loader import MAX_FLOW_BYTES, load_flow, parse_flow

HEAD = """\
saga: big
services:
  inventory: flows.shop:Inventory
input:
  type: object
  properties:
    sku: {type: string}
steps:
"""
HEAD_LINES = HEAD.count("\n")
STEP_LINES = 5  # lines per step in steps_text()


def steps_text(count: int) -> str:
    """``count`` steps of five lines each, each reading the output of the one before."""
    parts = []
    for i in range(count):
        source = f"$.steps.s{i - 1}.reservation_id" if i else "$.input.sku"
        parts.append(f"- name: s{i}\n  service: inventory\n  action: reserve\n"
                     f"  compensation: release\n  input: {{sku: {source}}}\n")
    return "".join(parts)


def step_line(index: int) -> int:
    """The line of step ``index``'s ``- name:``."""
    return HEAD_LINES + 1 + STEP_LINES * index


def test_a_10000_step_flow_loads_every_step(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + steps_text(10_000))
    flow = load_flow(path, strict=True)
    assert len(flow.steps) == 10_000
    last = flow.steps[-1]
    assert (last.name, last.line, dict(last.input)) == (
        "s9999", step_line(9999), {"sku": "$.steps.s9998.reservation_id"})


def test_errors_at_the_end_of_a_10000_step_flow_keep_their_line_and_column():
    text = HEAD + steps_text(10_000)
    text = text.replace("$.steps.s9998.reservation_id", "$.steps.s9999.reservation_id")
    text = text.replace("- name: s9990\n  service: inventory\n",
                        "- name: s9990\n  service: inventry\n")
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="big.yaml")
    assert [e.format() for e in info.value.errors] == [
        f"big.yaml:{step_line(9990) + 1}:12: step uses undeclared service 'inventry'; "
        "did you mean 'inventory'?",
        f"big.yaml:{step_line(9999) + 4}:16: path '$.steps.s9999.reservation_id' names this "
        "step itself; a step can only use the outputs of steps before it",
    ]


def test_every_step_of_a_large_flow_gets_its_own_warning():
    text = HEAD + steps_text(10_000).replace("  compensation: release\n", "")
    flow = parse_flow(text, source="big.yaml")
    lines = [w.line for w in flow.warnings]
    assert lines == [step_line(i) - i for i in range(10_000)]  # one line fewer per step
    assert all("has no compensation" in w.message for w in flow.warnings)


def test_twenty_thousand_list_items_in_an_input_load():
    text = ("saga: items\nservices:\n  inventory: flows.shop:Inventory\nsteps:\n"
            "  - name: a\n    service: inventory\n    action: reserve\n    effects: none\n"
            "    input:\n      skus:\n" + "".join(f"        - {i}\n" for i in range(20_000))
            + "        - $.steps.nowhere.x\n")
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="items.yaml")
    assert [(e.line, e.column) for e in info.value.errors] == [(20_011, 11)]


def test_many_parallel_blocks_and_choices_load():
    blocks = "".join(
        f"- name: p{i}\n  parallel:\n"
        f"    left: [{{name: a{i}, service: inventory, action: reserve, compensation: release}}]\n"
        f"    right: [{{name: b{i}, service: inventory, action: reserve, compensation: release,"
        f" input: {{x: {f'$.steps.a{i - 1}.y' if i else '$.input.sku'}}}}}]\n"
        for i in range(3_000))
    choices = "".join(
        f"- name: c{i}\n  choice:\n  - when: {{path: $.steps.b{i}.ok, eq: true}}\n"
        f"    steps: [{{name: d{i}, service: inventory, action: reserve, effects: none}}]\n"
        for i in range(8))  # 2^8 routes: the most a flow may have
    flow = parse_flow(HEAD + blocks + choices, source="blocks.yaml")
    assert len(flow.steps) == 3 * 3_000 + 8
    assert flow.steps[0].name == "p0" and flow.steps[0].is_parallel


def test_a_map_with_thousands_of_bad_schema_entries_is_checked_key_by_key_once():
    # each entry's error looked its key up by scanning the whole mapping
    entries = "".join(f"    p{i}: 3\n" for i in range(2_000))
    text = HEAD.replace("    sku: {type: string}\n", entries) + steps_text(1)
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="schema.yaml")
    errors = info.value.errors
    assert len(errors) == 2_000  # one per entry, though the metaschema reaches it 8 ways
    assert [(e.line, e.column) for e in errors] == [(7 + i, 8 + len(str(i))) for i in range(2_000)]
    assert errors[-1].message == "input schema: 3 is not of type 'object', 'boolean'"


def test_choices_with_astronomically_many_routes_are_refused_in_one_line():
    # 2^15000 routes: printing that number is refused by Python itself (over 4,300 digits)
    choices = "".join(f"- {{name: c{i}, choice: [{{when: {{path: $.input.sku, eq: a}}, "
                      "steps: []}]}\n" for i in range(15_000))
    with pytest.raises(FlowErrors) as info:
        parse_flow(HEAD + steps_text(1) + choices, source="routes.yaml")
    [error] = [e for e in info.value.errors if "routes" in e.message]
    assert error.format() == ("routes.yaml:9:1: the choices make about 10^4515 routes through "
                              "the flow; at most 256 (split the flow, or merge choices)")


@pytest.mark.slow
def test_a_20000_step_flow_of_two_megabytes_loads(tmp_path):
    text = HEAD + steps_text(20_000)
    assert 2_000_000 < len(text) < MAX_FLOW_BYTES
    path = tmp_path / "bigger.yaml"
    path.write_text(text)
    flow = load_flow(path)
    assert len(flow.steps) == 20_000
    assert flow.steps[-1].line == step_line(19_999)
