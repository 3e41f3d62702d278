"""Where a command's services run: in this process, or in workers reached through a broker
(``--broker URL --remote A,B|all``, ``SAGA_BROKER`` / ``SAGA_REMOTE``; :mod:`sagas.remote`),
and where saga events are published (``saga serve --publish URL``).

The CLI states the placement once per command (:func:`place_services`) and every runtime the
command makes (:func:`runtime_options`) uses it, so the commands' functions need not carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UsageProblem

__all__ = ["Placement", "place_services", "placement", "runtime_options"]


@dataclass(frozen=True, slots=True)
class Placement:
    """The broker (``None``: none), the services placed remote (``all``, or names), and the
    broker saga events are published to (``None``: not published)."""

    broker: str | None = None
    remote: tuple[str, ...] = ()
    publish: str | None = None


_placement = Placement()


def place_services(broker: str | None, remote: str | None, publish: str | None = None) -> None:
    """State this command's placement; :class:`UsageProblem` for ``--remote`` without a
    broker."""
    global _placement
    names = tuple(n.strip() for n in (remote or "").split(",") if n.strip())
    if names and not broker:
        raise UsageProblem("--remote needs the broker its workers read: --broker "
                           "redis://HOST[:PORT][/DB] (or SAGA_BROKER)", option="--remote")
    _placement = Placement(broker or None, names, publish or None)


def placement() -> Placement:
    return _placement


def runtime_options(*, client: bool = False) -> dict[str, Any]:
    """The :class:`~sagas.Runtime` arguments of this command's placement. A client drives no
    saga, so it neither publishes commands nor reads replies: none for it."""
    options: dict[str, Any] = {}
    if client:
        return options
    if _placement.broker is not None:
        options.update(broker=_placement.broker, remote=_placement.remote)
    if _placement.publish is not None:
        options["publish"] = _placement.publish
    return options
