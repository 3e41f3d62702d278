"""Reading saga inputs and event data given on a command line or in a file: JSON, or JSON
Lines (one input per line). Every problem is an :class:`~sagas.errors.InputError` that says
where."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import InputError

__all__ = ["parse_json", "read_inputs", "read_text"]


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON; ``what`` names where it came from in the error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be read") from None


def read_text(path: str, what: str) -> str:
    """A file's text (``-``: standard input)."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path}: not UTF-8 text") from None


def read_inputs(path: str, what: str = "--input-file") -> list[Any]:
    """The inputs in a file: one JSON document, or JSON Lines (blank lines skipped)."""
    text = read_text(path, what)
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise InputError(f"{what} {path} is nested too deeply to be read") from None
    inputs = [parse_json(line, f"{what} {path} line {number}")
              for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not inputs:
        raise InputError(f"{what} {path} holds no input")
    return inputs
