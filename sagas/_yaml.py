"""Safe YAML reading that keeps positions and refuses duplicate keys.

PyYAML's ``safe_load`` forgets where a value came from and silently keeps the last of two equal
keys. Here a document is composed with the safe loader into nodes, then turned into a small tree
of :class:`YNode` that remembers each value's 1-based line and column. Every problem is raised
as one :class:`~sagas.errors.FlowErrors` naming ``source:line:column``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import FlowError, FlowErrors

__all__ = ["MAX_NODES", "YNode", "compose", "to_python"]

MAX_NODES = 100_000  # guards against alias expansion bombs ("billion laughs")
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass(slots=True, eq=False)
class YNode:
    """A YAML value with its position. ``kind`` is ``map``, ``seq`` or ``scalar``.

    For a map, ``items`` holds ``(key, value)`` node pairs in document order (keys are scalar
    nodes whose ``value`` is the key's text); for a seq, ``items`` holds the element nodes; for a
    scalar, ``value`` holds the constructed Python value (str, int, float, bool, None, ...).
    """

    kind: str
    line: int
    column: int
    value: Any = None
    items: list[Any] = field(default_factory=list)
    tag: str = ""
    broken: bool = False  # unreadable: already reported, so no further checks report it

    def get(self, key: str) -> YNode | None:
        """The value node of ``key`` in a map (None when absent or not a map)."""
        if self.kind != "map":
            return None
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def key_node(self, key: str) -> YNode | None:
        if self.kind != "map":
            return None
        for k, _ in self.items:
            if k.value == key:
                return k
        return None

    @property
    def type_name(self) -> str:
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        return describe_scalar(self.value)


def describe_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    return f"a {type(value).__name__}"


# What the YAML parser counts as a line break (so positions agree with its marks).
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def line_count(text: str) -> int:
    """How many lines the YAML parser sees in ``text`` (the last one may be empty)."""
    return len(_BREAK.findall(text)) + 1


def _position(mark: Any, text: str) -> tuple[int, int]:
    """1-based (line, column) of a PyYAML mark, clamped to the document."""
    if mark is None:
        return 1, 1
    line, column = int(mark.line) + 1, int(mark.column) + 1
    last_line = line_count(text)
    if line > last_line:
        return last_line, 1
    return line, max(column, 1)


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset, counting breaks as the parser does."""
    offset = max(0, min(offset, len(text)))
    line, start = 1, 0
    for match in _BREAK.finditer(text, 0, offset):
        if match.end() > offset:
            break
        line, start = line + 1, match.end()
    return line, offset - start + 1


def _describe_character(character: Any) -> str:
    if isinstance(character, int):
        return f"byte 0x{character:02x}"
    return f"U+{ord(character):04X}" if len(character) == 1 else repr(character)


def compose(text: str, source: str = "<flow>") -> tuple[YNode | None, list[FlowError]]:
    """Compose ``text`` (one YAML document) into a :class:`YNode` tree (None if it is empty).

    Raises :class:`FlowErrors` for what stops reading: syntax errors, several documents, and
    documents too large or too deep. Problems that do not (duplicate keys — the first is kept —,
    non-scalar keys, unreadable values) are returned beside the tree, so the caller can report
    them together with its own findings.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line, column = _offset_position(text, exc.position)
        raise FlowErrors(
            [FlowError(f"invalid character {_describe_character(exc.character)} in YAML text "
                       "(control characters are not allowed)",
                       source=source, line=line, column=column)]
        ) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:
            line, column = _offset_position(text, exc.position)
            raise FlowErrors(
                [FlowError(f"invalid character {_describe_character(exc.character)} in YAML "
                           "text (control characters are not allowed)",
                           source=source, line=line, column=column)]
            ) from None
        except yaml.composer.ComposerError as exc:
            line, column = _position(exc.problem_mark, text)
            if "single document" in str(exc.context or "") or "single document" in str(exc):
                message = "several YAML documents in one file: a flow file holds exactly one"
            else:
                message = f"YAML error: {exc.problem}"
            error = FlowError(message, source=source, line=line, column=column)
            raise FlowErrors([error]) from None
        except yaml.MarkedYAMLError as exc:
            line, column = _position(exc.problem_mark or exc.context_mark, text)
            problem = exc.problem or exc.context or "invalid YAML"
            context = f" ({exc.context})" if exc.context and exc.problem else ""
            raise FlowErrors(
                [FlowError(f"YAML syntax error: {problem}{context}",
                           source=source, line=line, column=column)]
            ) from None
        except yaml.YAMLError as exc:
            raise FlowErrors([FlowError(f"YAML error: {exc}", source=source)]) from None
        except RecursionError:
            raise FlowErrors(
                [FlowError("YAML nesting is too deep", source=source)]
            ) from None
        if node is None:
            return None, []
        builder = _Builder(loader, text, source)
        try:
            tree = builder.build(node, 0)
        except RecursionError:
            raise FlowErrors([FlowError("YAML nesting is too deep", source=source)]) from None
        fatal = ("document too large", "YAML nesting")
        if any(e.message.startswith(fatal) for e in builder.errors):
            raise FlowErrors(builder.errors)
        return tree, builder.errors
    finally:
        loader.dispose()


class _TooLarge(Exception):
    pass


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, text: str, source: str):
        self.loader = loader
        self.text = text
        self.source = source
        self.errors: list[FlowError] = []
        self.count = 0

    def error(self, message: str, node: Any) -> None:
        line, column = _position(node.start_mark, self.text)
        self.errors.append(FlowError(message, source=self.source, line=line, column=column))

    def build(self, node: Any, depth: int) -> YNode:
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.error(f"document too large (more than {MAX_NODES} values after aliases)", node)
            return YNode("scalar", 1, 1, None)
        line, column = _position(node.start_mark, self.text)
        if depth > 200:
            if not any(e.message.startswith("YAML nesting") for e in self.errors):
                self.error("YAML nesting is too deep", node)
            return YNode("scalar", line, column, None)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            self.error(f"unsupported YAML tag {node.tag!r}: flows hold plain data only", node)
            return YNode("scalar", line, column, None, broken=True)
        if isinstance(node, yaml.MappingNode):
            result = YNode("map", line, column, tag=node.tag)
            seen: dict[str, YNode] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.error("mapping keys must be plain names, not lists or mappings", key_node)
                    continue
                k_line, k_column = _position(key_node.start_mark, self.text)
                key = YNode("scalar", k_line, k_column, key_node.value, tag=key_node.tag)
                if key_node.value == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                    self.error("YAML merge keys (<<) are not supported in flows: write the keys "
                               "out", key_node)
                    continue
                if key_node.value in seen:
                    first = seen[key_node.value]
                    self.error(
                        f"duplicate key {key_node.value!r} (first at line {first.line}); "
                        "YAML would silently keep only the last one",
                        key_node,
                    )
                    continue
                seen[key_node.value] = key
                result.items.append((key, self.build(value_node, depth + 1)))
            return result
        if isinstance(node, yaml.SequenceNode):
            result = YNode("seq", line, column, tag=node.tag)
            result.items = [self.build(item, depth + 1) for item in node.value]
            return result
        try:
            value = self.loader.construct_object(node, deep=True)
        except Exception as exc:  # a bad timestamp, an unknown tag, ...
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.error(f"cannot read this value: {problem}", node)
            return YNode("scalar", line, column, None, tag=node.tag, broken=True)
        return YNode("scalar", line, column, value, tag=node.tag)


def to_python(node: YNode) -> Any:
    """The plain Python value of a node (dicts, lists, scalars)."""
    if node.kind == "map":
        return {k.value: to_python(v) for k, v in node.items}
    if node.kind == "seq":
        return [to_python(item) for item in node.items]
    return node.value
