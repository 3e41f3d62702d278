"""The flow loader's findings, each at its exact ``line:column`` (DESIGN.md §2).

``tests/flows/invalid/NAME.yaml`` is a flow that must be rejected; ``NAME.expect`` lists every
error it must report, one ``LINE:COL: message fragment`` per line — no more, no fewer.
``tests/flows/warnings/`` holds flows that load with exactly the listed warnings, which
``strict=True`` turns into errors at the same places.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from cli import EXIT_USAGE, exit_code_of
from sagas.errors import FlowError, FlowErrors
from sagas.language.compiler import compile_flow
from sagas.language.loader import load_flow, parse_flow

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "flows"
INVALID = sorted((CASES / "invalid").glob("*.yaml"))
WARNINGS = sorted((CASES / "warnings").glob("*.yaml"))
SHIPPED = sorted((ROOT / "flows").glob("*.yaml"))

_EXPECT = re.compile(r"^(\d+):(\d+): (.+)$")


def _expectations(case: Path) -> list[tuple[int, int, str]]:
    expect = case.with_suffix(".expect")
    assert expect.exists(), f"{case.name} has no sibling {expect.name}"
    result = []
    for raw in expect.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        match = _EXPECT.match(raw)
        assert match, f"{expect.name}: {raw!r} is not 'LINE:COL: message fragment'"
        result.append((int(match[1]), int(match[2]), match[3]))
    assert result, f"{expect.name} lists nothing"
    return result


def _match_exactly(expected: list[tuple[int, int, str]], got: list[tuple[int, int, str]],
                   shown: str) -> None:
    """Every expected finding is reported at its position, and nothing else is reported."""
    unmatched = list(got)
    missing = []
    for line, column, fragment in expected:
        hit = next((g for g in unmatched
                    if g[0] == line and g[1] == column and fragment in g[2]), None)
        if hit is None:
            missing.append(f"{line}:{column}: {fragment}")
        else:
            unmatched.remove(hit)
    extra = [f"{line}:{column}: {message}" for line, column, message in unmatched]
    assert not missing and not extra, (
        f"\nmissing: {missing}\nunexpected: {extra}\nreported:\n{shown}"
    )


def test_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID) >= 30
    orphans = sorted(p.name for p in (CASES / "invalid").glob("*.expect")
                     if not p.with_suffix(".yaml").exists())
    assert not orphans, f".expect files without a flow: {orphans}"


@pytest.mark.parametrize("case", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_flow_reports_each_error_at_its_position(case: Path) -> None:
    expected = _expectations(case)
    with pytest.raises(FlowErrors) as info:
        load_flow(case)
    exc = info.value
    errors = exc.errors
    shown = "\n".join(e.format() for e in errors)
    for error in errors:
        assert isinstance(error, FlowError)
        assert error.source == str(case)
        assert error.format().startswith(f"{case}:{error.line}:{error.column}: ")
    _match_exactly(expected, [(e.line, e.column, e.message) for e in errors], shown)
    # the exception itself is positioned at the first problem and prints every one
    assert (exc.line, exc.column) == (errors[0].line, errors[0].column)
    assert str(exc).splitlines() == [e.format() for e in errors]
    assert exit_code_of(exc) == EXIT_USAGE


@pytest.mark.parametrize("case", WARNINGS, ids=[p.stem for p in WARNINGS])
def test_warnings_are_positioned_and_strict_makes_them_errors(case: Path) -> None:
    expected = _expectations(case)
    flow = load_flow(case)
    shown = "\n".join(w.format() for w in flow.warnings)
    _match_exactly(expected, [(w.line, w.column, w.message) for w in flow.warnings], shown)
    for warning in flow.warnings:
        assert warning.format() == (f"{case}:{warning.line}:{warning.column}: warning: "
                                    f"{warning.message}")
    compile_flow(flow)  # a warning never stops a flow from compiling

    with pytest.raises(FlowErrors) as info:
        load_flow(case, strict=True)
    errors = info.value.errors
    _match_exactly(expected, [(e.line, e.column, e.message) for e in errors],
                   "\n".join(e.format() for e in errors))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_flows_are_clean_even_when_strict(path: Path) -> None:
    flow = load_flow(path, strict=True)
    assert flow.warnings == ()
    assert flow.name == path.stem
    assert flow.source == str(path)
    assert flow.definition == hashlib.sha256(path.read_bytes()).hexdigest()
    compile_flow(flow)


def test_order_inventory_model_matches_the_yaml() -> None:
    flow = load_flow(ROOT / "flows" / "order_inventory.yaml")
    assert flow.version == 1
    assert flow.description == "Reserve stock, charge, ship, notify"
    assert [s.name for s in flow.steps] == [
        "reserve_inventory", "charge_payment", "create_shipment", "notify_customer"]
    assert [s.compensation for s in flow.steps] == ["release", "refund", None, None]
    assert [s.pivot for s in flow.steps] == [False, False, True, False]
    assert flow.pivot_index == 2
    assert flow.steps[3].effects == "none"
    assert {n: s.import_path for n, s in flow.services.items()} == {
        "inventory": "flows.shop:Inventory", "payment": "flows.shop:Payment",
        "shipping": "flows.shop:Shipping", "notifications": "flows.shop:Notifications"}
    assert flow.deadline == 120
    for step in flow.steps:
        assert step.timeout == 5
        assert (step.retry.attempts, step.retry.backoff, step.retry.multiplier,
                step.retry.max_backoff, step.retry.jitter) == (3, 0.05, 2, 2, True)
        assert step.on_compensation_failure == "park"
    assert dict(flow.steps[0].input or {}) == {"sku": "$.input.sku", "qty": "$.input.qty"}
    assert flow.steps[2].input is None
    assert flow.input_schema is not None
    assert flow.input_schema["required"] == ["order_id", "sku", "qty", "amount"]


_ONE_STEP = """\
saga: demo
services:
  inventory: {class: flows.shop:Inventory, instances: 3}
steps:
  - name: reserve
    service: inventory
    action: reserve
    effects: none
    timeout: TIMEOUT
"""


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), ("1.5s", 1.5), ("3", 3),
    ("0.5", 0.5),
])
def test_durations(text: str, seconds: float) -> None:
    flow = parse_flow(_ONE_STEP.replace("TIMEOUT", text))
    assert flow.steps[0].timeout == pytest.approx(seconds)
    assert flow.services["inventory"].instances == 3


@pytest.mark.parametrize("text", ["5 minutes", "-1s", "5x", "s", "1d", "true", "[1]", "''",
                                  "-3", "0", "0ms", ".inf"])
def test_bad_durations_are_positioned_at_the_value(text: str) -> None:
    with pytest.raises(FlowErrors) as info:
        parse_flow(_ONE_STEP.replace("TIMEOUT", text), source="f.yaml")
    assert [(e.line, e.column) for e in info.value.errors] == [(9, 14)]
    assert "timeout" in info.value.errors[0].message


def test_empty_text_is_one_error_at_1_1() -> None:
    for text in ("", "\n\n", "# only a comment\n", "   "):
        with pytest.raises(FlowErrors) as info:
            parse_flow(text, source="empty.yaml")
        assert [(e.line, e.column) for e in info.value.errors] == [(1, 1)]
        assert "empty" in info.value.message


def test_load_flow_on_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    for path, fragment in ((tmp_path / "nope.yaml", "no such file"),
                           (tmp_path, "directory")):
        with pytest.raises(FlowErrors) as info:
            load_flow(path)
        assert [(e.line, e.column) for e in info.value.errors] == [(1, 1)]
        assert fragment in info.value.message
        assert info.value.source == str(path)


def test_carriage_return_line_breaks_keep_their_line_numbers() -> None:
    # YAML treats a lone CR as a line break (old Mac files): the error on the second line must
    # say line 2, as it does for LF and CRLF files.
    for newline in ("\n", "\r\n", "\r"):
        text = newline.join(["saga: demo", "services: 3", "steps: []", ""])
        with pytest.raises(FlowErrors) as info:
            parse_flow(text, source="f.yaml")
        positions = sorted((e.line, e.column) for e in info.value.errors)
        assert positions == [(2, 11), (3, 8)], (repr(newline), str(info.value))


@pytest.mark.parametrize(("text", "line", "column"), [
    ("saga: demo\x00\n", 1, 11),
    ("saga: demo\ud800\n", 1, 11),
    ("saga: demo\ndescription: a\x1bb\n", 2, 15),
], ids=["nul", "lone-surrogate", "escape"])
def test_characters_yaml_refuses_are_flow_errors(text: str, line: int, column: int) -> None:
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="f.yaml")
    assert [(e.line, e.column) for e in info.value.errors] == [(line, column)]


_RETRY = """\
saga: demo
services:
  inventory: flows.shop:Inventory
DEADLINE
steps:
  - name: reserve
    service: inventory
    action: reserve
    effects: none
    retry: RETRY
"""


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("deadline", "retry"), [
    ("", "{attempts: 5000}"),
    ("deadline: 1m", "{attempts: 5000, max_backoff: 1s}"),
    ("deadline: 1m", "{attempts: 1000000000000, multiplier: 1, max_backoff: 1s}"),
], ids=["many-attempts-uncapped", "many-attempts-deadline", "absurd-attempts-deadline"])
def test_large_attempts_neither_crash_nor_hang(deadline: str, retry: str) -> None:
    text = _RETRY.replace("DEADLINE", deadline).replace("RETRY", retry)
    try:
        parse_flow(text, source="f.yaml")
    except FlowError as exc:
        assert all(e.line == 10 for e in exc.errors), str(exc)  # if refused: at the retry
