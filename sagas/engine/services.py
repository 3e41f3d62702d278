"""Binding a flow's declared services to running service actors.

Each import path a flow names (resolved by :mod:`sagas.language.service_classes`) is started
once per runtime — as one actor, or a pool of ``instances`` — then shared by every flow that
declares it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors import Activity, DeadLetters, FaultInjector, InboxStore, Service, ServicePool

from ..errors import DefinitionUnavailable
from ..language.model import Flow
from ..language.service_classes import import_service, missing_handler

__all__ = ["ServiceRegistry"]

log = logging.getLogger(__name__)


class ServiceRegistry:
    """Service pools by import path, started on first use and stopped together."""

    def __init__(self, *, inbox: InboxStore, faults: FaultInjector | None, activity: Activity,
                 dead_letters: DeadLetters,
                 overrides: Mapping[str, Service | Sequence[Service]] | None = None,
                 remote: Callable[[str, Any], Any | None] | None = None):
        self._inbox = inbox
        self._faults = faults
        self._activity = activity
        self._dead_letters = dead_letters
        self._overrides = dict(overrides or {})
        # remote(name, spec) -> a stand-in pool publishing to workers, or None (in-process)
        self._remote = remote
        self._pools: dict[str, ServicePool] = {}
        self._bindings: dict[str, dict[str, ServicePool]] = {}
        self._lock = threading.Lock()

    def bind(self, flow: Flow) -> dict[str, ServicePool]:
        """The pool of every service ``flow`` declares, by service name (started if needed)."""
        bound = self._bindings.get(flow.definition)
        if bound is not None:
            return bound
        with self._lock:
            bound = self._bindings.get(flow.definition)
            if bound is not None:
                return bound
            bound = {}
            remote: set[str] = set()
            for name, spec in flow.services.items():
                placed = self._remote(name, spec) if self._remote is not None else None
                if placed is not None:
                    bound[name] = placed  # never imported here: its workers run it
                    remote.add(name)
                    continue
                if not spec.import_path:
                    raise DefinitionUnavailable(
                        f"service {name!r} has no Python class: workers run it; give their "
                        "broker (--broker redis://..., SAGA_BROKER)")
                pool = self._pools.get(spec.import_path)
                if pool is None:
                    pool = self._start(name, spec.import_path, spec.instances)
                    self._pools[spec.import_path] = pool
                bound[name] = pool
            for step in flow.steps:
                if not step.calls_service or step.service in remote:
                    continue  # a delay or a wait calls no service; workers check their own
                handlers = type(bound[step.service].instances[0]).handler_names()
                for handler in (step.action, step.compensation):
                    if handler is not None and handler not in handlers:
                        problem = missing_handler(
                            step.service, flow.services[step.service].import_path, handler,
                            handlers)
                        raise DefinitionUnavailable(
                            f"{flow.source}:{step.line}:1: step {step.name!r}: {problem}")
            self._bindings[flow.definition] = bound
            return bound

    def _start(self, name: str, import_path: str, instances: int) -> ServicePool:
        override = self._overrides.get(import_path, self._overrides.get(name))
        if override is not None:
            objects = list(override) if isinstance(override, Sequence) else [override]
        else:
            cls = import_service(import_path)
            try:
                objects = [cls() for _ in range(instances)]
            except Exception as exc:
                raise DefinitionUnavailable(
                    f"cannot start service {name!r} ({import_path}): "
                    f"{type(exc).__name__}: {exc}") from None
        log.debug("starting service %s (%s) x%d", name, import_path, len(objects))
        return ServicePool.start(name, objects, inbox=self._inbox, faults=self._faults,
                                 activity=self._activity, dead_letters=self._dead_letters)

    def pool(self, import_path: str) -> ServicePool:
        """The running pool for ``import_path`` (``KeyError`` if not started)."""
        return self._pools[import_path]

    def pools(self) -> dict[str, ServicePool]:
        return dict(self._pools)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            self._bindings.clear()
        for pool in pools:
            try:
                pool.stop(timeout)
            except Exception:  # pragma: no cover - best effort at shutdown
                log.exception("stopping service pool %s", pool)
