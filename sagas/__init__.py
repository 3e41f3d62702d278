"""sagactor's saga engine: flows declared in YAML, compiled to state machines, driven by actors.

The public API is re-exported here; submodules whose names start with ``_`` are private.
"""

from __future__ import annotations

from .bus import Delivery, EventBus, Subscriber, Subscription
from .engine.runtime import Runtime, SagaResult, Submitted
from .errors import (
    BadStoreUrl,
    DefinitionUnavailable,
    FlowError,
    FlowErrors,
    IdConflict,
    InputError,
    LeaseLost,
    SagactorError,
    SagaTimeout,
    SeqConflict,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    UnknownSaga,
)
from .language.compiler import CompiledFlow, compile_flow
from .language.loader import load_flow, parse_flow
from .language.model import Flow, FlowWarning, RetryPolicy, ServiceSpec, Step
from .language.plan import Plan, plan, plans

__version__ = "0.1.0"

__all__ = [
    "BadStoreUrl",
    "CompiledFlow",
    "DefinitionUnavailable",
    "Delivery",
    "EventBus",
    "Flow",
    "FlowError",
    "FlowErrors",
    "FlowWarning",
    "IdConflict",
    "InputError",
    "LeaseLost",
    "Plan",
    "RetryPolicy",
    "Runtime",
    "SagaResult",
    "SagaTimeout",
    "SagactorError",
    "SeqConflict",
    "ServiceSpec",
    "Step",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "Submitted",
    "Subscriber",
    "Subscription",
    "UnknownSaga",
    "__version__",
    "compile_flow",
    "load_flow",
    "parse_flow",
    "plan",
    "plans",
]
