"""``saga retry`` and ``saga cancel``: act on one saga and wait until it ends.

The saga's owner acts if it is alive (the request goes through the store); otherwise the
runtime of this command adopts the saga and drives it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..engine.runtime import Runtime, SagaResult
from .interrupts import stop_reporting
from .session import runtime_session

__all__ = ["cancel_saga", "retry_saga"]


def _act(store_url: str, saga_id: str, act: Callable[[Runtime, str], SagaResult]) -> SagaResult:
    with stop_reporting(lambda: f"interrupted: saga {saga_id} was left in flight; "
                                "'saga resume' finishes it"), \
            runtime_session(store_url, create=False) as runtime:
        result = act(runtime, saga_id)
        return result if result.terminal else runtime.wait(saga_id)


def retry_saga(store_url: str, saga_id: str) -> SagaResult:
    """Re-drive a ``failed`` saga where it stopped (:meth:`Runtime.retry`); return how it
    ended. ``UnknownSaga`` if there is none; a saga that is not ``failed`` is left as it is."""
    return _act(store_url, saga_id, Runtime.retry)


def cancel_saga(store_url: str, saga_id: str) -> SagaResult:
    """Cancel a saga (:meth:`Runtime.cancel`); return how it ended. ``UnknownSaga`` if there
    is none; a saga that has ended is left as it is."""
    return _act(store_url, saga_id, Runtime.cancel)
