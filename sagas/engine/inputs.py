"""What a saga is started with, checked before anything is written: the saga id a caller
chooses, the input against the flow's schema (a private plain-JSON copy), and the service
names placed in workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jsonschema

from ..errors import InputError
from ..language.model import Flow
from ..language.schema_check import compile_check

__all__ = ["SAGA_ID", "SAGA_ID_CHARS", "remote_names", "validate_input", "validate_saga_id"]

SAGA_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
SAGA_ID = "[A-Za-z0-9_.-]{1,128}"


def remote_names(remote: Sequence[str] | str) -> frozenset[str]:
    """``"all"``, ``"a,b"`` or ``["a", "b"]`` as a set of service names."""
    names = remote.split(",") if isinstance(remote, str) else list(remote)
    return frozenset(name.strip() for name in names if name and name.strip())


def validate_saga_id(saga_id: str) -> str:
    """Check a caller-chosen saga id (a business key); ``InputError`` if malformed."""
    if not isinstance(saga_id, str) or not 1 <= len(saga_id) <= 128 or \
            not set(saga_id) <= SAGA_ID_CHARS:
        raise InputError(f"invalid saga id {saga_id!r}: use 1 to 128 of A-Z a-z 0-9 _ . -")
    return saga_id


_validators: dict[str, Any] = {}


def validate_input(flow: Flow, saga_input: Any) -> dict[str, Any]:
    """Check ``saga_input`` against the flow's input schema (``InputError`` names the field);
    returns a private plain-JSON copy of it."""
    if not isinstance(saga_input, dict):
        raise InputError(f"saga input must be a JSON object, got {type(saga_input).__name__}")
    try:
        copy = json.loads(json.dumps(saga_input, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"saga input is not JSON: {exc}") from None
    except RecursionError:
        raise InputError("saga input is nested too deeply") from None
    if copy != saga_input:
        raise InputError("saga input is not plain JSON: object keys must be strings, and "
                         "lists must be lists (not tuples or sets)")
    saga_input = copy
    schema = flow.input_schema
    if schema is None:
        return saga_input
    checks = _validators.get(flow.definition)
    if checks is None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        checks = (compile_check(schema), cls(schema, format_checker=cls.FORMAT_CHECKER))
        _validators[flow.definition] = checks
    quick, validator = checks
    if quick is not None and quick(saga_input):  # a sure yes; anything else asks jsonschema
        return saga_input
    errors = sorted(validator.iter_errors(saga_input), key=jsonschema.exceptions.relevance)
    if errors:
        # every violation, one line: the best match first, then the others by place
        first = jsonschema.exceptions.best_match(errors)
        others = sorted((e for e in errors if e is not first),
                        key=lambda e: [str(p) for p in e.absolute_path])
        shown = [_violation(e) for e in [first, *others][:MAX_VIOLATIONS]]
        more = len(errors) - len(shown)
        tail = f"; and {more} more" if more > 0 else ""
        raise InputError(f"{'; '.join(shown)}{tail} (flow {flow.name} input schema)")
    return saga_input


MAX_VIOLATIONS = 5


def _violation(error: Any) -> str:
    where = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                              for p in error.absolute_path)
    return f"{where}: {error.message}"
