"""Safe YAML reading that keeps positions and refuses duplicate keys.

PyYAML's ``safe_load`` forgets where a value came from and silently keeps the last of two equal
keys. Here a document is composed with the safe loader into nodes, then turned into a small tree
of :class:`YNode` that remembers each value's 1-based line and column. Every problem is raised
as one :class:`~sagas.errors.FlowErrors` naming ``source:line:column``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import FlowError, FlowErrors

__all__ = ["MAX_INT_DIGITS", "MAX_NODES", "YNode", "compose", "to_python"]

MAX_NODES = 500_000  # guards against alias expansion bombs ("billion laughs")
MAX_INT_DIGITS = 1_000  # longer whole numbers are refused unread: reading one is not linear,
# and Python refuses to turn one of over 4,300 digits into text (or JSON) at all
_INT_TAG = "tag:yaml.org,2002:int"
_SCAN_LIMIT = 8  # maps with more keys than this are looked up through an index
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
    index: dict[Any, tuple[YNode, YNode]] | None = field(default=None, repr=False)

    def get(self, key: str) -> YNode | None:
        """The value node of ``key`` in a map (None when absent or not a map)."""
        pair = self._pair(key)
        return None if pair is None else pair[1]

    def key_node(self, key: str) -> YNode | None:
        pair = self._pair(key)
        return None if pair is None else pair[0]

    def _pair(self, key: str) -> tuple[YNode, YNode] | None:
        """The (key, value) nodes of ``key``: a scan of a small map, a lookup in a large one
        (indexed on first use, once the map is built), so no check is quadratic in a map."""
        if self.kind != "map":
            return None
        if len(self.items) <= _SCAN_LIMIT:
            return next(((k, v) for k, v in self.items if k.value == key), None)
        if self.index is None:
            self.index = {}
            for k, v in self.items:
                self.index.setdefault(k.value, (k, v))
        return self.index.get(key)

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
        return f"an integer ({shown_number(value)})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    return f"a {type(value).__name__}"


def shown_number(value: float) -> str:
    """A number for a message: a float as ``:g``, a long whole number cut short."""
    if isinstance(value, float):
        return f"{value:g}"
    digits = str(value)  # at most MAX_INT_DIGITS of them (1,000 hex digits: ~1,200)
    return digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"


# What the YAML parser counts as a line break (so positions agree with its marks).
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


class _Lines:
    """Where each line of a text starts, counting breaks as the YAML parser does, so that a
    position costs O(1) from a parser mark and O(log n) from a character offset (computing
    them by rescanning the text made validating a large flow quadratic)."""

    __slots__ = ("count", "starts")

    def __init__(self, text: str):
        self.starts = [0, *(match.end() for match in _BREAK.finditer(text))]
        self.count = len(self.starts)

    def of_mark(self, mark: Any) -> tuple[int, int]:
        """1-based (line, column) of a PyYAML mark, clamped to the document."""
        if mark is None:
            return 1, 1
        line, column = int(mark.line) + 1, int(mark.column) + 1
        if line > self.count:
            return self.count, 1
        return line, max(column, 1)

    def of_offset(self, offset: int, length: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset into a text of ``length`` characters."""
        offset = max(0, min(offset, length))
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index] + 1


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
    lines = _Lines(text)
    try:
        loader = yaml.SafeLoader(text)  # its reader checks every character up front
    except yaml.reader.ReaderError as exc:
        raise FlowErrors([_reader_error(exc, lines, len(text), source)]) from None
    try:
        node = _compose_node(text, loader, lines, source)
        if node is None:
            return None, []
        builder = _Builder(loader, lines, source)
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


_FastLoader: Any = getattr(yaml, "CSafeLoader", None)  # libyaml, when PyYAML was built with it
_EXACT_MESSAGES_UP_TO = 1_000_000  # characters: a larger text's syntax error is libyaml's


def _compose_node(text: str, loader: yaml.SafeLoader, lines: _Lines, source: str) -> Any:
    """The document's node, or ``FlowErrors`` for what stops reading it.

    libyaml (C) reads it when PyYAML was built with it: several times faster than PyYAML's
    own parser, with the same marks and the same resolver. When libyaml finds a problem,
    PyYAML reads the text again for its message (it says what it found, not only what it
    expected), unless the text is so large that this would take seconds.

    libyaml skips a byte-order mark inside the text where PyYAML reads it as a character, so
    such a text goes to PyYAML. libyaml accepts a few oddities PyYAML refuses (a tab after a
    plain scalar at the end of the text; ``!`` alone, the non-specific tag, reads as an empty
    text where PyYAML reads null): a YAML parser's reading either way, never a loophole."""
    if _FastLoader is not None and "\ufeff" not in text:
        try:
            return _FastLoader(text).get_single_node()
        except Exception as exc:
            if isinstance(exc, yaml.YAMLError) and len(text) > _EXACT_MESSAGES_UP_TO:
                raise _reading_error(exc, lines, len(text), source) from None
    try:
        return loader.get_single_node()
    except (yaml.YAMLError, RecursionError) as exc:
        raise _reading_error(exc, lines, len(text), source) from None


def _reading_error(exc: BaseException, lines: _Lines, length: int, source: str) -> FlowErrors:
    """A parser's exception as one positioned error."""
    if isinstance(exc, yaml.reader.ReaderError):
        return FlowErrors([_reader_error(exc, lines, length, source)])
    if isinstance(exc, yaml.composer.ComposerError):
        line, column = lines.of_mark(exc.problem_mark)
        if "single document" in str(exc.context or "") or "single document" in str(exc):
            message = "several YAML documents in one file: a flow file holds exactly one"
        else:
            message = f"YAML error: {exc.problem}"
        return FlowErrors([FlowError(message, source=source, line=line, column=column)])
    if isinstance(exc, yaml.MarkedYAMLError):
        line, column = lines.of_mark(exc.problem_mark or exc.context_mark)
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        return FlowErrors([FlowError(f"YAML syntax error: {problem}{context}",
                                     source=source, line=line, column=column)])
    if isinstance(exc, RecursionError):
        return FlowErrors([FlowError("YAML nesting is too deep", source=source)])
    return FlowErrors([FlowError(f"YAML error: {exc}", source=source)])


def _reader_error(exc: yaml.reader.ReaderError, lines: _Lines, length: int,
                  source: str) -> FlowError:
    line, column = lines.of_offset(exc.position, length)
    return FlowError(f"invalid character {_describe_character(exc.character)} in YAML text "
                     "(control characters are not allowed)",
                     source=source, line=line, column=column)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, lines: _Lines, source: str):
        self.loader = loader
        self.lines = lines
        self.source = source
        self.errors: list[FlowError] = []
        self.count = 0
        self.too_deep = False

    def error(self, message: str, node: Any) -> None:
        line, column = self.lines.of_mark(node.start_mark)
        self.errors.append(FlowError(message, source=self.source, line=line, column=column))

    def build(self, node: Any, depth: int, key: str = "") -> YNode:
        """The tree of ``node``; ``key`` is the mapping key it is the value of, if any."""
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.error(f"document too large (more than {MAX_NODES} values after aliases)", node)
            return YNode("scalar", 1, 1, None)
        line, column = self.lines.of_mark(node.start_mark)
        if depth > 200:
            if not self.too_deep:
                self.too_deep = True
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
                k_line, k_column = self.lines.of_mark(key_node.start_mark)
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
                result.items.append((key, self.build(value_node, depth + 1, key_node.value)))
            return result
        if isinstance(node, yaml.SequenceNode):
            result = YNode("seq", line, column, tag=node.tag)
            result.items = [self.build(item, depth + 1) for item in node.value]
            return result
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
            self.error(_too_large(key, node.value), node)
            return YNode("scalar", line, column, None, tag=node.tag, broken=True)
        try:
            value = self.loader.construct_object(node, deep=True)
        except Exception as exc:  # a bad timestamp, an unknown tag, ...
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.error(f"cannot read this value: {problem}", node)
            return YNode("scalar", line, column, None, tag=node.tag, broken=True)
        return YNode("scalar", line, column, value, tag=node.tag)


def _too_large(key: str, text: str) -> str:
    shown = f"{text[:10]}... ({len(text)} characters)"
    shown = shown if shown.isprintable() else repr(shown)
    where = f" for {key[:40]!r}" if key else ""
    return (f"whole number too large{where}: {shown}; a flow's whole numbers have at most "
            f"{MAX_INT_DIGITS} digits")


def to_python(node: YNode) -> Any:
    """The plain Python value of a node (dicts, lists, scalars)."""
    if node.kind == "map":
        return {k.value: to_python(v) for k, v in node.items}
    if node.kind == "seq":
        return [to_python(item) for item in node.items]
    return node.value
