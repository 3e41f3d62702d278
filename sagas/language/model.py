"""The flow model: immutable values for everything a YAML flow declares (DESIGN.md §2).

A :class:`Flow` is produced by :func:`sagas.language.loader.parse_flow` and never changes
afterwards. Its ``definition`` (the sha256 of the exact text) is its identity: a saga is always
driven by the definition it started with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "Branch",
    "Choice",
    "Flow",
    "FlowWarning",
    "RetryPolicy",
    "ServiceSpec",
    "Step",
    "Trigger",
    "format_duration",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


MAX_DURATION = 10 * 365 * 24 * 3600.0  # ten years: anything longer is a mistake
_EXACT_DELAYS = 64  # RetryPolicy.worst_case adds this many delays one by one


def parse_duration(value: Any) -> float:
    """Seconds from ``250ms``, ``5s``, ``2m``, ``1h`` or a plain number of seconds.

    Raises ``ValueError`` with a message fit for a user on anything else, including negative
    durations, booleans, and durations over ten years.
    """
    seconds = _parse_duration(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {value!r} is too long (at most ten years)")
    return seconds


def _parse_duration(value: Any) -> float:
    if value is None:
        raise ValueError("expected a duration like 250ms, 5s, 2m or 1h, got null")
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 250ms, 5s, 2m or 1h, got {str(value).lower()}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative (got {value})")
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("duration is too long (at most ten years)") from None
        if seconds != seconds or seconds == float("inf"):
            raise ValueError(f"expected a duration like 250ms, 5s, 2m or 1h, got {value}")
        return seconds
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("-"):
            raise ValueError(f"a duration cannot be negative (got {value!r})")
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        try:
            number = float(stripped)
        except ValueError:
            pass
        else:
            if number == number and number not in (float("inf"),):
                return number
        raise ValueError(f"expected a duration like 250ms, 5s, 2m or 1h, got {value!r}")
    raise ValueError(f"expected a duration like 250ms, 5s, 2m or 1h, got {type(value).__name__}")


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms``, ``5s``, ``2m``, ``1.5h``."""
    if seconds == float("inf") or seconds > 1e12:
        return "practically forever"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast a step is tried. ``attempts`` counts total tries."""

    attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float | None = None  # None: uncapped
    jitter: bool = True

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) before the next one.

        ``min(backoff * multiplier ** (attempt - 1), max_backoff)``, scaled by a factor in
        [0.5, 1) from ``draw`` (a number in [0, 1)) when ``jitter`` is on; never more than
        ten years (:data:`MAX_DURATION`), whatever the policy, so a time is always finite.
        """
        try:
            base = self.backoff * self.multiplier ** (attempt - 1)
        except OverflowError:
            base = float("inf")
        base = min(base, self._cap)
        if self.jitter and draw is not None:
            base *= 0.5 + draw / 2
        return base

    @property
    def _cap(self) -> float:
        """The longest delay: ``max_backoff``, and never more than ten years."""
        return MAX_DURATION if self.max_backoff is None else min(self.max_backoff, MAX_DURATION)

    def worst_case(self, timeout: float) -> float:
        """The longest the forward attempts of one step can take (no jitter shortening).

        The first delays are added one by one; past :data:`_EXACT_DELAYS` of them the rest is
        a geometric sum, so the cost does not grow with ``attempts``."""
        total = timeout * self.attempts
        previous = None
        for attempt in range(1, min(self.attempts, _EXACT_DELAYS + 1)):
            delay = self.delay(attempt)
            if delay == previous:  # no more growth: the rest are equal
                return total + delay * (self.attempts - attempt)
            total += delay
            previous = delay
        return total + self._delays_from(_EXACT_DELAYS + 1)

    def _delays_from(self, first_attempt: int) -> float:
        """The sum of the delays after attempts ``first_attempt`` .. ``attempts - 1``."""
        count = self.attempts - first_attempt
        if count <= 0:
            return 0.0
        first, cap, multiplier = self.delay(first_attempt), self._cap, self.multiplier
        if first <= 0 or first >= cap or multiplier <= 1:
            return first * count
        growing = min(count, math.ceil(math.log(cap / first) / math.log(multiplier)))
        return first * (multiplier ** growing - 1) / (multiplier - 1) + cap * (count - growing)


DEFAULT_RETRY = RetryPolicy()
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A declared service: a name bound to ``module:Class``, run as ``instances`` actors; or,
    declared ``{remote: true, handlers: [...]}``, one with no Python class (``import_path``
    empty), served by workers in other processes or languages (:mod:`sagas.remote`)."""

    name: str
    import_path: str
    instances: int = 1
    handlers: frozenset[str] | None = None  # a class-less service's declared handlers

    @property
    def remote(self) -> bool:
        """Whether the service has no Python class: it always runs in workers."""
        return not self.import_path

    @property
    def module(self) -> str:
        return self.import_path.partition(":")[0]

    @property
    def qualname(self) -> str:
        return self.import_path.partition(":")[2]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a flow: an action on a service and, usually, its compensation; or a
    ``delay``: a durable timed pause (``service`` and ``action`` empty, ``timeout`` the delay);
    or a ``wait_for``: a pause until an external event with the step's correlation key arrives
    (``service`` and ``action`` empty, one attempt of ``timeout``).
    """

    name: str
    service: str
    action: str
    compensation: str | None = None
    input: Mapping[str, Any] | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    timeout: float = DEFAULT_TIMEOUT
    pivot: bool = False
    effects: str | None = None  # "none" declares a step without side effects
    on_compensation_failure: str = "park"  # "park" | "retry_forever"
    line: int = 0  # where the step starts in the file, for messages
    delay: float | None = None  # a timed pause (seconds): no service, nothing to compensate
    wait_event: str | None = None  # wait_for: the external event type awaited
    wait_key: Any = None  # wait_for: its correlation key (a path like $.input.order_id, or text)
    branches: tuple[Branch, ...] | None = None  # parallel: the branches run concurrently

    @property
    def is_parallel(self) -> bool:
        """A ``parallel`` block: its branches run concurrently; it succeeds when all do."""
        return self.branches is not None

    @property
    def undoable(self) -> bool:
        """Whether the step has a compensation state: it declares a compensation, or it is a
        parallel block (undoing a block stops its branches, then undoes what they did — which
        may be nothing)."""
        return self.branches is not None or self.compensation is not None

    @property
    def is_delay(self) -> bool:
        """A ``delay`` step: it calls no service; it succeeds when its time has passed."""
        return self.delay is not None

    @property
    def is_wait(self) -> bool:
        """A ``wait_for`` step: it succeeds when its event arrives, and times out otherwise."""
        return self.wait_event is not None

    @property
    def calls_service(self) -> bool:
        """Whether the step sends a command to a service (not a delay, a wait, a parallel)."""
        return self.delay is None and self.wait_event is None and self.branches is None


@dataclass(frozen=True, slots=True)
class Branch:
    """A named list of steps: a branch of a ``parallel`` block (plain steps only) or of a
    ``choice`` (steps and nested choices), taken when ``when`` holds (None: always/default)."""

    name: str
    steps: tuple[Any, ...]  # Step | Choice
    when: Any = None  # sagas.language.conditions.Condition | None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """A ``choice``: the first branch whose condition holds is taken (the default has none).
    It calls nothing and is not a step: the saga records ``choice.made`` and goes on."""

    name: str
    branches: tuple[Branch, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class FlowWarning:
    """A semantic finding that is not an error unless ``--strict``."""

    message: str
    source: str
    line: int
    column: int

    def format(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: warning: {self.message}"


@dataclass(frozen=True, slots=True)
class Trigger:
    """``trigger: {event: OrderPlaced, id: $.input.order_id}``: every external event of that
    type starts a saga of the flow, with the event's data as its input and the saga id
    ``<flow>.<id>`` (so the same event, or the same id, starts it once)."""

    event: str
    id: str  # a path into the input: $.input.<field>...


@dataclass(frozen=True, slots=True)
class Flow:
    """A validated flow definition."""

    name: str
    version: int
    steps: tuple[Step, ...]
    services: Mapping[str, ServiceSpec]
    definition: str  # sha256 of ``text``
    text: str
    source: str = "<flow>"
    description: str = ""
    input_schema: Mapping[str, Any] | None = None
    deadline: float | None = None
    warnings: tuple[FlowWarning, ...] = field(default=())
    layout: tuple[Any, ...] = ()  # the top-level sequence: Step | Choice (empty: ``steps``)
    trigger: Trigger | None = None

    @property
    def sequence(self) -> tuple[Any, ...]:
        """The top-level sequence of steps and choices, as declared."""
        return self.layout or self.steps

    @property
    def pivot(self) -> Step | None:
        for step in self.steps:
            if step.pivot:
                return step
        return None

    @property
    def pivot_index(self) -> int | None:
        for index, step in enumerate(self.steps):
            if step.pivot:
                return index
        return None

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def index(self, name: str) -> int:
        for index, step in enumerate(self.steps):
            if step.name == name:
                return index
        raise KeyError(name)
