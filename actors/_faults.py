"""Fault injection: decide, per command, to misbehave in one of a few well-defined ways.

Used by tests and by ``saga run --fail STEP``. The service actor asks its injector once per
delivery; the kinds behave like real failures (a ``reject`` goes through the inbox like a real
``Rejected``, so it is stored as definitive):

======================  ==========================================================================
``"reject"``            as if the handler raised ``Rejected`` (the handler does not run)
``"error"``             as if the handler raised an exception (the handler does not run)
``"drop"``              the command is lost: nothing runs, no reply (the caller times out)
``"run_then_drop"``     the command is processed normally but its reply is lost
``"duplicate"``         the command is processed twice and both replies are sent
======================  ==========================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from ._messages import PHASES

if TYPE_CHECKING:
    from ._messages import Command

__all__ = ["FAULT_KINDS", "Fault", "FaultInjector", "FaultKind", "Faults"]

FaultKind = Literal["reject", "error", "drop", "run_then_drop", "duplicate"]
FAULT_KINDS: frozenset[str] = frozenset({"reject", "error", "drop", "run_then_drop", "duplicate"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected misbehaviour; ``message`` replaces the default rejection or error text."""

    kind: FaultKind
    message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Fault.kind must be one of {sorted(FAULT_KINDS)}, not {self.kind!r}")


@runtime_checkable
class FaultInjector(Protocol):
    """Decides whether a command misbehaves.

    Called on the service actor's thread, once per delivery, before the inbox is consulted. It must
    be thread-safe (the instances of a pool share it). If it raises, the service actor crashes and
    is restarted; the command is answered with an ``error`` reply.
    """

    def decide(self, command: Command) -> Fault | None:
        """The fault to inject for ``command``, or ``None`` to behave normally."""
        ...


@dataclass(frozen=True, slots=True)
class _Rule:
    step: str | None
    phase: str | None
    saga_id: str | None
    attempts: frozenset[int] | None
    fault: Fault

    def matches(self, command: Command) -> bool:
        return (
            (self.step is None or self.step == command.step)
            and (self.phase is None or self.phase == command.phase)
            and (self.saga_id is None or self.saga_id == command.saga_id)
            and (self.attempts is None or command.attempt in self.attempts)
        )


class Faults:
    """A rule-based :class:`FaultInjector`: the first rule that matches a command wins.

    ``Faults().add(step="charge_payment", kind="reject")`` rejects every attempt of that step's
    action. Thread-safe: rules may be added while actors consult them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: tuple[_Rule, ...] = ()

    def add(
        self,
        step: str | None,
        *,
        kind: FaultKind,
        phase: Literal["action", "compensation"] | None = "action",
        attempts: Iterable[int] | None = None,
        saga_id: str | None = None,
        message: str | None = None,
    ) -> Faults:
        """Add a rule and return ``self`` (so calls chain).

        ``step``, ``phase`` and ``saga_id`` match exactly, ``None`` matching any; ``attempts`` is
        the set of attempt numbers (from 1) the rule applies to, ``None`` meaning every attempt.
        """
        fault = Fault(kind, message)
        if phase is not None and phase not in PHASES:
            raise ValueError(f"phase must be 'action', 'compensation' or None, not {phase!r}")
        frozen: frozenset[int] | None = None
        if attempts is not None:
            frozen = frozenset(attempts)
            bad = [a for a in frozen if not isinstance(a, int) or isinstance(a, bool) or a < 1]
            if bad or not frozen:
                raise ValueError(
                    f"attempts must be a non-empty set of attempt numbers >= 1, got {attempts!r}"
                )
        rule = _Rule(step, phase, saga_id, frozen, fault)
        with self._lock:
            self._rules = (*self._rules, rule)
        return self

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules = ()

    def decide(self, command: Command) -> Fault | None:
        for rule in self._rules:  # a tuple, replaced whole under the lock: safe to read as is
            if rule.matches(command):
                return rule.fault
        return None

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"Faults({len(self._rules)} rules)"
