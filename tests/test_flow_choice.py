"""``choice`` blocks: a route picked by conditions on the saga context, and compensation that
follows the route actually taken.

A choice is written ``{name, choice: [{name?, when, steps}, ...], default?: [steps]}``; the first
branch whose ``when`` holds is taken (``choice.made`` records it), else the default, else nothing
(the saga goes on after the choice). If a later step fails, only the steps of the branch taken
(and those before the choice) are compensated.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli
from sagas import FlowErrors, parse_flow
from sagas.language.compiler import compile_flow
from sagas.language.conditions import Condition
from sagas.language.plan import plan
from sagas.testing import SagaTestEnvironment
from tests.support import Scripted

ROOT = Path(__file__).resolve().parent.parent

ROUTED = textwrap.dedent("""\
    saga: routed
    services:
      svc: tests.support:Scripted
    defaults:
      retry: {attempts: 1, backoff: 1s, jitter: false}
      timeout: 5s
      on_compensation_failure: park
    steps:
      - {name: a, service: svc, action: do, compensation: undo}
      - name: pick
        choice:
          - name: big
            when: {path: $.input.qty, ge: 1000}
            steps:
              - {name: b1, service: svc, action: do, compensation: undo}
              - {name: b2, service: svc, action: do, compensation: undo}
          - name: tiny
            when: {path: $.input.qty, lt: 10}
            steps: []
        default:
          - {name: d1, service: svc, action: do, compensation: undo}
      - {name: z, service: svc, action: do, compensation: undo}
    """)


@pytest.fixture
def routed():
    return parse_flow(ROUTED, source="routed.yaml")


def run(flow, saga_input: Any, script: dict | None = None, **env_args: Any):
    """Run one saga with a fresh Scripted service; return (result, service)."""
    service = Scripted(script or {})
    with SagaTestEnvironment(services={"svc": service}, **env_args) as env:
        result = env.run(flow, saga_input)
    return result, service


def choices_made(result) -> list[tuple[str, str]]:
    return [(e.step, e.data["branch"]) for e in result.history if e.type == "choice.made"]


def compensated(result) -> list[str]:
    return [e.step for e in result.history if e.type == "compensation.succeeded"]


# -- picking a branch ---------------------------------------------------------------------------
def test_the_first_branch_whose_condition_holds_is_taken(routed):
    result, svc = run(routed, {"qty": 5000})
    assert result.status == "completed"
    assert choices_made(result) == [("pick", "big")]
    assert svc.actions() == ["a", "b1", "b2", "z"]
    made = next(e for e in result.history if e.type == "choice.made")
    # recorded after a succeeded and before the branch's first step started
    kinds = [(e.type, e.step) for e in result.history]
    i = kinds.index(("choice.made", "pick"))
    assert kinds[i - 1] == ("step.succeeded", "a") and kinds[i + 1] == ("step.started", "b1")
    assert made.data == {"branch": "big"}


def test_an_empty_branch_goes_straight_on(routed):
    result, svc = run(routed, {"qty": 3})
    assert result.status == "completed"
    assert choices_made(result) == [("pick", "tiny")]
    assert svc.actions() == ["a", "z"]


def test_the_default_is_taken_when_no_condition_holds(routed):
    result, svc = run(routed, {"qty": 50})
    assert result.status == "completed"
    assert choices_made(result) == [("pick", "default")]
    assert svc.actions() == ["a", "d1", "z"]


def test_the_default_is_taken_when_the_path_names_nothing(routed):
    result, svc = run(routed, {"other": 1})
    assert choices_made(result) == [("pick", "default")]
    assert svc.actions() == ["a", "d1", "z"]


def test_first_match_wins_and_unnamed_branches_are_numbered():
    flow = parse_flow(textwrap.dedent("""\
        saga: overlap
        services: {svc: tests.support:Scripted}
        steps:
          - name: pick
            choice:
              - when: {path: $.input.x, gt: 1}
                steps: [{name: first, service: svc, action: do, effects: none}]
              - when: {path: $.input.x, gt: 0}
                steps: [{name: second, service: svc, action: do, effects: none}]
          - {name: after, service: svc, action: do, effects: none}
        """), source="overlap.yaml")
    result, svc = run(flow, {"x": 5})
    assert choices_made(result) == [("pick", "branch1")]
    assert svc.actions() == ["first", "after"]
    result, svc = run(flow, {"x": 0.5})
    assert choices_made(result) == [("pick", "branch2")]
    assert svc.actions() == ["second", "after"]


def test_without_a_default_and_no_match_the_saga_goes_on_after_the_choice():
    flow = parse_flow(textwrap.dedent("""\
        saga: optional
        services: {svc: tests.support:Scripted}
        steps:
          - {name: a, service: svc, action: do, effects: none}
          - name: maybe
            choice:
              - name: flagged
                when: {path: $.input.flag, eq: true}
                steps: [{name: extra, service: svc, action: do, effects: none}]
          - {name: after, service: svc, action: do, effects: none}
        """), source="optional.yaml")
    result, svc = run(flow, {"flag": False})
    assert result.status == "completed"
    assert svc.actions() == ["a", "after"]
    assert [step for step, _ in choices_made(result)] == ["maybe"]
    assert choices_made(result)[0][1] != "flagged"
    result, svc = run(flow, {"flag": True})
    assert choices_made(result) == [("maybe", "flagged")]
    assert svc.actions() == ["a", "extra", "after"]


CONDITION_FLOW = """\
saga: cond
services: {svc: tests.support:Scripted}
steps:
  - {name: a, service: svc, action: do, effects: none}
  - name: test
    choice:
      - name: hit
        when: WHEN
        steps: [{name: yes_step, service: svc, action: do, effects: none}]
    default: [{name: no_step, service: svc, action: do, effects: none}]
"""

X = "$.input.x"
CASES = [
    # (when, input, taken?)
    (f"{{path: {X}, eq: 5}}", {"x": 5}, True),
    (f"{{path: {X}, eq: 5}}", {"x": 5.0}, True),
    (f"{{path: {X}, eq: 5}}", {"x": 6}, False),
    (f"{{path: {X}, eq: 1}}", {"x": True}, False),  # true is not 1
    (f"{{path: {X}, eq: {{k: [1, 2]}}}}", {"x": {"k": [1, 2]}}, True),
    (f"{{path: {X}, eq: abc}}", {"x": "abc"}, True),
    (f"{{path: {X}, eq: null}}", {"x": None}, True),
    (f"{{path: {X}, eq: 5}}", {}, False),
    (f"{{path: {X}, ne: 5}}", {"x": 6}, True),
    (f"{{path: {X}, ne: 5}}", {"x": 5}, False),
    (f"{{path: {X}, ne: 5}}", {}, True),  # a missing path: only ne holds
    (f"{{path: {X}, gt: 5}}", {"x": 6}, True),
    (f"{{path: {X}, gt: 5}}", {"x": 5}, False),
    (f"{{path: {X}, gt: 5}}", {"x": "6"}, False),  # a text and a number: not ordered
    (f"{{path: {X}, gt: 0}}", {"x": True}, False),  # a boolean is not a number
    (f"{{path: {X}, gt: 5}}", {}, False),
    (f"{{path: {X}, ge: 5}}", {"x": 5}, True),
    (f"{{path: {X}, ge: 5}}", {"x": 4.99}, False),
    (f"{{path: {X}, lt: 5}}", {"x": 4}, True),
    (f"{{path: {X}, lt: 5}}", {"x": 5}, False),
    (f"{{path: {X}, le: 5}}", {"x": 5}, True),
    (f"{{path: {X}, le: 5}}", {"x": 6}, False),
    (f"{{path: {X}, le: 5}}", {}, False),
    (f"{{path: {X}, gt: m}}", {"x": "z"}, True),  # two texts: ordered
    (f"{{path: {X}, gt: m}}", {"x": "a"}, False),
    (f"{{path: {X}, in: [DE, AT]}}", {"x": "AT"}, True),
    (f"{{path: {X}, in: [DE, AT]}}", {"x": "FR"}, False),
    (f"{{path: {X}, in: [DE, AT]}}", {}, False),
    (f"{{path: {X}, in: [1, 2]}}", {"x": 2.0}, True),
    (f"{{path: {X}, exists: true}}", {"x": None}, True),  # null counts as a value
    (f"{{path: {X}, exists: true}}", {}, False),
    (f"{{path: {X}, exists: false}}", {}, True),
    (f"{{path: {X}, exists: false}}", {"x": 0}, False),
    ("{path: $.input.x.deep, exists: false}", {"x": 3}, True),
    (f"{{all: [{{path: {X}, ge: 1}}, {{path: {X}, le: 10}}]}}", {"x": 5}, True),
    (f"{{all: [{{path: {X}, ge: 1}}, {{path: {X}, le: 10}}]}}", {"x": 11}, False),
    (f"{{any: [{{path: {X}, eq: 1}}, {{path: {X}, eq: 2}}]}}", {"x": 2}, True),
    (f"{{any: [{{path: {X}, eq: 1}}, {{path: {X}, eq: 2}}]}}", {"x": 3}, False),
    (f"{{not: {{path: {X}, eq: 1}}}}", {"x": 2}, True),
    (f"{{not: {{path: {X}, eq: 1}}}}", {"x": 1}, False),
    (f"{{not: {{path: {X}, gt: 1}}}}", {}, True),  # not(false on a missing path)
    ("{any: [{path: $.input.country, in: [DE, AT]}, {not: {path: $.input.vip, exists: true}}]}",
     {"country": "FR", "vip": True}, False),
    ("{any: [{path: $.input.country, in: [DE, AT]}, {not: {path: $.input.vip, exists: true}}]}",
     {"country": "FR"}, True),
    ("{any: [{path: $.input.country, in: [DE, AT]}, {not: {path: $.input.vip, exists: true}}]}",
     {"country": "DE", "vip": True}, True),
    ("{all: [{any: [{path: $.input.a, eq: 1}, {path: $.input.b, eq: 1}]}, "
     "{not: {path: $.input.c, exists: true}}]}", {"b": 1}, True),
    ("{all: [{any: [{path: $.input.a, eq: 1}, {path: $.input.b, eq: 1}]}, "
     "{not: {path: $.input.c, exists: true}}]}", {"b": 1, "c": 0}, False),
    # an earlier step's output: Scripted answers {"step": <name>, "attempt": <n>}
    ("{path: $.steps.a.step, eq: a}", {}, True),
    ("{path: $.steps.a.attempt, gt: 1}", {}, False),
]


@pytest.mark.parametrize(("when", "saga_input", "taken"), CASES,
                         ids=[f"{w} {i}" for w, i, _ in CASES])
def test_each_operator_picks_the_right_branch(when, saga_input, taken):
    flow = parse_flow(CONDITION_FLOW.replace("WHEN", when), source="cond.yaml")
    result, svc = run(flow, saga_input)
    assert result.status == "completed"
    assert choices_made(result) == [("test", "hit" if taken else "default")]
    assert svc.actions() == ["a", "yes_step" if taken else "no_step"]


def test_condition_equality_keeps_nested_booleans_apart_from_numbers():
    context = {"input": {"flags": [1], "obj": {"flag": 1}}, "steps": {}}
    assert not Condition("eq", "$.input.flags", [True]).holds(context)
    assert not Condition("eq", "$.input.obj", {"flag": True}).holds(context)
    assert not Condition("in", "$.input.flags", ([True],)).holds(context)


# -- compensation follows the route -------------------------------------------------------------
def test_a_failure_after_the_choice_compensates_the_branch_taken_in_reverse(routed):
    result, svc = run(routed, {"qty": 5000}, {("z", "action"): ["reject"]})
    assert result.status == "compensated"
    assert compensated(result) == ["b2", "b1", "a"]
    assert svc.compensations() == ["b2", "b1", "a"]
    assert "d1" not in svc.actions()


def test_the_default_route_compensates_its_own_steps_only(routed):
    result, svc = run(routed, {"qty": 50}, {("z", "action"): ["reject"]})
    assert result.status == "compensated"
    assert compensated(result) == ["d1", "a"]
    assert not {"b1", "b2"} & set(svc.compensations())


def test_an_empty_branch_compensates_only_the_steps_before_the_choice(routed):
    result, _ = run(routed, {"qty": 3}, {("z", "action"): ["reject"]})
    assert result.status == "compensated"
    assert compensated(result) == ["a"]


def test_a_failure_inside_the_branch_compensates_its_earlier_steps(routed):
    result, svc = run(routed, {"qty": 5000}, {("b2", "action"): ["reject"]})
    assert result.status == "compensated"
    assert compensated(result) == ["b1", "a"]
    assert "z" not in svc.actions()


NESTED = textwrap.dedent("""\
    saga: nested
    services: {svc: tests.support:Scripted}
    defaults: {retry: {attempts: 1, backoff: 1s, jitter: false}, timeout: 5s}
    steps:
      - {name: a, service: svc, action: do, compensation: undo}
      - name: outer
        choice:
          - name: eu
            when: {path: $.input.region, eq: eu}
            steps:
              - {name: eu1, service: svc, action: do, compensation: undo}
              - name: inner
                choice:
                  - name: de
                    when: {path: $.input.country, eq: DE}
                    steps: [{name: de1, service: svc, action: do, compensation: undo}]
                default: [{name: other1, service: svc, action: do, compensation: undo}]
              - {name: eu2, service: svc, action: do, compensation: undo}
        default: [{name: world1, service: svc, action: do, compensation: undo}]
      - {name: z, service: svc, action: do, compensation: undo}
    """)


@pytest.mark.parametrize(("saga_input", "picks", "ran"), [
    ({"region": "eu", "country": "DE"}, [("outer", "eu"), ("inner", "de")],
     ["a", "eu1", "de1", "eu2", "z"]),
    ({"region": "eu", "country": "FR"}, [("outer", "eu"), ("inner", "default")],
     ["a", "eu1", "other1", "eu2", "z"]),
    ({"region": "us"}, [("outer", "default")], ["a", "world1", "z"]),
])
def test_nested_choices_route_and_compensate_along_the_path(saga_input, picks, ran):
    flow = parse_flow(NESTED, source="nested.yaml")
    result, svc = run(flow, saga_input)
    assert result.status == "completed"
    assert choices_made(result) == picks
    assert svc.actions() == ran
    result, svc = run(flow, saga_input, {("z", "action"): ["reject"]})
    assert result.status == "compensated"
    assert compensated(result) == list(reversed(ran[:-1]))


# -- a parked saga keeps its route --------------------------------------------------------------
def test_a_parked_saga_retried_from_the_store_keeps_its_route(tmp_path: Path, routed):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    first_svc = Scripted({("z", "action"): ["reject"], ("b1", "compensation"): ["error"]})
    with SagaTestEnvironment(url, services={"svc": first_svc}) as first:
        result = first.run(routed, {"qty": 5000})
        saga_id = result.saga_id
    assert (result.status, result.reason) == ("failed", "compensation_failed")
    assert compensated(result) == ["b2"]
    # another process (with a working service) re-drives it: `saga retry`
    runner = CliRunner()
    out = runner.invoke(cli.main, ["retry", saga_id, "--store", url, "--json"])
    assert out.exit_code == 1, out.output  # compensated
    doc = json.loads(out.output)
    assert doc["status"] == "compensated"
    history = doc["history"]
    assert [e["step"] for e in history if e["type"] == "compensation.succeeded"] == \
        ["b2", "b1", "a"]
    assert [e["step"] for e in history if e["type"] == "compensation.started"
            and e["step"] in ("d1", "b1", "b2", "a")] == ["b2", "b1", "b1", "a"]
    assert [e["data"]["branch"] for e in history if e["type"] == "choice.made"] == ["big"]


def test_recovery_mid_branch_keeps_the_route(tmp_path: Path):
    flow = parse_flow(ROUTED.replace(
        "- {name: b2, service: svc, action: do, compensation: undo}",
        "- {name: hold, delay: 1m}\n          - {name: b2, service: svc, action: do, "
        "compensation: undo}"), source="held.yaml")
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with SagaTestEnvironment(url, start=1_000_000.0) as first:
        saga_id = first.start(flow, {"qty": 5000})
        first.settle()
        assert first.result(saga_id).history[-1].step == "hold"
    svc = Scripted({("z", "action"): ["reject"]})
    with SagaTestEnvironment(url, start=1_000_010.0, services={"svc": svc}) as second:
        assert second.runtime.recover() == [saga_id]
        result = second.drive(saga_id)
    assert result.status == "compensated"
    assert svc.actions() == ["b2", "z"]
    assert compensated(result) == ["b2", "b1", "a"]
    assert choices_made(result) == [("pick", "big")]


# -- validation ---------------------------------------------------------------------------------
def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the ``occurrence``-th ``needle`` in ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column


BIG_WHEN = "when: {path: $.input.qty, ge: 1000}"


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    (BIG_WHEN, "when: {path: $.input.qty, like: 1000}", "like",
     "unknown key 'like'"),
    (BIG_WHEN, "when: {path: $.input.qty, ge: 1000, lt: 5}", "{path: $.input.qty, ge",
     "exactly one of"),
    (BIG_WHEN, "when: {path: $.input.qty}", "{path: $.input.qty}", "exactly one of"),
    (BIG_WHEN, "when: {path: $.input.qty, in: DE}", "DE", "in takes a list"),
    (BIG_WHEN, "when: {path: $.input.qty, exists: 1}", "1}", "exists takes true or false"),
    (BIG_WHEN, "when: {path: $.input.qty, gt: [1]}", "[1]", "compares with a number or a text"),
    (BIG_WHEN, "when: {path: $.steps.z.out, eq: 1}", "$.steps.z.out",
     "not a step before this one"),
    (BIG_WHEN, "when: {path: $.steps.b1.out, eq: 1}", "$.steps.b1.out",
     "not a step before this one"),
    (BIG_WHEN, "when: {path: $.steps.nope.out, eq: 1}", "$.steps.nope.out",
     "not a step before this one"),
    (BIG_WHEN, "when: {path: input.qty, eq: 1}", "input.qty", "path must be a path"),
    (BIG_WHEN, "when: {all: []}", "[]", "non-empty list of conditions"),
    (BIG_WHEN, "when: [1]", "[1]", "a condition must be a mapping"),
    ("- {name: b2, service: svc, action: do, compensation: undo}",
     "- {name: b2, service: svc, action: do, pivot: true}", "true", "must be a top-level step"),
    ("name: tiny", "name: big", "big", "duplicate branch name 'big'"),
    ("name: tiny", "name: default", "default", "duplicate branch name 'default'"),
    ("- {name: d1, service: svc", "- {name: a, service: svc", "a, service: svc",
     "duplicate step name 'a'"),
])
def test_a_malformed_choice_is_refused_with_its_line_and_column(old, new, needle, message):
    assert old in ROUTED
    text = ROUTED.replace(old, new, 1)
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="bad.yaml")
    errors = caught.value.errors
    found = [e for e in errors if message in e.message]
    assert found, [e.format() for e in errors]
    # the second occurrence when the needle is also in the text before the change
    occurrence = 2 if needle in ("big", "a, service: svc", "default") else 1
    assert (found[0].line, found[0].column) == position(text, needle, occurrence), \
        found[0].format()


def test_an_empty_choice_list_is_refused_where_it_is_written():
    text = textwrap.dedent("""\
        saga: empty
        services: {svc: tests.support:Scripted}
        steps:
          - {name: a, service: svc, action: do, effects: none}
          - name: pick
            choice: []
        """)
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="empty.yaml")
    (error,) = [e for e in caught.value.errors if "non-empty list of branches" in e.message]
    assert (error.line, error.column) == position(text, "[]")


def test_a_choice_without_a_when_is_refused():
    text = ROUTED.replace("        when: {path: $.input.qty, lt: 10}\n", "")
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="bad.yaml")
    assert any("'when'" in e.message for e in caught.value.errors), \
        [e.format() for e in caught.value.errors]


def test_saga_validate_reports_choice_errors_with_positions(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    text = ROUTED.replace(BIG_WHEN, "when: {path: $.input.qty, in: DE}")
    path.write_text(text)
    out = CliRunner().invoke(cli.main, ["validate", str(path)])
    assert out.exit_code == 2
    line, column = position(text, "DE")
    assert f"bad.yaml:{line}:{column}:" in out.output and "in takes a list" in out.output
    path.write_text(ROUTED)
    assert CliRunner().invoke(cli.main, ["validate", str(path)]).exit_code == 0


def _many_choices(count: int) -> str:
    lines = ["saga: many_routes", "services:", "  s: tests.flow_support:TripDesk", "steps:"]
    for i in range(count):
        lines += [f"  - name: c{i}", "    choice:",
                  f"      - when: {{path: $.input.x, eq: {i}}}", "        steps:",
                  f"          - {{name: s{i}, service: s, action: do, compensation: undo}}"]
    return "\n".join(lines) + "\n"


def test_validate_rejects_a_flow_with_more_routes_than_the_compiler_takes(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(_many_choices(11))
    result = CliRunner().invoke(cli.main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    planned = CliRunner().invoke(cli.main, ["plan", str(path)])
    assert planned.exit_code == 2, planned.output


# -- graph and plan -----------------------------------------------------------------------------
def test_saga_graph_draws_the_choice_and_its_conditions(tmp_path: Path):
    path = tmp_path / "routed.yaml"
    path.write_text(ROUTED)
    runner = CliRunner()
    out = runner.invoke(cli.main, ["graph", str(path)])
    assert out.exit_code == 0, out.output
    assert "<<choice>>" in out.output
    assert "pick: choose a branch" in out.output
    assert "big: $.input.qty >= 1000" in out.output
    assert "tiny: $.input.qty < 10" in out.output
    assert ": default" in out.output
    dot = runner.invoke(cli.main, ["graph", str(path), "--format", "dot"])
    assert dot.exit_code == 0 and "$.input.qty >= 1000" in dot.output
    shipped = runner.invoke(cli.main, ["graph", str(ROOT / "flows" / "order_paid_later.yaml")])
    assert shipped.exit_code == 0 and "large: $.input.qty >= 1000" in shipped.output


def test_graph_describes_combined_conditions():
    text = ROUTED.replace(BIG_WHEN, "when: {any: [{path: $.input.c, in: [DE, AT]}, "
                                    "{not: {path: $.input.vip, exists: true}}]}")
    from sagas.language.graph import to_mermaid
    drawing = to_mermaid(compile_flow(parse_flow(text, source="x.yaml")))
    assert "big: ($.input.c in ['DE', 'AT'] or not $.input.vip exists)" in drawing


def test_saga_plan_for_a_step_in_a_branch_lists_that_branch_s_compensations(tmp_path: Path,
                                                                             routed):
    compiled = compile_flow(routed)
    p = plan(compiled, "b2")
    assert [s for s, _ in p.compensations] == ["b1", "a"] and p.status == "compensated"
    assert list(p.ran) == ["a", "b1", "b2"]
    p = plan(compiled, "d1")
    assert [s for s, _ in p.compensations] == ["a"]
    assert list(p.ran) == ["a", "d1"]
    path = tmp_path / "routed.yaml"
    path.write_text(ROUTED)
    out = CliRunner().invoke(cli.main, ["plan", str(path), "--fail", "b2", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert [c["step"] for c in doc["compensations"]] == ["b1", "a"]
    text = CliRunner().invoke(cli.main, ["plan", str(path), "--fail", "b2"])
    assert "1. b1 (undo)" in text.output and "2. a (undo)" in text.output
    table = CliRunner().invoke(cli.main, ["plan", str(path)])
    assert table.exit_code == 0, table.output
    assert "d1" in table.output and "b2" in table.output


def test_a_flow_whose_choices_hold_no_step_says_so_at_its_steps():
    text = ("saga: hollow\nservices: {s: a.b:C}\nsteps:\n"
            "  - name: pick\n    choice:\n      - when: {path: $.input.n, gt: 1}\n"
            "        steps: []\n")
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="hollow.yaml")
    messages = [e.format() for e in info.value.errors]
    assert any(m.startswith("hollow.yaml:4:") and "holds no step to run" in m
               for m in messages), messages
