"""``saga validate``: check flow files, one after another, and say what each holds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from ..engine.inputs import remote_names
from ..errors import FlowError, FlowErrors
from ..language.loader import load_flow
from ..language.model import Flow, FlowWarning

__all__ = ["CheckedFlow", "FlowChecks"]


class CheckedFlow(NamedTuple):
    """One file checked: its flow if it is valid, and its problems (the errors of an invalid
    file, or the warnings of a valid one), each with ``format()`` → ``FILE:LINE:COL: ...``."""

    path: str
    flow: Flow | None
    problems: Sequence[FlowError | FlowWarning]

    @property
    def summary(self) -> str:
        """``ok: NAME vN (K steps)`` for a valid flow."""
        assert self.flow is not None
        plural = "step" if len(self.flow.steps) == 1 else "steps"
        return f"ok: {self.flow.name} v{self.flow.version} ({len(self.flow.steps)} {plural})"


class FlowChecks:
    """The files at ``paths``, checked one by one as they are iterated (so a caller can say
    how each went before the next is read); :attr:`status` once they all have been.

    ``strict`` makes warnings errors; ``check_services`` imports each service declared and
    checks its handlers, except those ``remote`` names (a comma-separated list: placed in
    workers, never imported here; ``all`` for every one)."""

    def __init__(self, paths: Sequence[str], *, strict: bool, check_services: bool,
                 remote: str = ""):
        self.paths = paths
        self.strict = strict
        self.check_services = check_services
        self.remote = remote_names(remote)
        self.invalid = 0

    def __iter__(self) -> Iterator[CheckedFlow]:
        for path in self.paths:
            try:
                flow = load_flow(path, strict=self.strict, check_services=self.check_services,
                                 remote=self.remote)
            except FlowErrors as exc:
                self.invalid += 1
                yield CheckedFlow(path, None, exc.errors)
                continue
            yield CheckedFlow(path, flow, flow.warnings)

    @property
    def status(self) -> str:
        """``invalid`` if any file checked is, else ``ok``."""
        return "invalid" if self.invalid else "ok"
