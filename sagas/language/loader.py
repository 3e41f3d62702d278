"""Loading and validating YAML flows (DESIGN.md §2).

:func:`parse_flow` reads one flow from text and either returns a
:class:`~sagas.language.model.Flow` or raises :class:`~sagas.errors.FlowErrors` listing
**every** problem found, each at
``source:line:column``. Semantic findings (a step that cannot be undone, a deadline shorter than
the steps can take, ...) are warnings on ``Flow.warnings``; ``strict=True`` makes them errors.

Nothing here evaluates anything from the file: names are checked against patterns, and paths
are data (``$.input.x``, ``$.steps.name.field``). User code is imported only when asked:
``check_services=True`` imports each declared ``module:Class`` (through
:mod:`sagas.engine.services`, as ``saga run`` does) and checks that every ``action`` and
``compensation`` names one of its handlers.

Validation takes time linear in the size of the file (a 10,000-step flow in about a second).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import hashlib
import math
import os
import re
import urllib.parse
from collections import ChainMap
from collections.abc import Collection, Iterator, MutableMapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import jsonschema_specifications
import referencing.exceptions
import referencing.jsonschema

from ..errors import DefinitionUnavailable, FlowError, FlowErrors
from ._yaml import YNode, compose, shown_number, to_python
from .compiler import MAX_PATHS, count_routes
from .conditions import COMBINATORS, COMPARISONS, Condition
from .model import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    MAX_DURATION,
    Branch,
    Choice,
    Flow,
    FlowWarning,
    RetryPolicy,
    ServiceSpec,
    Step,
    Trigger,
    format_duration,
    parse_duration,
)
from .paths import PathError, parse_path

__all__ = ["load_flow", "parse_flow"]

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
IMPORT_PATH = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)

TOP_KEYS = ("saga", "version", "description", "services", "input", "defaults", "deadline", "steps",
            "trigger")
TRIGGER_KEYS = ("event", "id")
DEFAULTS_KEYS = ("retry", "timeout", "on_compensation_failure")
RETRY_KEYS = ("attempts", "backoff", "multiplier", "max_backoff", "jitter")
SERVICE_KEYS = ("class", "instances", "remote", "handlers")
STEP_KEYS = (
    "name", "service", "action", "compensation", "input", "retry", "timeout", "pivot", "effects",
    "on_compensation_failure", "delay", "wait_for", "choice", "parallel",
)
CHOICE_KEYS = ("name", "choice", "default")
CHOICE_BRANCH_KEYS = ("name", "when", "steps")
PARALLEL_KEYS = ("name", "parallel")
DELAY_KEYS = ("name", "delay")
WAIT_KEYS = ("name", "wait_for", "timeout")
WAIT_FOR_KEYS = ("event", "key")
COMPENSATION_FAILURE = ("park", "retry_forever")
MAX_FLOW_BYTES = 4_000_000
MAX_WHOLE = 2**63 - 1  # the largest version, count...: what a store's INTEGER holds
MAX_INSTANCES = 64  # actors (threads) in one service's pool
MAX_ATTEMPTS = 10_000  # tries of one step (each leaves events in the saga's log)
MAX_MULTIPLIER = 1_000.0  # backoff growth per attempt
MAX_SCHEMA_DEPTH = 64  # mappings and lists in the input schema (the validator recurses)
MAX_SCHEMA_VALUES = 10_000  # checking a schema costs ~0.3 ms a value

# The names a step may read the outputs of ($.steps.<name>), with where each is written: a
# branch reads through a ChainMap onto the names before it, so no branch copies them all.
_Scope = MutableMapping[str, YNode]


def load_flow(path: str | os.PathLike[str], *, strict: bool = False,
              check_services: bool = False, remote: Collection[str] = ()) -> Flow:
    """Read and validate the flow in the file at ``path`` (see :func:`parse_flow`).

    Raises :class:`FlowErrors` for an unreadable, binary, non-UTF-8 or invalid file (a missing
    file and a directory included), positioned at 1:1 where there is no better place.
    """
    source = str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise FlowErrors([FlowError("is a directory, not a flow file", source=source)])
        with p.open("rb") as handle:  # a device or pipe may never end: read one byte past
            data = handle.read(MAX_FLOW_BYTES + 1)  # the limit, at most
    except FlowErrors:
        raise
    except FileNotFoundError:
        raise FlowErrors([FlowError("no such file", source=source)]) from None
    except PermissionError:
        raise FlowErrors([FlowError("permission denied", source=source)]) from None
    except OSError as exc:
        raise FlowErrors([FlowError(f"cannot read: {exc.strerror or exc}",
                                    source=source)]) from None
    if len(data) > MAX_FLOW_BYTES:
        raise FlowErrors([FlowError(
            f"file too large for a flow (more than {MAX_FLOW_BYTES} bytes)", source=source)])
    if b"\x00" in data:
        raise FlowErrors([FlowError("binary file, not a YAML flow", source=source)])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FlowErrors([FlowError("not UTF-8 text", source=source, line=line,
                                    column=column)]) from None
    return parse_flow(text, source=source, strict=strict, check_services=check_services,
                      remote=remote)


def parse_flow(text: str, *, source: str = "<flow>", strict: bool = False,
               check_services: bool = False, remote: Collection[str] = ()) -> Flow:
    """Validate ``text`` as a flow; raise :class:`FlowErrors` with every problem found.

    ``strict`` makes warnings errors. ``check_services`` also imports every declared service
    (``module:Class``, looked up as ``saga run`` does) and checks that each step's ``action``
    and ``compensation`` is one of its handlers: an import that fails is one error at the
    service's ``module:Class``, a handler the class lacks one error at the step's ``action:``
    or ``compensation:``. This runs the services' module code; without it nothing from the
    flow is imported. Services named in ``remote`` (``"all"``: every one) are placed in
    workers and not imported.
    """
    if not isinstance(text, str):
        raise TypeError("parse_flow takes the flow's text as a str")
    with _collector_paused():
        tree, reading_errors = compose(text, source)
        checker = _Checker(source)
        checker.errors.extend(reading_errors)
        if tree is None:
            raise FlowErrors([FlowError("empty file: a flow needs at least 'saga', 'services' "
                                        "and 'steps'", source=source)])
        flow = checker.flow(tree, text)
    if check_services:
        checker.check_services(skip=frozenset(remote))
    if strict:
        for warning in checker.warnings:
            checker.errors.append(FlowError(warning.message, source=source, line=warning.line,
                                            column=warning.column))
    if checker.errors or flow is None:
        raise FlowErrors(checker.errors or [FlowError("invalid flow", source=source)])
    return flow


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a flow is read, if it was running.

    Reading allocates a few objects per YAML value, nearly all alive until the end, and
    nothing cyclic: the collector would only walk the growing heap again and again, which
    took two thirds of the time of a 10,000-step flow and made it grow faster than the flow.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Checker:
    """Collects errors and warnings while building the model from a node tree."""

    def __init__(self, source: str):
        self.source = source
        self.errors: list[FlowError] = []
        self.warnings: list[FlowWarning] = []
        self._warned: set[FlowWarning] = set()
        self._retry_nodes: dict[str, YNode | None] = {}  # step -> the retry mapping in effect
        self.declared_services: set[str] = set()
        self.service_paths: dict[str, tuple[YNode, ServiceSpec]] = {}  # its module:Class node
        self.layout: list[Any] = []
        self.flat: list[Step] = []
        self.items: dict[str, YNode] = {}  # step name -> its YAML mapping

    # -- reporting -------------------------------------------------------------------------
    def error(self, node: YNode, message: str) -> None:
        if node.broken:
            return  # already reported where it was read
        self.errors.append(FlowError(message, source=self.source, line=node.line,
                                     column=node.column))

    def warn(self, node: YNode, message: str) -> None:
        warning = FlowWarning(message, self.source, node.line, node.column)
        if warning not in self._warned:
            self._warned.add(warning)
            self.warnings.append(warning)

    # -- generic shape checks --------------------------------------------------------------
    def mapping(self, node: YNode, what: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> bool:
        """Check ``node`` is a mapping with only ``allowed`` keys and every ``required`` one."""
        if node.kind != "map":
            self.error(node, f"{what} must be a mapping, got {node.type_name}")
            return False
        for key, _ in node.items:
            if not isinstance(key.value, str) or key.value not in allowed:
                shown = key.value
                self.error(key, f"unknown key {shown!r} in {what}"
                                f"{_suggest(str(shown), allowed)}")
        present = {k.value for k, _ in node.items}
        missing = [k for k in required if k not in present]
        for key in missing:
            self.error(node, f"{what} is missing required key {key!r}")
        return True

    def identifier(self, node: YNode, what: str) -> str | None:
        value = node.value
        if node.kind != "scalar" or not isinstance(value, str):
            self.error(node, f"{what} must be a name, got {node.type_name}")
            return None
        if not IDENTIFIER.match(value):
            self.error(node, f"{what} {value!r} is not a valid name: use lowercase letters, "
                             "digits and '_', starting with a letter")
            return None
        return value

    def text(self, node: YNode, what: str) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.error(node, f"{what} must be text, got {node.type_name}")
            return None
        return node.value

    def integer(self, node: YNode, what: str, minimum: int, maximum: int = MAX_WHOLE,
                why: str = "") -> int | None:
        """A whole number in ``[minimum, maximum]``; ``why`` explains the maximum."""
        value = node.value
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{what} must be a whole number, got {node.type_name}")
            return None
        if not minimum <= value <= maximum:
            bound = f"at least {minimum}" if value < minimum else f"at most {maximum}"
            self.error(node, f"{what} must be {bound}, got {shown_number(value)}"
                             f"{' ' + why if why and value > maximum else ''}")
            return None
        return value

    def number(self, node: YNode, what: str, minimum: float, maximum: float) -> float | None:
        value = node.value
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(node, f"{what} must be a number, got {node.type_name}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.error(node, f"{what} must be a finite number, got {node.type_name}")
            return None
        if not minimum <= value <= maximum:
            bound = f"at least {minimum:g}" if value < minimum else f"at most {maximum:g}"
            self.error(node, f"{what} must be {bound}, got {shown_number(value)}")
            return None
        return float(value)

    def boolean(self, node: YNode, what: str) -> bool | None:
        if node.kind != "scalar" or not isinstance(node.value, bool):
            self.error(node, f"{what} must be true or false, got {node.type_name}")
            return None
        return node.value

    def duration(self, node: YNode, what: str, *, positive: bool = False) -> float | None:
        if node.kind != "scalar":
            self.error(node, f"{what} must be a duration like 250ms, 5s, 2m or 1h, "
                             f"got {node.type_name}")
            return None
        try:
            seconds = parse_duration(node.value)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None
        if positive and seconds <= 0:
            self.error(node, f"{what} must be longer than zero")
            return None
        return seconds

    def choice(self, node: YNode, what: str, choices: tuple[str, ...]) -> str | None:
        if node.kind != "scalar" or node.value not in choices:
            shown = node.value if node.kind == "scalar" else node.type_name
            self.error(node, f"{what} must be one of {', '.join(choices)}, got {shown!r}"
                             f"{_suggest(str(shown), choices)}")
            return None
        return node.value

    # -- the services (only when asked: this imports user code) -------------------------------
    def check_services(self, skip: frozenset[str] = frozenset()) -> None:
        """Import every declared service (but those in ``skip``; ``all`` skips every one);
        check each step's action and compensation against its handlers. Services or steps
        already in error are skipped."""
        from .service_classes import missing_handler, service_handlers  # imports actors: on demand

        handlers: dict[str, frozenset[str]] = {}
        for name, (node, spec) in self.service_paths.items():
            if name in skip or "all" in skip:
                continue
            try:
                handlers[name] = service_handlers(spec.import_path)
            except DefinitionUnavailable as exc:
                self.error(node, f"service {name!r}: {exc}")
        for step in self.flat:
            known = handlers.get(step.service)
            item = self.items.get(step.name)
            if known is None or item is None or not step.calls_service:
                continue
            for key, handler in (("action", step.action), ("compensation", step.compensation)):
                node = item.get(key)
                if handler is not None and node is not None and handler not in known:
                    path = self.service_paths[step.service][1].import_path
                    self.error(node, missing_handler(step.service, path, handler, known))

    # -- the flow --------------------------------------------------------------------------
    def flow(self, tree: YNode, text: str) -> Flow | None:
        if tree.kind != "map":
            self.error(tree, f"a flow must be a mapping with 'saga', 'services' and 'steps', "
                             f"got {tree.type_name}")
            return None
        self.mapping(tree, "the flow", TOP_KEYS, ("saga", "services", "steps"))

        name = None
        if (node := tree.get("saga")) is not None:
            name = self.identifier(node, "saga name")
        version = 1
        if (node := tree.get("version")) is not None:
            version = self.integer(node, "version", 1) or 1
        description = ""
        if (node := tree.get("description")) is not None:
            description = self.text(node, "description") or ""
        services = self.services(tree.get("services"))
        self.declared_services = set(services) | self._service_names(tree.get("services"))
        input_schema = self.input_schema(tree.get("input"))
        defaults = self.defaults(tree.get("defaults"))
        deadline = None
        deadline_node = tree.get("deadline")
        if deadline_node is not None:
            deadline = self.duration(deadline_node, "deadline", positive=True)
        steps = self.steps(tree.get("steps"), services, defaults)
        trigger = self.trigger(tree.get("trigger")) if tree.get("trigger") is not None else None

        if steps and deadline is not None and deadline_node is not None:
            worst = _worst_case(self.layout)
            if deadline < worst:
                self.warn(deadline_node,
                          f"deadline {format_duration(deadline)} is shorter than the worst case "
                          f"of the steps' timeouts, attempts and backoff "
                          f"({format_duration(worst)}): sagas with slow steps will be rolled "
                          "back by the deadline")
        if services:
            used = {step.service for step in steps}
            for service_name, (node, _) in services.items():
                if steps and service_name not in used:
                    self.warn(node, f"service {service_name!r} is declared but no step uses it")

        if self.errors or name is None or not steps:
            return None
        return Flow(
            name=name,
            version=version,
            steps=tuple(steps),
            layout=tuple(self.layout),
            trigger=trigger,
            services=MappingProxyType({n: spec for n, (_, spec) in services.items()}),
            definition=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            text=text,
            source=self.source,
            description=description,
            input_schema=input_schema,
            deadline=deadline,
            warnings=tuple(sorted(self.warnings, key=lambda w: (w.line, w.column))),
        )

    def trigger(self, node: YNode) -> Trigger | None:
        """``trigger: {event: OrderPlaced, id: $.input.order_id}``."""
        if not self.mapping(node, "trigger", TRIGGER_KEYS, TRIGGER_KEYS):
            return None
        event = id_path = None
        if (n := node.get("event")) is not None:
            if isinstance(n.value, str) and EVENT_TYPE.match(n.value):
                event = n.value
            else:
                self.error(n, f"trigger.event must be an event type like OrderPlaced (a letter, "
                              f"then letters, digits, _ . -), got {n.value!r}")
        if (n := node.get("id")) is not None:
            text = n.value if n.kind == "scalar" else None
            try:
                parts = parse_path(text) if isinstance(text, str) else None
            except PathError as exc:
                self.error(n, str(exc))
            else:
                if parts is None or parts[0] != "input" or len(parts) < 2:
                    self.error(n, "trigger.id must be a path into the event's data, which "
                                  f"becomes the saga input: $.input.<field>, got {text!r}")
                else:
                    id_path = text
        if event is None or id_path is None:
            return None
        return Trigger(event, id_path)

    def services(self, node: YNode | None) -> dict[str, tuple[YNode, ServiceSpec]]:
        result: dict[str, tuple[YNode, ServiceSpec]] = {}
        if node is None:
            return result
        if node.kind != "map":
            self.error(node, f"services must be a mapping of name to 'module:Class', "
                             f"got {node.type_name}")
            return result
        if not node.items:
            self.error(node, "services is empty: declare at least one service")
        for key, value in node.items:
            service_name = self.identifier(key, "service name")
            import_path, instances = None, 1
            path_node: YNode | None = value
            if value.kind == "map" and value.get("remote") is not None:
                spec = self.remote_service(key, value, service_name)
                if spec is not None:
                    result[service_name] = (key, spec)
                continue
            if value.kind == "map":
                path_node = None
                if value.get("handlers") is not None:
                    self.error(value.get("handlers"),
                               f"service {key.value!r}: 'handlers' declares a service without a "
                               "Python class and needs 'remote: true' (a class's handlers are "
                               "its @handles methods)")
                if self.mapping(value, f"service {key.value!r}", SERVICE_KEYS, ("class",)):
                    if (path_node := value.get("class")) is not None:
                        import_path = self.import_path(path_node)
                    if (count := value.get("instances")) is not None:
                        instances = self.integer(
                            count, "instances", 1, MAX_INSTANCES,
                            "(each instance is an actor with its own thread; a pool larger "
                            "than the machine's cores only adds threads)") or 1
            else:
                import_path = self.import_path(value)
            if service_name and import_path and path_node is not None:
                spec = ServiceSpec(service_name, import_path, instances)
                result[service_name] = (key, spec)
                self.service_paths[service_name] = (path_node, spec)
        return result

    def remote_service(self, key: YNode, value: YNode,
                       service_name: str | None) -> ServiceSpec | None:
        """``{remote: true, handlers: [charge, refund]}``: a service no Python class
        implements, served by workers elsewhere (any language: the wire protocol)."""
        what = f"service {key.value!r}"
        before = len(self.errors)
        self.mapping(value, what, SERVICE_KEYS, ("remote", "handlers"))
        flag = value.get("remote")
        if flag is not None and flag.value is not True:
            self.error(flag, f"{what}: 'remote' must be true (a service with a class is "
                             "placed remote when deployed: --remote), got "
                             f"{flag.value if flag.kind == 'scalar' else flag.type_name!r}")
        for extra in ("class", "instances"):
            if (node := value.get(extra)) is not None:
                self.error(node, f"{what}: a remote service has no '{extra}': its workers run "
                                 "it (drop 'remote: true' to run a class here, or place it "
                                 "remote when deployed: --remote)")
        handlers: list[str] = []
        node = value.get("handlers")
        if node is not None:
            if node.kind != "seq" or not node.items:
                self.error(node, f"{what}: 'handlers' must be a non-empty list of handler "
                                 f"names, got {node.type_name}")
            else:
                for item in node.items:
                    name = self.identifier(item, "handler name")
                    if name is not None:
                        if name in handlers:
                            self.error(item, f"{what}: handler {name!r} is listed twice")
                        handlers.append(name)
        if service_name is None or not handlers or len(self.errors) > before:
            return None
        return ServiceSpec(service_name, "", 1, frozenset(handlers))

    @staticmethod
    def _service_names(node: YNode | None) -> set[str]:
        if node is None or node.kind != "map":
            return set()
        return {k.value for k, _ in node.items if isinstance(k.value, str)}

    def import_path(self, node: YNode) -> str | None:
        value = node.value
        if node.kind != "scalar" or not isinstance(value, str):
            self.error(node, f"a service must be 'module:Class' or {{class: 'module:Class', "
                             f"instances: N}}, got {node.type_name}")
            return None
        if not IMPORT_PATH.match(value):
            self.error(node, f"malformed import path {value!r}: expected 'package.module:Class'")
            return None
        return value

    def input_schema(self, node: YNode | None) -> dict[str, Any] | None:
        """The input's JSON Schema: valid against its dialect's metaschema (formats such as a
        ``pattern``'s regex included), not nested too deeply for the validator, and with every
        ``$ref`` pointing into the schema itself (resolved now, offline) without a loop."""
        if node is None:
            return None
        if node.kind != "map":
            self.error(node, f"input must be a JSON Schema (a mapping), got {node.type_name}")
            return None
        depth, size = _extent(node)
        if depth > MAX_SCHEMA_DEPTH or size > MAX_SCHEMA_VALUES:
            self.error(node, f"input schema: too large for a saga's input (at most "
                             f"{MAX_SCHEMA_VALUES} values, nested at most {MAX_SCHEMA_DEPTH} "
                             f"deep; this one has {size}, {depth} deep)")
            return None
        schema = to_python(node)
        for bad in _non_json(node):
            self.error(bad, f"input schema: {bad.value!r} is not a JSON value")
        validator = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator)
        meta = validator(validator.META_SCHEMA, format_checker=validator.FORMAT_CHECKER)
        # the metaschema reaches a value by several routes: each problem once
        problems = list(dict.fromkeys((tuple(e.absolute_path), e.message)
                                      for e in meta.iter_errors(schema)))
        if not problems:
            problems = [(tuple(path), message)
                        for path, message in _reference_problems(schema, validator.META_SCHEMA)]
        for path, message in sorted(problems, key=lambda p: [str(part) for part in p[0]]):
            self.error(_node_at(node, list(path)), f"input schema: {message}")
        return None if problems else schema

    def retry(self, node: YNode, base: RetryPolicy, what: str) -> RetryPolicy:
        if not self.mapping(node, what, RETRY_KEYS):
            return base
        values: dict[str, Any] = {}
        if (n := node.get("attempts")) is not None:
            attempts = self.integer(n, "attempts", 1, MAX_ATTEMPTS,
                                    "(with max_backoff that is as good as forever)")
            if attempts is not None:
                values["attempts"] = attempts
        if (n := node.get("backoff")) is not None:
            backoff = self.duration(n, "backoff")
            if backoff is not None:
                values["backoff"] = backoff
        if (n := node.get("multiplier")) is not None:
            multiplier = self.number(n, "multiplier", 1, MAX_MULTIPLIER)
            if multiplier is not None:
                values["multiplier"] = multiplier
        if (n := node.get("max_backoff")) is not None:
            if n.kind == "scalar" and (n.value is None or n.value == "none"):
                values["max_backoff"] = None
            else:
                cap = self.duration(n, "max_backoff")
                if cap is not None:
                    values["max_backoff"] = cap
        if (n := node.get("jitter")) is not None:
            jitter = self.boolean(n, "jitter")
            if jitter is not None:
                values["jitter"] = jitter
        fields = {f: getattr(base, f) for f in RETRY_KEYS}
        fields.update(values)
        return RetryPolicy(**fields)

    def defaults(self, node: YNode | None) -> _Defaults:
        result = _Defaults()
        if node is None:
            return result
        if not self.mapping(node, "defaults", DEFAULTS_KEYS):
            return result
        if (n := node.get("retry")) is not None:
            result.retry = self.retry(n, DEFAULT_RETRY, "defaults.retry")
            result.retry_node = n
        if (n := node.get("timeout")) is not None:
            timeout = self.duration(n, "timeout", positive=True)
            if timeout is not None:
                result.timeout = timeout
        if (n := node.get("on_compensation_failure")) is not None:
            choice = self.choice(n, "on_compensation_failure", COMPENSATION_FAILURE)
            if choice is not None:
                result.on_compensation_failure = choice
        return result

    def steps(self, node: YNode | None, services: dict[str, tuple[YNode, ServiceSpec]],
              defaults: _Defaults) -> list[Step]:
        """The flow's steps, every one (those inside choices and parallel blocks too), in the
        order written; the top-level sequence with its choices is kept in ``self.layout``."""
        if node is None:
            return []
        if node.kind != "seq":
            self.error(node, f"steps must be a list of steps, got {node.type_name}")
            return []
        if not node.items:
            self.error(node, "steps is empty: a flow needs at least one step")
            return []
        self.names: dict[str, YNode] = {}  # every step, block and choice name -> its node
        self.pivot_node: YNode | None = None
        self.layout = self.sequence(node, services, defaults, {}, "top")
        if not self.flat and self.layout and not self.errors:
            self.error(node, "steps holds no step to run: its choices have none (a flow needs "
                             "at least one step)")
        routes = count_routes(self.layout)
        if routes > MAX_PATHS:
            shown = routes if routes < 10**12 else f"about 10^{int(routes.bit_length() * 0.30103)}"
            self.error(node, f"the choices make {shown} routes through the flow; at most "
                             f"{MAX_PATHS} (split the flow, or merge choices)")
        self.semantic_checks(self.flat)
        return self.flat

    def sequence(self, node: YNode, services: dict[str, tuple[YNode, ServiceSpec]],
                 defaults: _Defaults, earlier: _Scope, where: str) -> list[Any]:
        """A list of steps (``where``: "top", "choice" or "parallel" branch). Adds the names
        whose outputs later steps may read to ``earlier``."""
        result: list[Any] = []
        for index, item in enumerate(node.items):
            name_node = item.get("name") if item.kind == "map" else None
            if name_node is not None and isinstance(name_node.value, str) \
                    and IDENTIFIER.match(name_node.value):
                name = name_node.value
                if name in self.names:
                    self.error(name_node, f"duplicate step name {name!r} "
                                          f"(first at line {self.names[name].line})")
                else:
                    self.names[name] = name_node
            if item.kind == "map" and item.get("choice") is not None:
                if where == "parallel":
                    self.error(item, "a parallel branch holds plain steps only, not a choice")
                    continue
                block = self.choice_block(item, services, defaults, earlier, where)
                if block is not None:
                    result.append(block)
                continue
            if item.kind == "map" and item.get("parallel") is not None:
                if where == "parallel":
                    self.error(item, "a parallel branch holds plain steps only, not another "
                                     "parallel block")
                    continue
                step = self.parallel_block(item, services, defaults, earlier)
                if step is not None:
                    result.append(step)
                continue
            step = self.step(item, index, services, defaults, earlier)
            if name_node is not None and isinstance(name_node.value, str):
                earlier.setdefault(name_node.value, name_node)
            if step is None:
                continue
            self.items[step.name] = item
            pivot_value = item.get("pivot")
            if step.pivot:
                assert pivot_value is not None
                if where != "top":
                    self.error(pivot_value, f"the pivot {step.name!r} must be a top-level step, "
                                            f"not inside a {where}")
                elif self.pivot_node is not None:
                    self.error(pivot_value, f"a second pivot: {step.name!r}; a flow has at most "
                                            f"one (the first is at line {self.pivot_node.line})")
                else:
                    self.pivot_node = pivot_value
            if step.compensation is not None and self.pivot_node is not None:
                where_text = "the pivot" if step.pivot else "a step after the pivot"
                comp = item.get("compensation")
                assert comp is not None
                self.error(comp, f"step {step.name!r} is {where_text} and cannot have a "
                                 "compensation: after the pivot, recovery goes forward")
            if where == "parallel" and step.is_wait:
                self.error(item, f"step {step.name!r} waits for an event: a parallel branch "
                                 "cannot wait (put the wait before or after the block)")
            self.flat.append(step)
            result.append(step)
        return result

    def branch_steps(self, node: YNode, what: str, services: dict[str, tuple[YNode, ServiceSpec]],
                     defaults: _Defaults, earlier: _Scope, where: str, *,
                     allow_empty: bool) -> list[Any] | None:
        if node.kind != "seq":
            self.error(node, f"{what} must be a list of steps, got {node.type_name}")
            return None
        if not node.items and not allow_empty:
            self.error(node, f"{what} is empty: a branch needs at least one step")
            return None
        return self.sequence(node, services, defaults, earlier, where)

    def choice_block(self, item: YNode, services: dict[str, tuple[YNode, ServiceSpec]],
                     defaults: _Defaults, earlier: _Scope, where: str) -> Choice | None:
        """``{name, choice: [{name?, when, steps}, ...], default?: [steps]}``."""
        name_node = item.get("name")
        what = f"choice {name_node.value!r}" if name_node is not None and \
            isinstance(name_node.value, str) else "a choice"
        ok = self.mapping(item, what, CHOICE_KEYS, ("name", "choice"))
        name = self.identifier(name_node, "choice name") if name_node is not None else None
        spec = item.get("choice")
        assert spec is not None
        if spec.kind != "seq" or not spec.items:
            self.error(spec, f"{what}: choice must be a non-empty list of branches "
                             "({when: ..., steps: [...]})")
            return None
        visible_after: dict[str, YNode] = {}  # names the branches add
        branches: list[Branch] = []
        labels: dict[str, YNode] = {}
        for number, branch_node in enumerate(spec.items, start=1):
            if not self.mapping(branch_node, f"{what} branch {number}", CHOICE_BRANCH_KEYS,
                                ("when", "steps")):
                ok = False
                continue
            label = f"branch{number}"
            if (n := branch_node.get("name")) is not None:
                label = self.identifier(n, "branch name") or label
            if label in labels or label == "default":
                self.error(branch_node.get("name") or branch_node,
                           f"{what}: duplicate branch name {label!r}")
                ok = False
            labels[label] = branch_node
            when = None
            if (n := branch_node.get("when")) is not None:
                when = self.condition(n, earlier, name)
            steps_node = branch_node.get("steps")
            seen = ChainMap({}, earlier)  # a branch sees the names before it
            body = self.branch_steps(steps_node, f"{what} branch {label!r} steps", services,
                                     defaults, seen, where if where != "top" else "choice",
                                     allow_empty=True) if steps_node is not None else None
            visible_after.update(seen.maps[0])
            if when is None or body is None:
                ok = False
                continue
            branches.append(Branch(label, tuple(body), when, branch_node.line))
        if (n := item.get("default")) is not None:
            seen = ChainMap({}, earlier)  # a branch sees the names before it
            body = self.branch_steps(n, f"{what} default", services, defaults, seen,
                                     where if where != "top" else "choice", allow_empty=True)
            visible_after.update(seen.maps[0])
            if body is None:
                ok = False
            else:
                branches.append(Branch("default", tuple(body), None, n.line))
        else:  # no default: when no condition holds, the saga goes on after the choice
            branches.append(Branch("default", (), None, item.line))
        earlier.update(visible_after)
        if not ok or name is None:
            return None
        return Choice(name, tuple(branches), item.line)

    def condition(self, node: YNode, earlier: _Scope, step: str | None) -> Any:
        """A ``when``: ``{path: $..., <op>: value}``, or ``all``/``any`` of a list, ``not``."""
        if node.kind != "map":
            self.error(node, f"a condition must be a mapping like {{path: $.input.amount, gt: "
                             f"100}}, got {node.type_name}")
            return None
        keys = [k.value for k, _ in node.items]
        combinators = [k for k in keys if k in COMBINATORS]
        if combinators:
            if len(keys) != 1:
                self.error(node, f"a condition with {combinators[0]!r} has no other key")
                return None
            op = combinators[0]
            value = node.items[0][1]
            if op == "not":
                inner = self.condition(value, earlier, step)
                return None if inner is None else Condition("not", operands=(inner,))
            if value.kind != "seq" or not value.items:
                self.error(value, f"{op} must be a non-empty list of conditions")
                return None
            operands = [self.condition(v, earlier, step) for v in value.items]
            if any(o is None for o in operands):
                return None
            return Condition(op, operands=tuple(operands))
        if not self.mapping(node, "a condition", ("path", *COMPARISONS), ("path",)):
            return None
        ops = [k for k in keys if k in COMPARISONS]
        if len(ops) != 1:
            self.error(node, "a condition compares its path with exactly one of "
                             f"{', '.join(COMPARISONS)} (or combines with all, any, not)")
            return None
        op = ops[0]
        path_node = node.get("path")
        value_node = node.get(op)
        assert path_node is not None and value_node is not None
        if not (isinstance(path_node.value, str) and path_node.value.startswith("$")):
            self.error(path_node, f"path must be a path like $.input.amount, got "
                                  f"{path_node.value!r}")
            return None
        before = len(self.errors)
        wrapper = YNode("map", path_node.line, path_node.column,
                        items=[(YNode("scalar", path_node.line, path_node.column, "path"),
                                path_node)])
        self.payload(wrapper, earlier, step)  # the same path checks as a step's input
        if len(self.errors) != before:
            return None
        if _non_json(value_node):
            self.error(value_node, "a condition's value must be JSON")
            return None
        value = to_python(value_node)
        if op == "exists" and not isinstance(value, bool):
            self.error(value_node, "exists takes true or false")
            return None
        if op == "in" and not isinstance(value, list):
            self.error(value_node, f"in takes a list of values, got {value_node.type_name}")
            return None
        if op in ("gt", "ge", "lt", "le") and (
                isinstance(value, bool) or not isinstance(value, (int, float, str))):
            self.error(value_node, f"{op} compares with a number or a text, got "
                                   f"{value_node.type_name}")
            return None
        return Condition(op, path_node.value, tuple(value) if op == "in" else value)

    def parallel_block(self, item: YNode, services: dict[str, tuple[YNode, ServiceSpec]],
                       defaults: _Defaults, earlier: _Scope) -> Step | None:
        """``{name, parallel: {branch: [steps], ...}}``: at least two non-empty branches."""
        name_node = item.get("name")
        what = f"parallel block {name_node.value!r}" if name_node is not None and \
            isinstance(name_node.value, str) else "a parallel block"
        ok = self.mapping(item, what, PARALLEL_KEYS, ("name", "parallel"))
        name = self.identifier(name_node, "parallel block name") if name_node is not None \
            else None
        if self.pivot_node is not None:
            self.error(item, f"{what} comes after the pivot: after the pivot recovery goes "
                             "forward, and parallel blocks run before it")
            ok = False
        spec = item.get("parallel")
        assert spec is not None
        if spec.kind != "map" or len(spec.items) < 2:
            self.error(spec, f"{what}: parallel must map two or more branch names to their "
                             "steps")
            return None
        visible_after: dict[str, YNode] = {}  # names the branches add
        branches: list[Branch] = []
        for key, value in spec.items:
            label = self.identifier(key, "branch name")
            seen = ChainMap({}, earlier)  # a branch sees the names before it
            body = self.branch_steps(value, f"{what} branch {key.value!r}", services, defaults,
                                     seen, "parallel", allow_empty=False)
            visible_after.update(seen.maps[0])
            if label is None or body is None:
                ok = False
                continue
            branches.append(Branch(label, tuple(body), None, key.line))
        earlier.update(visible_after)
        if name_node is not None and name is not None:
            earlier.setdefault(name, name_node)
        if not ok or name is None:
            return None
        block = Step(name=name, service="", action="", timeout=MAX_DURATION, effects="none",
                     retry=RetryPolicy(attempts=1, backoff=0.0, jitter=False),
                     branches=tuple(branches), line=item.line)
        self.items[name] = item
        index = len(self.flat)
        self.flat.insert(index - sum(len(b.steps) for b in branches), block)
        return block

    def step(self, item: YNode, index: int, services: dict[str, tuple[YNode, ServiceSpec]],
             defaults: _Defaults, earlier: _Scope) -> Step | None:
        what = f"step {index + 1}"
        if item.kind == "map" and (n := item.get("name")) is not None and \
                isinstance(n.value, str):
            what = f"step {n.value!r}"
        if item.kind == "map" and item.get("delay") is not None:
            return self.delay_step(item, what)
        if item.kind == "map" and item.get("wait_for") is not None:
            return self.wait_step(item, what, defaults, earlier)
        if not self.mapping(item, what, STEP_KEYS, ("name", "service", "action")):
            return None
        ok = True
        name = service = action = compensation = None
        if (n := item.get("name")) is not None:
            name = self.identifier(n, "step name")
        if (n := item.get("service")) is not None:
            service = self.identifier(n, "service")
            if service is not None and service not in self.declared_services:
                declared = sorted(self.declared_services)
                self.error(n, f"step uses undeclared service {service!r}"
                              f"{_suggest(service, declared)}" +
                              ("" if _suggest(service, declared) or not declared
                               else f" (declared: {', '.join(declared)})"))
                ok = False
        if (n := item.get("action")) is not None:
            action = self.identifier(n, "action")
        if (n := item.get("compensation")) is not None:
            compensation = self.identifier(n, "compensation")
            ok = ok and compensation is not None
        declared = services.get(service)[1] if service in services else None  # type: ignore
        if declared is not None and declared.handlers is not None:  # checked without importing
            for key, handler in (("action", action), ("compensation", compensation)):
                if handler is not None and handler not in declared.handlers:
                    listed = ", ".join(sorted(declared.handlers))
                    self.error(item.get(key), f"remote service {service!r} declares no handler "
                                              f"{handler!r}{_suggest(handler, listed.split(', '))}"
                                              f" (its handlers: {listed})")
                    ok = False
        payload = None
        if (n := item.get("input")) is not None:
            payload = self.payload(n, earlier, name)
        retry = defaults.retry
        retry_node = defaults.retry_node
        if (n := item.get("retry")) is not None:
            retry = self.retry(n, defaults.retry, f"{what}.retry")
            retry_node = n
        timeout = defaults.timeout
        if (n := item.get("timeout")) is not None:
            timeout = self.duration(n, "timeout", positive=True) or timeout
        pivot = False
        if (n := item.get("pivot")) is not None:
            pivot = bool(self.boolean(n, "pivot"))
        effects = None
        if (n := item.get("effects")) is not None:
            if n.kind == "scalar" and (n.value is None or n.value == "none"):
                effects = "none"
            else:
                self.error(n, f"effects can only be 'none' (a step without side effects), "
                              f"got {n.type_name}")
        on_failure = defaults.on_compensation_failure
        if (n := item.get("on_compensation_failure")) is not None:
            on_failure = self.choice(n, "on_compensation_failure", COMPENSATION_FAILURE) \
                or on_failure
        if not (ok and name and service and action):
            return None
        step = Step(name=name, service=service, action=action, compensation=compensation,
                    input=payload, retry=retry, timeout=timeout, pivot=pivot, effects=effects,
                    on_compensation_failure=on_failure, line=item.line)
        self._retry_nodes[name] = retry_node
        return step

    def special_step(self, item: YNode, what: str, allowed: tuple[str, ...],
                     refusal: str) -> tuple[bool, str | None]:
        """The keys and name of a step that calls no service (a delay, a wait): whether it has
        only ``allowed`` keys (``refusal``, with ``{key}`` in it, says why a service step's key
        is not one), and its name (None when missing or malformed)."""
        ok = True
        for key, _ in item.items:
            if key.value in allowed:
                continue
            ok = False
            if key.value in STEP_KEYS:
                self.error(key, f"{what} {refusal.format(key=repr(key.value))}")
            else:
                self.error(key, f"unknown key {key.value!r} in {what}"
                                f"{_suggest(str(key.value), allowed)}")
        name_node = item.get("name")
        if name_node is None:
            self.error(item, f"{what} is missing required key 'name'")
            return ok, None
        return ok, self.identifier(name_node, "step name")

    def delay_step(self, item: YNode, what: str) -> Step | None:
        """``{name: ..., delay: 10s}``: a timed pause, and nothing else."""
        ok, name = self.special_step(
            item, what, DELAY_KEYS, "is a delay: it has only a name and a delay, not {key} (a "
                                    "pause calls no service and undoes nothing)")
        delay_node = item.get("delay")
        seconds = self.duration(delay_node, "delay", positive=True) \
            if delay_node is not None else None
        if not ok or name is None or seconds is None:
            return None
        return Step(name=name, service="", action="", timeout=seconds, effects="none",
                    delay=seconds, line=item.line)

    def wait_step(self, item: YNode, what: str, defaults: _Defaults,
                  earlier: _Scope) -> Step | None:
        """``{name, wait_for: {event: PaymentConfirmed, key: $.input.order_id}, timeout}``."""
        ok, name = self.special_step(
            item, what, WAIT_KEYS, "waits for an event: it has only a name, wait_for and a "
                                   "timeout, not {key} (a wait calls no service)")
        spec = item.get("wait_for")
        assert spec is not None
        event = key_value = None
        if self.mapping(spec, f"{what}.wait_for", WAIT_FOR_KEYS, WAIT_FOR_KEYS):
            if (n := spec.get("event")) is not None:
                if isinstance(n.value, str) and EVENT_TYPE.match(n.value):
                    event = n.value
                else:
                    self.error(n, f"wait_for.event must be an event type like PaymentConfirmed "
                                  f"(a letter, then letters, digits, _ . -), got {n.value!r}")
            if (n := spec.get("key")) is not None:
                key_value = self.correlation_key(n, earlier, name)
        else:
            ok = False
        timeout = defaults.timeout
        if (n := item.get("timeout")) is not None:
            timeout = self.duration(n, "timeout", positive=True) or timeout
        if not ok or name is None or event is None or key_value is None:
            return None
        return Step(name=name, service="", action="", timeout=timeout, effects="none",
                    retry=RetryPolicy(attempts=1, backoff=0.0, jitter=False),
                    wait_event=event, wait_key=key_value, line=item.line)

    def correlation_key(self, node: YNode, earlier: _Scope,
                        step: str | None) -> Any:
        """A wait's key: a path into the context ($.input..., $.steps.<earlier>...) or a text."""
        if node.kind != "scalar" or node.value is None or isinstance(node.value, bool):
            self.error(node, f"wait_for.key must be a path like $.input.order_id or a text, "
                             f"got {node.type_name}")
            return None
        if isinstance(node.value, str) and node.value.startswith("$"):
            before = len(self.errors)
            wrapper = YNode("map", node.line, node.column,
                            items=[(YNode("scalar", node.line, node.column, "key"), node)])
            self.payload(wrapper, earlier, step)  # the same path checks as a step's input
            return node.value if len(self.errors) == before else None
        return str(node.value)

    def payload(self, node: YNode, earlier: _Scope, step: str | None) -> Any:
        if node.kind != "map":
            self.error(node, f"a step's input must be a mapping of field to value or path "
                             f"($.input..., $.steps...), got {node.type_name}")
            return None

        def walk(n: YNode) -> Any:
            if n.kind == "map":
                return MappingProxyType({k.value: walk(v) for k, v in n.items})
            if n.kind == "seq":
                return tuple(walk(i) for i in n.items)
            if _non_json(n):
                self.error(n, f"{n.value!r} is not a JSON value")
            if isinstance(n.value, str) and n.value.startswith("$"):
                try:
                    path = parse_path(n.value)
                except PathError as exc:
                    self.error(n, str(exc))
                    return n.value
                if path[0] == "steps":
                    if len(path) < 2:
                        self.error(n, "path '$.steps' must name a step: $.steps.<step>.<field>")
                    elif path[1] not in earlier:
                        if path[1] == step:
                            self.error(n, f"path {n.value!r} names this step itself; a step can "
                                          "only use the outputs of steps before it")
                        else:
                            self.error(n, f"path {n.value!r} names {path[1]!r}, which is not a "
                                          "step before this one")
            return n.value

        return walk(node)

    def semantic_checks(self, steps: list[Step]) -> None:
        pivot_index = next((i for i, s in enumerate(steps) if s.pivot), None)
        for index, step in enumerate(steps):
            item = self.items.get(step.name)
            if item is None:
                continue
            if not step.calls_service:
                continue
            before_pivot = pivot_index is None or index < pivot_index
            if before_pivot and step.compensation is None and step.effects != "none":
                self.warn(item, f"step {step.name!r} has no compensation and is not declared "
                                "'effects: none': if a later step fails, its effect stays")
            if pivot_index is not None and index > pivot_index and step.retry.attempts == 1:
                retry_node = item.get("retry") or item
                self.warn(retry_node, f"step {step.name!r} comes after the pivot with a single "
                                      "attempt: forward recovery needs retries")
            retry_node = self._retry_nodes.get(step.name)
            policy = step.retry
            if (retry_node is not None and policy.max_backoff is None and policy.multiplier > 1
                    and policy.attempts > 2):
                last = policy.delay(policy.attempts - 1)
                self.warn(retry_node, f"retry policy has no cap: add max_backoff (without one the "
                                      f"last delay grows to {format_duration(last)})")


class _Defaults:
    def __init__(self) -> None:
        self.retry: RetryPolicy = DEFAULT_RETRY
        self.retry_node: YNode | None = None
        self.timeout: float = DEFAULT_TIMEOUT
        self.on_compensation_failure: str = "park"


def _worst_case(sequence: list[Any] | tuple[Any, ...]) -> float:
    """The longest the forward phase of ``sequence`` can take: the steps one after another, a
    parallel block as long as its longest branch, a choice as long as its longest branch."""
    total = 0.0
    for node in sequence:
        if isinstance(node, Choice):
            total += max((_worst_case(b.steps) for b in node.branches), default=0.0)
        elif node.is_parallel:
            total += max(_worst_case(b.steps) for b in node.branches)
        else:
            total += node.retry.worst_case(node.timeout)
    return total


def _non_json(node: YNode) -> list[YNode]:
    """Scalars that JSON cannot hold (NaN, infinity, dates, bytes...)."""
    if node.kind in ("map", "seq"):
        children = [v for _, v in node.items] if node.kind == "map" else node.items
        return [bad for child in children for bad in _non_json(child)]
    value = node.value
    if isinstance(value, float) and not math.isfinite(value):
        return [node]
    if value is None or isinstance(value, (str, int, float, bool)):
        return []
    return [node]


def _extent(node: YNode) -> tuple[int, int]:
    """How many mappings and lists deep ``node`` goes (a scalar: 0), and how many values it
    holds (itself included)."""
    if node.kind == "scalar":
        return 0, 1
    children = [v for _, v in node.items] if node.kind == "map" else node.items
    extents = [_extent(child) for child in children]
    return (1 + max((d for d, _ in extents), default=0), 1 + sum(n for _, n in extents))


# -- $ref in input schemas: resolved offline, as the validator will when sagas start ----------
_IN_PLACE = frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else",
                       "dependentSchemas"})  # subschemas applied to the same value
_REFS = ("$ref", "$dynamicRef")


def _reference_problems(schema: dict[str, Any],
                        metaschema: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """What is wrong with the ``$ref``s of a schema valid against ``metaschema``, as (JSON
    path, message): a ref that points outside the schema (no retrieval: the flow is checked,
    and later run, offline), one that points to nothing in it, and a loop of refs (and
    allOf/anyOf/... ) that come back to a schema without descending into the value, which
    would make validating an input recurse forever."""
    specification = referencing.jsonschema.specification_with(
        str(metaschema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012)
    resource = specification.create_resource(schema)
    root = resource.id() or ""
    registry = jsonschema_specifications.REGISTRY.with_resource(root, resource)
    problems: list[tuple[list[Any], str]] = []
    where: dict[int, list[Any]] = {}  # id(schema) -> its path
    edges: dict[int, list[tuple[int, list[Any] | None]]] = {}  # same-value applications
    for path, sub, base in _subschemas(schema, specification, root):
        where[id(sub)] = path
        targets = edges.setdefault(id(sub), [])
        for keyword in _REFS:
            ref = sub.get(keyword)
            if not isinstance(ref, str):
                continue
            target, problem = _resolve(registry, base, ref, keyword)
            if problem:
                problems.append(([*path, keyword], problem))
            elif isinstance(target, dict):
                targets.append((id(target), [*path, keyword]))
        targets.extend((id(child), None) for child in _in_place_children(sub))
    if not problems and (loop := _ref_loop(edges, where)) is not None:
        ref = functools.reduce(lambda value, part: value[part], loop, schema)
        problems.append((loop, f"{loop[-1]} {ref!r} loops back to a schema it started from "
                               "without checking any part of the value: validating an input "
                               "would never end"))
    return problems


def _subschemas(schema: dict[str, Any], specification: Any,
                root: str) -> Iterator[tuple[list[Any], dict[str, Any], str]]:
    """Every schema (mapping) inside ``schema`` the validator would apply — its dialect's
    subschema keywords, not values (``const``, ``enum``...) nor unknown keywords — with its
    JSON path and its base URI."""
    stack: list[tuple[dict[str, Any], list[Any], str]] = [(schema, [], root)]
    while stack:
        sub, path, base = stack.pop()
        own_id = specification.id_of(sub)
        base = urllib.parse.urljoin(base, own_id) if isinstance(own_id, str) else base
        yield path, sub, base
        places = _child_places(sub)
        children = [(child, [*path, *places[id(child)]], base)
                    for child in specification.subresources_of(sub)
                    if isinstance(child, dict) and id(child) in places]
        # in document order, whatever order the dialect lists its keywords in
        stack.extend(sorted(children, key=lambda c: [str(p) for p in c[1]], reverse=True))


def _child_places(sub: dict[str, Any]) -> dict[int, list[Any]]:
    """Where each mapping one or two levels inside ``sub`` is: ``id`` -> relative path."""
    places: dict[int, list[Any]] = {}
    for key, value in sub.items():
        if isinstance(value, dict):
            places[id(value)] = [key]
            places.update((id(v), [key, k]) for k, v in value.items() if isinstance(v, dict))
        elif isinstance(value, list):
            places.update((id(v), [key, i]) for i, v in enumerate(value) if isinstance(v, dict))
    return places


def _in_place_children(sub: dict[str, Any]) -> Iterator[Any]:
    for key, value in sub.items():
        if key not in _IN_PLACE:
            continue
        if key == "dependentSchemas" and isinstance(value, dict):
            yield from value.values()
        elif isinstance(value, list):
            yield from value
        else:
            yield value


def _resolve(registry: Any, base: str, ref: str, keyword: str) -> tuple[Any, str | None]:
    """The schema ``ref`` points to, or what is wrong with it."""
    try:
        return registry.resolver(base_uri=base).lookup(ref).contents, None
    except (referencing.exceptions.PointerToNowhere, referencing.exceptions.NoSuchAnchor):
        return None, f"{keyword} {ref!r} points to nothing in the schema"
    except referencing.exceptions.Unresolvable:
        return None, (f"{keyword} {ref!r} points outside the schema: a flow's schema is "
                      "resolved offline, so refs point into it (like '#/$defs/address')")
    except Exception as exc:  # a malformed pointer, ...
        return None, f"{keyword} {ref!r} cannot be resolved ({type(exc).__name__})"


def _ref_loop(edges: dict[int, list[tuple[int, list[Any] | None]]],
              where: dict[int, list[Any]]) -> list[Any] | None:
    """The path of a ``$ref`` on a loop of same-value applications, if there is one."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(edges[start]))]
        refs: list[list[Any] | None] = []
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node] = 2
                stack.pop()
                if refs:
                    refs.pop()
                continue
            target, ref_path = step
            if state.get(target) == 1:
                return ref_path or next((r for r in reversed(refs) if r), where[target])
            if target in state or target not in edges:
                continue
            state[target] = 1
            refs.append(ref_path)
            stack.append((target, iter(edges[target])))
    return None


def _node_at(node: YNode, path: list[Any]) -> YNode:
    """The deepest node along a JSON path inside ``node`` (for schema error positions)."""
    current = node
    for part in path:
        if current.kind == "map":
            nxt = current.get(str(part))
            if nxt is None:
                return current
            current = nxt
        elif current.kind == "seq" and isinstance(part, int) and 0 <= part < len(current.items):
            current = current.items[part]
        else:
            return current
    return current

