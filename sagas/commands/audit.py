"""``saga audit``: check the saga guarantees over every saga in a store.

:mod:`sagas.audit` is imported when a store is audited, not before: the other commands do
not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from .session import store_session

if TYPE_CHECKING:
    from ..audit import Violation

__all__ = ["AuditReport", "audit_store_at"]


class AuditReport(NamedTuple):
    """The violations found (none: the store keeps every guarantee)."""

    violations: list[Violation]

    @property
    def status(self) -> str:
        """``violations`` if any rule is broken, else ``ok``."""
        return "violations" if self.violations else "ok"

    def to_json(self) -> list[dict[str, Any]]:
        """One ``{"saga_id", "seq", "rule", "message"}`` per violation."""
        return [v.to_json() for v in self.violations]


def audit_store_at(store_url: str, *, stuck_after: float) -> AuditReport:
    """Audit the store at ``store_url`` (:func:`sagas.audit.audit_store`): a saga
    compensating for longer than ``stuck_after`` seconds is reported as stuck."""
    from ..audit import audit_store

    with store_session(store_url, create=False) as store:
        return AuditReport(audit_store(store, stuck_after=stuck_after))
