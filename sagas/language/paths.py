"""Context paths: ``$.input.field`` and ``$.steps.<step>.field`` — data, never code.

A saga's context is ``{"input": <saga input>, "steps": {<step>: <its output>}}``. A step's
command payload is its ``input:`` mapping with every path string replaced by the value it names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MISSING", "PathError", "Template", "compile_template", "evaluate", "parse_path",
           "resolve"]

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
ROOTS = ("input", "steps")


class PathError(ValueError):
    """A malformed path or one with an unknown root."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def parse_path(text: str) -> tuple[str, ...]:
    """Split ``$.a.b`` into ``("a", "b")``; raise :class:`PathError` if malformed."""
    if not text.startswith("$."):
        raise PathError(f"malformed path {text!r}: paths start with '$.' "
                        "($.input.<field> or $.steps.<step>.<field>)")
    parts = tuple(text[2:].split("."))
    for part in parts:
        if not _SEGMENT.match(part):
            raise PathError(f"malformed path {text!r}: each part after '$.' is a name "
                            "(letters, digits, '_' or '-'), separated by single dots")
    if parts[0] not in ROOTS:
        raise PathError(f"path {text!r} has unknown root {parts[0]!r}: "
                        "use $.input... or $.steps...")
    return parts


def resolve(context: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` in ``context``, or :data:`MISSING`."""
    current: Any = context
    for part in parts:
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, (list, tuple)) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


Template = Callable[[Mapping[str, Any]], Any]


def compile_template(template: Any) -> Template:
    """``template`` (a step's ``input:``, a wait's key) as a function of the saga context, its
    paths parsed once: each ``$.`` path is replaced by its value, a path that names nothing by
    ``None`` (JSON ``null``). The values it makes are plain dicts and lists."""
    if isinstance(template, Mapping):
        fields = [(key, compile_template(value)) for key, value in template.items()]
        return lambda context: {key: field(context) for key, field in fields}
    if isinstance(template, (list, tuple)):
        items = [compile_template(item) for item in template]
        return lambda context: [item(context) for item in items]
    if isinstance(template, str) and template.startswith("$."):
        parts = parse_path(template)

        def value_at(context: Mapping[str, Any]) -> Any:
            value = resolve(context, parts)
            return None if value is MISSING else value

        return value_at
    return lambda context: template


def evaluate(template: Any, context: Mapping[str, Any]) -> Any:
    """``template`` evaluated on ``context`` (see :func:`compile_template`, which the engine
    uses to parse a flow's paths once)."""
    return compile_template(template)(context)
