"""Inputs that reach a flow's routes: the happy path, each choice branch, each business "no".

Without example inputs, ``saga test`` cannot know that an order's ``sku`` must be one the
inventory stocks, or that a charge over the card limit is declined. It finds out the way a
fuzzer with a dictionary does:

1. **Values.** For each field of the input schema: its ``const``/``enum``/``examples``/
   ``default``, its bounds (``minimum``, ``maximum`` and their neighbours), the values the
   flow's choice conditions compare it with (and their neighbours), and the constants the
   services are written with (their module's and handlers' literals, and the keys and values of
   a fresh service's state: ``{"widget": 1_000_000}`` gives ``"widget"``, ``1000000`` and
   ``1000001``), each kept only where the schema allows it.
2. **Bases.** The simplest input the schema allows, and a few drawn from it by
   ``hypothesis-jsonschema``.
3. **Coverage-guided search.** Each candidate runs once without faults; its *route* is what the
   saga did (the branches its choices took, how it ended, and which step said no first). An
   input that reaches a route not seen before is kept, and every one-field change of it to one
   of the values above becomes a candidate in turn, until no candidate is left or the budget of
   runs is spent.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import STEP_FAILED
from ..language.model import Choice, Flow
from ..language.service_classes import import_service
from ._guard import current_watch
from ._harness import HarnessRun, Schedule, run_schedule

__all__ = ["Route", "explore_routes", "field_values", "mutants", "route_of", "service_constants"]

_WORD = re.compile(r"^[\w.:@/+-]{1,64}$")
MAX_VALUES = 200  # per field
DRAWN_BASES = 12


@dataclass
class Route:
    """One way through the flow, with an input that takes it and its run without faults."""

    input: Any
    signature: tuple[Any, ...]
    baseline: HarnessRun

    def describe(self) -> str:
        return describe_signature(self.signature)


def route_of(run: HarnessRun) -> tuple[Any, ...]:
    """What a run did, as far as reaching code goes: the branches its choices took, how it
    (first) ended, and the first step that said no (with how)."""
    first_no = next(((e.step, e.data.get("kind")) for e in run.events
                     if e.type == STEP_FAILED), None)
    return (run.route(), run.first_status, run.first_reason, first_no)


def describe_signature(signature: tuple[Any, ...]) -> str:
    branches, status, reason, first_no = signature
    text = status + (f" ({reason})" if reason else "")
    if first_no is not None:
        text += f" after {first_no[0]} {'rejected' if first_no[1] == 'rejected' else 'failed'}"
    if branches:
        text = f"via {' > '.join(branches)}: {text}"
    return text


# -- values ---------------------------------------------------------------------------------------

def _leaves(schema: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """The fields of an object schema, with their schemas: nested objects' fields, and the
    fields of an array's first item (path element 0), included."""
    if not isinstance(schema, Mapping) or len(path) > 6:
        return
    properties = dict(schema.get("properties") or {})
    for name in schema.get("required") or ():
        properties.setdefault(name, {})  # required, but no schema: a field of any type
    for name, sub in properties.items():
        if not isinstance(sub, Mapping):
            continue
        items = sub.get("items")
        if isinstance(sub.get("properties"), Mapping):
            yield from _leaves(sub, (*path, str(name)))
        elif sub.get("type") == "array" and isinstance(items, Mapping) \
                and isinstance(items.get("properties"), Mapping):
            yield from _leaves(items, (*path, str(name), 0))
        else:
            yield (*path, str(name)), sub


def _conditions(sequence: Sequence[Any]) -> Iterator[Any]:
    for item in sequence:
        if isinstance(item, Choice):
            for branch in item.branches:
                if branch.when is not None:
                    yield from _flatten(branch.when)
                yield from _conditions(branch.steps)


def _flatten(condition: Any) -> Iterator[Any]:
    if condition.op in ("all", "any", "not"):
        for operand in condition.operands:
            yield from _flatten(operand)
    else:
        yield condition


def _satisfying(condition: Any, limit: int = 8) -> list[dict[tuple[str, ...], Any]]:
    """Assignments of input fields (by path) that make ``condition`` hold, as far as one can
    tell without solving: every operand of ``all`` at once, each of ``any`` on its own."""
    op = condition.op
    if op == "all":
        combined: list[dict[tuple[str, ...], Any]] = [{}]
        for operand in condition.operands:
            options = _satisfying(operand, limit) or [{}]
            combined = [{**a, **b} for a in combined for b in options][:limit]
        return combined
    if op == "any":
        return [a for operand in condition.operands for a in _satisfying(operand, limit)][:limit]
    path = condition.path or ""
    if op == "not" or not path.startswith("$.input."):
        return []
    key = tuple(path[len("$.input."):].split("."))
    value = condition.value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if op in ("eq", "ge", "le"):
        return [{key: value}]
    if op == "in":
        return [{key: option} for option in list(value)[:limit]]
    if op == "gt":
        return [{key: value + 1 if number else f"{value}z"}]
    if op == "lt" and number:
        return [{key: value - 1}]
    return []


def branch_assignments(flow: Flow) -> list[dict[tuple[str, ...], Any]]:
    """For each branch of each choice, input fields set so that its condition holds."""
    found: list[dict[tuple[str, ...], Any]] = []

    def walk(sequence: Sequence[Any]) -> None:
        for item in sequence:
            if isinstance(item, Choice):
                for branch in item.branches:
                    if branch.when is not None:
                        found.extend(_satisfying(branch.when))
                    walk(branch.steps)

    walk(flow.sequence)
    return found


def _neighbours(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [value, not value]
    if isinstance(value, int):
        return [value, value + 1, value - 1]
    if isinstance(value, float) and math.isfinite(value):
        return [value, value + 1, value - 1, value + 0.01, value - 0.01]
    return [value]


def _literals(obj: Any, out: list[Any], depth: int = 0) -> None:
    """Scalars inside a (possibly nested) constant: dict keys and values, list items."""
    if depth > 4 or len(out) > 2000:
        return
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        if (isinstance(obj, int) or math.isfinite(obj)) and abs(obj) <= 10**15:
            out.append(obj)
    elif isinstance(obj, str):
        if _WORD.match(obj):
            out.append(obj)
    elif isinstance(obj, Mapping):
        for key, value in list(obj.items())[:500]:
            _literals(key, out, depth + 1)
            _literals(value, out, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in list(obj)[:500]:
            _literals(item, out, depth + 1)


def _code_constants(code: types.CodeType, out: list[Any]) -> None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_constants(const, out)
        else:
            _literals(const, out)


def service_constants(flow: Flow) -> list[Any]:
    """The literals the flow's services are written with, and a fresh instance's state."""
    out: list[Any] = []
    seen: set[str] = set()
    for spec in flow.services.values():
        if spec.import_path in seen:
            continue
        seen.add(spec.import_path)
        try:
            cls = import_service(spec.import_path)
        except Exception:
            continue
        module = __import__(cls.__module__, fromlist=["_"])
        for name, value in vars(module).items():
            if not name.startswith("__") and not callable(value) \
                    and not isinstance(value, types.ModuleType):
                _literals(value, out)
        for klass in cls.__mro__:
            if klass.__module__ in ("actors._service", "builtins"):
                continue
            for attr in vars(klass).values():
                function = getattr(attr, "__func__", attr)
                code = getattr(function, "__code__", None)
                if isinstance(code, types.CodeType):
                    _code_constants(code, out)
        watch = current_watch()
        try:
            if watch is not None:
                watch.enter(f"creating {spec.import_path}")
            instance = cls()
            _literals(vars(instance), out)
            if watch is not None:
                watch.enter(f"{spec.import_path}.snapshot()")
            _literals(instance.snapshot(), out)
        except KeyboardInterrupt:
            raise
        except BaseException:  # a constructor or snapshot that fails: found by the runs
            continue
    return out


def field_values(flow: Flow, constants: Sequence[Any] = ()) -> dict[tuple[Any, ...], list[Any]]:
    """Candidate values per input field, most telling first, each kept once."""
    schema = flow.input_schema or {}
    compared: dict[tuple[Any, ...], list[Any]] = {}
    for condition in _conditions(flow.sequence):
        path = condition.path or ""
        if not path.startswith("$.input."):
            continue
        key = tuple(path[len("$.input."):].split("."))
        options = list(condition.value) if condition.op == "in" else [condition.value]
        for option in options:
            compared.setdefault(key, []).extend(_neighbours(option))
    values: dict[tuple[Any, ...], list[Any]] = {}
    for path, sub in _leaves(schema):
        if not isinstance(sub, Mapping):
            continue
        found: list[Any] = []
        for word in ("const", "default"):
            if word in sub:
                found.append(sub[word])
        for word in ("enum", "examples"):
            if isinstance(sub.get(word), list):
                found.extend(sub[word])
        found.extend(compared.get(path, []))
        for word in ("minimum", "maximum"):
            if isinstance(sub.get(word), (int, float)):
                found.extend(_neighbours(sub[word]))
        for word in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(sub.get(word), (int, float)):
                found.extend(_neighbours(sub[word]))
        found.extend([0, 1, -1, "", True, False])
        for constant in constants:
            found.extend(_neighbours(constant))
        kept: list[Any] = []
        seen: set[str] = set()
        fits = _checker(sub)
        for value in found:
            text = json.dumps(value, sort_keys=True, default=str)
            if text not in seen and fits(value):
                seen.add(text)
                kept.append(value)
            if len(kept) >= MAX_VALUES:
                break
        values[path] = kept
    return values


def _checker(schema: Mapping[str, Any]) -> Callable[[Any], bool]:
    """Whether a value fits a field's schema (a schema that cannot be checked fits nothing)."""
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(dict(schema),
                                                  default=jsonschema.Draft202012Validator)
        validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)
    except Exception:
        return lambda value: False

    def fits(value: Any) -> bool:
        try:
            return bool(validator.is_valid(value))
        except Exception:
            return False

    return fits


# -- bases ----------------------------------------------------------------------------------------

def simplest(schema: Any) -> Any:
    """A plain instance of a (common) JSON Schema: required and optional fields filled with
    their first example, a small number (2 where the bounds allow), or a short text. May not be
    valid for exotic schemas (the caller checks)."""
    if not isinstance(schema, Mapping):
        return {}
    for word in ("const", "default"):
        if word in schema:
            return schema[word]
    for word in ("enum", "examples"):
        if isinstance(schema.get(word), list) and schema[word]:
            return schema[word][0]
    for word in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(word), list) and schema[word]:
            return simplest(schema[word][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object" or (kind is None and ("properties" in schema or "required" in schema)):
        props = dict(schema.get("properties") or {})
        for name in schema.get("required") or ():
            props.setdefault(name, {"type": "string"})  # required, nothing said: a text
        return {name: simplest(sub) for name, sub in props.items()}
    if kind == "array":  # one item at least, where allowed: an empty list hides the items' effects
        count = max(int(schema.get("minItems", 0)), min(1, int(schema.get("maxItems", 1))))
        return [simplest(schema.get("items", {})) for _ in range(count)]
    if kind in ("integer", "number"):
        # small but not degenerate: an effect of 0 (or 1) hides a bug that applies it twice
        value: Any = 2
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        if "exclusiveMaximum" in schema:
            value = min(value, schema["exclusiveMaximum"] - 1)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "string":
        return "a" * max(int(schema.get("minLength", 1)), 1)
    return {}


def drawn_inputs(flow: Flow, count: int, seed: int) -> list[Any]:
    """``count`` inputs drawn from the flow's input schema by hypothesis-jsonschema."""
    if flow.input_schema is None or count <= 0:
        return []
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis_jsonschema import from_schema

    drawn: list[Any] = []

    @settings(max_examples=count, database=None, deadline=None, verbosity=Verbosity.quiet,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(from_schema(_closed(flow.input_schema)))
    def collect(value: Any) -> None:
        drawn.append(value)

    try:
        collect()
    except Exception:  # a schema hypothesis-jsonschema cannot draw from: no drawn bases
        return drawn
    return drawn


def _closed(schema: Any) -> Any:
    """``schema`` with objects that do not say otherwise closed to extra properties: drawing
    large made-up extra fields is slow, and no route depends on a field the flow never reads."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if isinstance(closed.get("properties"), Mapping) and "additionalProperties" not in closed \
            and "patternProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def mutants(value: Any, values: Mapping[tuple[Any, ...], Sequence[Any]]) -> list[Any]:
    """Every one-field change of ``value`` to one of ``values`` (by field path)."""
    found = []
    for path, options in values.items():
        for option in options:
            mutant = _set(value, path, option)
            if mutant is not None and mutant != value:
                found.append(mutant)
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``document`` with the field at ``path`` set to ``value`` (None: no such
    place)."""
    copy = json.loads(json.dumps(document))
    node = copy
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or not node:
                return None
            node = node[part]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return None
    if not isinstance(node, dict):
        return None
    node[path[-1]] = value
    return copy


# -- the search -----------------------------------------------------------------------------------

def explore_routes(flow: Flow, *, services: Mapping[str, Any] | None = None,
                   examples: Sequence[Any] = (), seed: int = 0, budget: int = 1500,
                   handler_timeout: float | None = None,
                   on_run: Callable[[HarnessRun], None] | None = None) -> list[Route]:
    """The routes the inputs reach, each with the first input found to take it.

    With ``examples``, those inputs are the routes (one each, in order; duplicates dropped).
    Without, inputs are searched for (see the module's docstring) within ``budget`` runs.
    ``on_run`` sees every run (``saga test`` checks each one's invariants there).
    """
    from ..engine.inputs import validate_input

    def run(value: Any) -> HarnessRun:
        result = run_schedule(flow, value, Schedule(), services=services, seed=seed,
                              handler_timeout=handler_timeout)
        if on_run is not None:
            on_run(result)
        return result

    routes: list[Route] = []
    if examples:
        seen_inputs: set[str] = set()
        for example in examples:
            text = json.dumps(example, sort_keys=True)
            if text not in seen_inputs:
                seen_inputs.add(text)
                baseline = run(example)
                routes.append(Route(example, route_of(baseline), baseline))
        return routes

    def valid(value: Any) -> bool:
        try:
            validate_input(flow, value)
        except Exception:
            return False
        return True

    schema = flow.input_schema
    bases = [simplest(schema)] if schema is not None else [{}]
    bases += drawn_inputs(flow, DRAWN_BASES, seed)
    watch = current_watch()
    if watch is not None:  # service constructors run here too: a hang is found like any other
        watch.enter(f"reading the constants of {flow.name}'s services")
    values = field_values(flow, service_constants(flow)) if schema is not None else {}
    if watch is not None:
        watch.leave()
    assignments = branch_assignments(flow)

    def steered(value: Any) -> list[Any]:
        """``value`` changed so that each choice branch's whole condition holds."""
        out = []
        for assignment in assignments:
            changed: Any = value
            for path, option in assignment.items():
                changed = _set(changed, path, option) if changed is not None else None
            if changed is not None and changed != value:
                out.append(changed)
        return out

    queue: list[Any] = [b for b in bases if valid(b)]
    queue += [s for b in list(queue) for s in steered(b) if valid(s)]
    tried: set[str] = set()
    found: dict[tuple[Any, ...], Route] = {}
    runs = 0
    while queue and runs < budget:
        candidate = queue.pop(0)
        text = json.dumps(candidate, sort_keys=True)
        if text in tried:
            continue
        tried.add(text)
        baseline = run(candidate)
        runs += 1
        signature = route_of(baseline)
        if signature in found:
            continue
        found[signature] = Route(candidate, signature, baseline)
        # a new route: every one-field change of this input is worth a try (before older ones)
        queue = [m for m in [*steered(candidate), *mutants(candidate, values)]
                 if json.dumps(m, sort_keys=True) not in tried and valid(m)] + queue
    routes = list(found.values())
    routes.sort(key=lambda r: (r.signature[1] != "completed", r.signature[1] != "compensated"))
    return routes
