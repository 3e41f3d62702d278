"""One edit to a shipped flow, and an error must name the edited line.

Each mutation is made on the text of ``flows/*.yaml``, at a place found by composing the text
with PyYAML (not with the loader under test), so the test knows which line it broke. It then
checks that one of the reported errors is *at* that line — not merely that loading failed. For a
deleted required key, that line is the mapping that lost it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from sagas.errors import FlowErrors
from sagas.language.loader import parse_flow

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "flows").glob("*.yaml"))

TOP_KEYS = ("saga", "version", "description", "services", "input", "defaults", "deadline", "steps")
STEP_KEYS = ("name", "service", "action", "compensation", "input", "retry", "timeout", "pivot",
             "effects", "on_compensation_failure")
RETRY_KEYS = ("attempts", "backoff", "multiplier", "max_backoff", "jitter")
DEFAULTS_KEYS = ("retry", "timeout", "on_compensation_failure")


# -- reading the document with PyYAML -------------------------------------------------------------
def compose(text: str) -> yaml.MappingNode:
    # libyaml is ten times faster; its marks count characters like PyYAML's on ASCII text
    fast = getattr(yaml, "CSafeLoader", None) if text.isascii() else None
    node = yaml.compose(text, Loader=fast or yaml.SafeLoader)
    assert isinstance(node, yaml.MappingNode)
    return node


def entry(mapping: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if k.value == key:
            return k, v
    return None


def line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def steps_of(root: yaml.MappingNode) -> list[yaml.MappingNode]:
    """Every step mapping in document order: top-level ones, parallel blocks and choices, and
    the steps inside their branches."""
    found = entry(root, "steps")
    assert found is not None
    return list(_nested(found[1]))


def top_steps(root: yaml.MappingNode) -> list[yaml.MappingNode]:
    found = entry(root, "steps")
    assert found is not None
    return list(found[1].value)


def _nested(sequence: yaml.Node) -> Iterator[yaml.MappingNode]:
    for item in sequence.value:
        yield item
        if (block := entry(item, "parallel")) is not None:
            for _, branch in block[1].value:
                yield from _nested(branch)
        if (choice := entry(item, "choice")) is not None:
            for branch in choice[1].value:
                if (steps := entry(branch, "steps")) is not None:
                    yield from _nested(steps[1])
        if (default := entry(item, "default")) is not None:
            yield from _nested(default[1])


def step_name(step: yaml.MappingNode) -> str:
    found = entry(step, "name")
    assert found is not None
    return found[1].value


def scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for _, value in node.value:
            yield from scalars(value)


def keyword_entries(root: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node, tuple]]:
    """(key, value, allowed keys) of every flow-language keyword (not schema or payload fields)."""
    for k, v in root.value:
        yield k, v, TOP_KEYS
    if (defaults := entry(root, "defaults")) is not None:
        for k, v in defaults[1].value:
            yield k, v, DEFAULTS_KEYS
        if (retry := entry(defaults[1], "retry")) is not None:
            for k, v in retry[1].value:
                yield k, v, RETRY_KEYS
    for step in steps_of(root):
        for k, v in step.value:
            yield k, v, STEP_KEYS
        if (retry := entry(step, "retry")) is not None:
            for k, v in retry[1].value:
                yield k, v, RETRY_KEYS


def typed_scalars(root: yaml.MappingNode) -> list[yaml.ScalarNode]:
    """Scalar values whose type the loader checks: everything but step payload templates."""
    result = []
    for key, value in root.value:
        if key.value == "steps":
            for step in steps_of(root):
                for k, v in step.value:  # (a choice's conditions hold values, like payloads)
                    if k.value not in ("input", "parallel", "choice", "default"):
                        result.extend(scalars(v))
        else:
            result.extend(scalars(value))
    # an implicit null (``key:`` with nothing after it) has no text to replace
    return [s for s in result if s.end_mark.index > s.start_mark.index]


def replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def insert_line(text: str, before_line: int, content: str) -> str:
    """Insert ``content`` as a whole line so that it becomes line ``before_line`` (1-based)."""
    lines = text.splitlines(keepends=True)
    lines.insert(before_line - 1, content + "\n")
    return "".join(lines)


# -- mutations: each returns (mutated text, the line an error must name) ---------------------------
Mutation = Callable[[str, st.DataObject], tuple[str, int]]


def delete_required_key(text: str, data: st.DataObject) -> tuple[str, int]:
    root = compose(text)
    targets: list[tuple[tuple[str, ...], str]] = [((), k) for k in ("saga", "services", "steps")]
    for index, step in enumerate(steps_of(root)):
        if entry(step, "delay") is not None:
            required: tuple[str, ...] = ("name", "delay")
        elif entry(step, "wait_for") is not None:
            required = ("name", "wait_for")
        elif entry(step, "parallel") is not None:
            required = ("name",)  # (deleting a whole block leaves broken YAML)
        elif entry(step, "choice") is not None:
            required = ("name",)
        else:
            required = ("name", "service", "action")
        targets += [(("steps", str(index)), k) for k in required]
    where, key = data.draw(st.sampled_from(targets), label="delete")
    mapping = root if not where else steps_of(root)[int(where[1])]
    found = entry(mapping, key)
    assert found is not None
    mutated = replace(text, found[0].start_mark.index, found[1].end_mark.index, "")
    new_root = compose(mutated)
    lost = new_root if not where else steps_of(new_root)[int(where[1])]
    assert entry(lost, key) is None
    return mutated, line(lost)


def rename_key(text: str, data: st.DataObject) -> tuple[str, int]:
    root = compose(text)
    key, _, allowed = data.draw(st.sampled_from(list(keyword_entries(root))), label="key")
    how = data.draw(st.sampled_from(["drop-last", "suffix", "swap", "upper"]), label="how")
    old = key.value
    new = {"drop-last": old[:-1], "suffix": old + "_x", "swap": old[1] + old[0] + old[2:],
           "upper": old.upper()}[how]
    if new in allowed or not new or new == old:
        new = old + "_x"
    return replace(text, key.start_mark.index, key.end_mark.index, new), line(key)


def break_type(text: str, data: st.DataObject) -> tuple[str, int]:
    node = data.draw(st.sampled_from(typed_scalars(compose(text))), label="scalar")
    new = data.draw(st.sampled_from(["[1, 2]", "{a: 1}"]), label="as")
    return replace(text, node.start_mark.index, node.end_mark.index, new), line(node)


def duplicate_step(text: str, data: st.DataObject) -> tuple[str, int]:
    root = compose(text)
    steps = top_steps(root)
    steps_node = entry(root, "steps")[1]  # type: ignore[index]
    starts = [s.start_mark.line for s in steps]  # 0-based line of each "- name:"
    end = steps_node.end_mark.line + (1 if steps_node.end_mark.column else 0)
    bounds = [*starts, end]
    lines = text.splitlines(keepends=True)
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    i = data.draw(st.integers(0, len(steps) - 1), label="step")
    at = data.draw(st.integers(0, len(steps)), label="insert before step")
    block = lines[bounds[i]:bounds[i + 1]]
    mutated = "".join(lines[:bounds[at]] + block + lines[bounds[at]:])
    name = step_name(steps[i])
    copies = [s for s in top_steps(compose(mutated)) if step_name(s) == name]
    assert len(copies) == 2
    return mutated, line(entry(copies[1], "name")[0])  # type: ignore[index]


def point_path_forward(text: str, data: st.DataObject) -> tuple[str, int]:
    steps = steps_of(compose(text))
    candidates = []
    for index, step in enumerate(steps):
        if (payload := entry(step, "input")) is not None:
            candidates += [(index, s) for s in scalars(payload[1])
                           if isinstance(s.value, str) and s.value.startswith("$.")]
    index, node = data.draw(st.sampled_from(candidates), label="path")
    target = data.draw(st.integers(index, len(steps) - 1), label="names step")
    path = f"$.steps.{step_name(steps[target])}.some_field"
    return replace(text, node.start_mark.index, node.end_mark.index, path), line(node)


def insert_in_step(text: str, data: st.DataObject, content: str,
                   which: Callable[[int, int | None, yaml.MappingNode], bool]) -> tuple[str, int]:
    steps = steps_of(compose(text))
    pivot = next((i for i, s in enumerate(steps) if entry(s, "pivot")), None)
    choices = [i for i, s in enumerate(steps) if which(i, pivot, s)]
    index = data.draw(st.sampled_from(choices), label="step")
    name_key = entry(steps[index], "name")[0]  # type: ignore[index]
    at = line(name_key) + 1
    return insert_line(text, at, " " * name_key.start_mark.column + content), at


def add_second_pivot(text: str, data: st.DataObject) -> tuple[str, int]:
    return insert_in_step(text, data, "pivot: true", lambda i, p, s: entry(s, "pivot") is None)


def add_compensation_after_pivot(text: str, data: st.DataObject) -> tuple[str, int]:
    return insert_in_step(text, data, "compensation: undo_it",
                          lambda i, p, s: p is not None and i >= p and entry(s, "compensation")
                          is None)


def add_unknown_step_key(text: str, data: st.DataObject) -> tuple[str, int]:
    key = data.draw(st.sampled_from(["retries", "compensate", "service_name", "pivoted", "x"]))
    return insert_in_step(text, data, f"{key}: 1", lambda i, p, s: True)


def undeclared_service(text: str, data: st.DataObject) -> tuple[str, int]:
    root = compose(text)
    declared = {k.value for k, _ in entry(root, "services")[1].value}  # type: ignore[index]
    calling = [s for s in steps_of(root) if entry(s, "service") is not None]  # not delays
    step = data.draw(st.sampled_from(calling), label="step")
    node = entry(step, "service")[1]  # type: ignore[index]
    names = [n for n in ("nosuch", node.value + "s", node.value[:-1]) if n not in declared]
    name = data.draw(st.sampled_from(names), label="service")
    return replace(text, node.start_mark.index, node.end_mark.index, name), line(node)


def bad_path(text: str, data: st.DataObject) -> tuple[str, int]:
    nodes = [s for step in steps_of(compose(text)) if (p := entry(step, "input"))
             for s in scalars(p[1]) if isinstance(s.value, str) and s.value.startswith("$.")]
    node = data.draw(st.sampled_from(nodes), label="path")
    new = data.draw(st.sampled_from(["$.context.x", "$.input..x", "$input.x", "$.steps",
                                     "$.input.a b", "$."]))
    return replace(text, node.start_mark.index, node.end_mark.index, repr(new)), line(node)


MUTATIONS: dict[str, Mutation] = {
    "delete_required_key": delete_required_key,
    "rename_key": rename_key,
    "break_type": break_type,
    "duplicate_step": duplicate_step,
    "point_path_forward": point_path_forward,
    "add_second_pivot": add_second_pivot,
    "add_compensation_after_pivot": add_compensation_after_pivot,
    "add_unknown_step_key": add_unknown_step_key,
    "undeclared_service": undeclared_service,
    "bad_path": bad_path,
}
# Findings about two places (a second pivot, a duplicate) are at one of them and name the other
# in the message ("... the first is at line N"): for those, naming the line in the message counts.
RELATIONAL = {"add_second_pivot"}


@functools.cache
def shipped_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    parse_flow(text, source=path.name)  # the starting point is valid
    return text


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
@given(data=st.data())
def test_a_single_mutation_is_reported_at_its_line(path: Path, kind: str,
                                                   data: st.DataObject) -> None:
    original = shipped_text(path)
    mutated, expected_line = MUTATIONS[kind](original, data)
    note(f"{kind}: expect an error at line {expected_line}\n" + "".join(
        f"{n:3} {text}" for n, text in enumerate(mutated.splitlines(keepends=True), 1)))
    with pytest.raises(FlowErrors) as info:
        parse_flow(mutated, source=path.name)
    errors = info.value.errors
    note("\n".join(e.format() for e in errors))
    at_line = [e for e in errors if e.line == expected_line]
    if not at_line and kind in RELATIONAL:
        at_line = [e for e in errors if re.search(rf"\bline {expected_line}\b", e.message)]
    assert at_line, (f"{kind}: no error names line {expected_line}:\n"
                     + "\n".join(e.format() for e in errors))
