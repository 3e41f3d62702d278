"""``saga plan``: a flow's recovery plans — what is compensated, in which order, or what ends
``failed`` and why — for one step failing one way, or for every step and way."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..language.compiler import CompiledFlow, compile_flow
from ..language.loader import load_flow
from ..language.plan import Plan, check_failable, plans, route_plans
from .errors import UsageProblem

__all__ = ["RecoveryPlans", "recovery_plans"]


class RecoveryPlans(NamedTuple):
    """The plans of one step failing (``step``; one per distinct route that reaches it), or
    of every step and kind (``step`` is ``None``)."""

    compiled: CompiledFlow
    plans: list[Plan]
    step: str | None

    def to_json(self) -> dict[str, Any]:
        """One step's first plan (each names its route), or ``{"flow", "version", "plans"}``."""
        if self.step is not None:
            return self.plans[0].to_json()
        return {"flow": self.compiled.flow.name, "version": self.compiled.flow.version,
                "plans": [p.to_json() for p in self.plans]}


def recovery_plans(flow_path: str, fail_step: str | None = None,
                   kind: str = "rejected") -> RecoveryPlans:
    """The recovery plans of the flow at ``flow_path`` if ``fail_step`` fails with ``kind``
    (``rejected``, ``error`` or ``timeout``), or of every step and kind without
    ``fail_step``. :class:`UsageProblem` for a step that cannot fail, or cannot fail so."""
    compiled = compile_flow(load_flow(flow_path))
    if fail_step is None:
        return RecoveryPlans(compiled, plans(compiled), None)
    try:
        check_failable(compiled, fail_step)
    except ValueError as exc:
        raise UsageProblem(str(exc), option="--fail") from None
    try:
        found = route_plans(compiled, fail_step, kind)
    except ValueError as exc:  # a wait step only times out
        raise UsageProblem(str(exc), option="--kind") from None
    return RecoveryPlans(compiled, found, fail_step)
