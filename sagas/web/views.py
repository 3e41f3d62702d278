"""What the console's API answers, read from (or written to) an open saga store: no HTTP
here, so that each answer is a plain function of the store and its arguments.

The shapes are the CLI's ``--json`` ones where the CLI has the command (``saga list``,
``show``, ``members``, ``audit``); the console's own (filters, actions, flows, the diagram)
are documented on each function. Nothing here drives a saga: a cancel or a retry is written
to the store as ``saga cancel`` from another shell writes it, for the saga's owner to act on.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..audit import audit_saga
from ..commands.members import members_of
from ..commands.session import is_shared, live_members
from ..engine.results import load_result
from ..errors import InputError, UnknownSaga
from ..stores import TERMINAL, SagaHeader, SagaStore, partition_of
from .diagram import saga_diagram

__all__ = ["ACTIONS", "DEFAULT_STUCK_AFTER", "IN_FLIGHT", "STATUSES", "NotFound", "SagaFilter",
           "act_on", "act_on_many", "definition", "known_flows", "members", "number", "page_of",
           "row", "saga_graph", "saga_rows", "saga_show", "stuck_sagas"]

STATUSES = ("running", "compensating", "completed", "compensated", "failed")
IN_FLIGHT = ("running", "compensating")
ACTIONS = ("cancel", "retry")
DEFAULT_STUCK_AFTER = 3600.0  # as saga audit's --stuck-after
MAX_PAGE = 500
MAX_BULK = 10_000
_REASON = re.compile(r"[a-z_]{1,64}")


class NotFound(LookupError):
    """What was asked for is not in the store."""


def number(name: str, text: str | None, *, low: float = 0.0) -> float | None:
    """``text`` as a finite number of at least ``low`` (``None`` if empty); ``InputError``
    naming ``name`` otherwise."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value) or value < low:
        raise InputError(f"{name} must be a finite number of at least {low:g}")
    return value


def _time(name: str, text: str | None) -> float | None:
    """A Unix time in seconds, or an ISO 8601 date and time (UTC unless it says)."""
    if text is None or text == "":
        return None
    try:
        return number(name, text, low=-1e12)
    except InputError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} must be a Unix time or an ISO 8601 date, not "
                         f"{text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _count(name: str, text: str | None, default: int, high: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 9:
        raise InputError(f"{name} must be a whole number from 0 to {high}")
    return min(int(text), high)


@dataclass(frozen=True)
class SagaFilter:
    """Which sagas a list or a bulk action is about: every field given must hold.

    ``statuses``: one of them (``status=running,compensating``); ``flow``: the flow's name;
    ``reason``: the reason a ``failed`` saga gives; ``since`` / ``until``: started at or
    after / before (Unix seconds); ``prefix``: the saga id starts with it."""

    statuses: tuple[str, ...] = ()
    flow: str | None = None
    reason: str | None = None
    since: float | None = None
    until: float | None = None
    prefix: str | None = None

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> SagaFilter:
        """From query parameters (or a JSON object's fields, as strings or numbers);
        ``InputError`` names the one that is malformed."""
        def text(name: str) -> str | None:
            value = params.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise InputError(f"{name} must be a string")
            return str(value).strip()

        statuses = tuple(s for s in (text("status") or "").split(",") if s.strip())
        statuses = tuple(s.strip() for s in statuses)
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise InputError(f"unknown status {unknown[0][:40]!r}: one of {', '.join(STATUSES)}")
        reason = text("reason") or None
        if reason is not None and not _REASON.fullmatch(reason):
            raise InputError(f"unknown reason {reason[:40]!r}")
        flow = text("flow") or None
        prefix = params.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise InputError("prefix must be a string")
        return cls(statuses=tuple(dict.fromkeys(statuses)), flow=flow, reason=reason,
                   since=_time("since", text("since")), until=_time("until", text("until")),
                   prefix=prefix or None)

    def to_json(self) -> dict[str, Any]:
        return {"status": ",".join(self.statuses) or None, "flow": self.flow,
                "reason": self.reason, "since": self.since, "until": self.until,
                "prefix": self.prefix}

    @property
    def _store_side(self) -> bool:
        """Whether the store's own ``list`` (by status and flow) does all of the filtering."""
        return self.reason is None and self.since is None and self.until is None \
            and self.prefix is None

    def matches(self, header: SagaHeader) -> bool:
        return ((not self.statuses or header.status in self.statuses)
                and (self.flow is None or header.flow == self.flow)
                and (self.reason is None or header.reason == self.reason)
                and (self.since is None or header.started_at >= self.since)
                and (self.until is None or header.started_at < self.until)
                and (self.prefix is None or header.saga_id.startswith(self.prefix)))

    def headers(self, store: SagaStore, limit: int | None = None) -> Iterable[SagaHeader]:
        """The sagas that match, newest first; at most ``limit`` if given. The store filters
        by flow and status (one list per status, merged), so a bulk cancel reads the sagas in
        flight, not every saga; reason, time and prefix are filtered here."""
        listed = limit if self._store_side else None
        lists = [store.list(status=status, flow=self.flow, limit=listed)
                 for status in (self.statuses or (None,))]
        found: Iterable[SagaHeader] = lists[0] if len(lists) == 1 else heapq.merge(
            *lists, key=lambda h: (h.started_at, h.saga_id), reverse=True)
        if not self._store_side:
            found = (h for h in found if self.matches(h))
        return found if limit is None else itertools.islice(found, limit)


def row(header: SagaHeader) -> dict[str, Any]:
    """A saga as ``saga list --json`` shows it, and its ``reason``."""
    return {"saga_id": header.saga_id, "flow": header.flow, "version": header.version,
            "status": header.status, "reason": header.reason,
            "started_at": header.started_at, "updated_at": header.updated_at}


def page_of(params: Mapping[str, Any]) -> tuple[int, int]:
    """``(limit, offset)`` from query parameters: 50 and 0 by default, a page at most
    :data:`MAX_PAGE`."""
    return (_count("limit", params.get("limit"), 50, MAX_PAGE),
            _count("offset", params.get("offset"), 0, 10**9))


def saga_rows(store: SagaStore, chosen: SagaFilter, limit: int = 50,
              offset: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """One page of the sagas ``chosen`` matches, newest first, in ``saga list --json``'s shape
    (with ``reason``), and whether more follow."""
    headers = list(chosen.headers(store, offset + limit + 1))
    return [row(h) for h in headers[offset:offset + limit]], len(headers) > offset + limit


def saga_show(store: SagaStore, saga_id: str) -> dict[str, Any]:
    """``saga show ID --json``: ``{"saga_id", "flow", "version", "definition", "status",
    "reason", "context", "history": [EVENT, ...]}``; ``UnknownSaga`` if there is none."""
    return load_result(store, saga_id).to_json()


class _Drivers:
    """Who can act on a saga's requests now: its owner, if alive, or a live member holding
    its partition (read once per answer)."""

    def __init__(self, store: SagaStore) -> None:
        self.store = store
        self.partitions = 0
        self.held: set[int] = set()
        members = live_members(store)
        if members:
            alive = set(members)
            self.partitions = store.partitions()
            self.held = {lease.partition for lease in store.leases()
                         if lease.held and lease.member in alive}
        self._owners: dict[str, bool] = {}

    def drive(self, header: SagaHeader) -> bool:
        if self.held and partition_of(header.saga_id, self.partitions) in self.held:
            return True
        if is_shared(self.store) or not header.owner:
            return False
        if header.owner not in self._owners:
            try:
                self._owners[header.owner] = bool(self.store.owner_alive(header.owner))
            except ValueError:
                self._owners[header.owner] = False
        return self._owners[header.owner]


def _requester() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "host"
    return f"saga-ui.{host}.{os.getpid()}"


def _why_not(kind: str, header: SagaHeader) -> str | None:
    if kind == "cancel" and header.status in TERMINAL:
        return f"saga {header.saga_id} is {header.status}: nothing to cancel"
    if kind == "retry" and header.status != "failed":
        return f"saga {header.saga_id} is {header.status}: only a failed saga is retried"
    return None


def _no_owner(kind: str, saga_id: str) -> str:
    if kind == "cancel":
        return (f"no owner: no live process drives saga {saga_id}; run `saga resume` (or "
                f"`saga cancel {saga_id}`) to act on the cancel")
    return f"no owner: no live process drives saga {saga_id}; run `saga retry {saga_id}`"


def _act(store: SagaStore, drivers: _Drivers, header: SagaHeader, kind: str,
         requester: str) -> dict[str, Any]:
    why = _why_not(kind, header)
    if why is not None:
        return {"saga_id": header.saga_id, "action": kind, "recorded": False,
                "request_id": None, "status": header.status, "driven": None, "message": why}
    request_id = store.request(header.saga_id, kind, {"requested_by": requester})
    driven = drivers.drive(header)
    return {"saga_id": header.saga_id, "action": kind, "recorded": True,
            "request_id": request_id, "status": header.status, "driven": driven,
            "message": (f"{kind} recorded: the process driving saga {header.saga_id} acts on "
                        "it" if driven else _no_owner(kind, header.saga_id))}


def act_on(store: SagaStore, saga_id: str, kind: str) -> dict[str, Any]:
    """Write a ``cancel`` or ``retry`` request for one saga (as ``saga cancel`` / ``saga
    retry`` from another shell do, for its owner to act on)::

        {"saga_id", "action", "recorded": bool, "request_id": int | null, "status",
         "driven": bool | null, "message"}

    ``recorded`` is false (and nothing written) for a saga that has ended (cancel) or is
    not ``failed`` (retry); ``driven`` says whether a live process drives the saga, and when
    none does ``message`` says what to run (``no owner: ... saga resume``). ``UnknownSaga``
    if there is none."""
    if kind not in ACTIONS:
        raise InputError(f"unknown action {kind[:40]!r}: cancel or retry")
    return _act(store, _Drivers(store), store.header(saga_id), kind, _requester())


def _bulk_candidates(kind: str, chosen: SagaFilter) -> SagaFilter:
    allowed = IN_FLIGHT if kind == "cancel" else ("failed",)
    wanted = tuple(s for s in (chosen.statuses or allowed) if s in allowed)
    return SagaFilter(statuses=wanted, flow=chosen.flow, reason=chosen.reason,
                      since=chosen.since, until=chosen.until, prefix=chosen.prefix)


def act_on_many(store: SagaStore, kind: str, *, chosen: SagaFilter | None = None,
                saga_ids: Sequence[str] | None = None, dry_run: bool = False,
                limit: int = 1000) -> dict[str, Any]:
    """A bulk cancel or retry: of the sagas in ``saga_ids`` (as a confirmation listed them),
    or of every saga ``chosen`` matches that it applies to (in flight for a cancel,
    ``failed`` for a retry), at most ``limit``::

        {"action", "filter": {...} | null, "dry_run": bool, "matched": n,
         "sagas": [{"saga_id", "flow", "status", ...}]                      # dry run
         "results": [<act_on's shape>, ...], "recorded": n, "no_owner": n}  # otherwise

    A dry run writes nothing: it is what the console shows before asking to confirm."""
    if kind not in ACTIONS:
        raise InputError(f"unknown action {kind[:40]!r}: cancel or retry")
    limit = max(0, min(limit, MAX_BULK))
    if saga_ids is not None:
        headers: list[SagaHeader] = []
        for saga_id in list(dict.fromkeys(saga_ids))[:limit]:
            try:
                headers.append(store.header(saga_id))
            except UnknownSaga:
                continue
        if chosen is not None:
            headers = [h for h in headers if chosen.matches(h)]
    else:
        chosen = chosen or SagaFilter()
        if chosen.statuses and not set(chosen.statuses) & set(
                IN_FLIGHT if kind == "cancel" else ("failed",)):
            headers = []
        else:
            headers = list(_bulk_candidates(kind, chosen).headers(store, limit))
    shape: dict[str, Any] = {"action": kind,
                             "filter": chosen.to_json() if chosen is not None else None,
                             "dry_run": dry_run, "matched": len(headers)}
    if dry_run:
        shape["sagas"] = [row(h) for h in headers if _why_not(kind, h) is None]
        shape["matched"] = len(shape["sagas"])
        return shape
    drivers, requester = _Drivers(store), _requester()
    results = [_act(store, drivers, h, kind, requester) for h in headers]
    shape["results"] = results
    shape["recorded"] = sum(1 for r in results if r["recorded"])
    shape["no_owner"] = sum(1 for r in results if r["recorded"] and not r["driven"])
    return shape


def saga_graph(store: SagaStore, saga_id: str) -> dict[str, Any]:
    """The saga on its flow's diagram (:func:`sagas.web.diagram.saga_diagram`'s shape), and
    ``driven``: whether a live process drives it now (its owner, or a member holding its
    partition); ``UnknownSaga`` if there is none."""
    record = store.load(saga_id)
    shape = saga_diagram(record)
    shape["driven"] = _Drivers(store).drive(record.header)
    return shape


def known_flows(store: SagaStore) -> list[dict[str, Any]]:
    """The flow definitions the store's sagas run on, by name then version::

        [{"flow", "version", "definition" (sha256), "sagas": n,
          "statuses": {status: n}, "first_started_at", "last_started_at"}, ...]"""
    found: dict[str, dict[str, Any]] = {}
    for header in store.list():
        entry = found.get(header.definition)
        if entry is None:
            entry = found[header.definition] = {
                "flow": header.flow, "version": header.version,
                "definition": header.definition, "sagas": 0, "statuses": {},
                "first_started_at": header.started_at, "last_started_at": header.started_at}
        entry["sagas"] += 1
        entry["statuses"][header.status] = entry["statuses"].get(header.status, 0) + 1
        entry["first_started_at"] = min(entry["first_started_at"], header.started_at)
        entry["last_started_at"] = max(entry["last_started_at"], header.started_at)
    return sorted(found.values(), key=lambda e: (e["flow"], e["version"],
                                                 -e["last_started_at"]))


def definition(store: SagaStore, sha256: str) -> dict[str, Any]:
    """One stored flow definition: ``{"definition", "text"}`` (:class:`NotFound` if
    absent)."""
    if re.fullmatch(r"[0-9a-f]{64}", sha256):
        try:
            return {"definition": sha256, "text": store.definition(sha256)}
        except KeyError:
            pass
    raise NotFound(f"no flow definition {sha256[:64]!r} in this store")


def stuck_sagas(store: SagaStore, after: float, *, now: float | None = None) -> dict[str, Any]:
    """The sagas in flight that are stuck, as ``saga audit --stuck-after AFTER`` finds them,
    and those that have not moved for ``after`` seconds::

        {"after": s, "violations": [{"saga_id", "seq", "rule", "message"}, ...],
         "stalled": [{"saga_id", "flow", "version", "status", "reason", "started_at",
                      "updated_at", "idle": seconds, "driven": bool}, ...]}

    ``violations`` are the audit's (its ``saga audit --json`` shape) for the rules about
    sagas that do not end: ``stuck_retry_forever`` (compensating for longer than ``after``)
    and ``orphaned`` (in flight with no live process driving it)."""
    moment = time.time() if now is None else now
    drivers = _Drivers(store)
    violations: list[dict[str, Any]] = []
    stalled: list[dict[str, Any]] = []
    for saga_id in store.in_flight():
        try:
            record = store.load(saga_id)
        except UnknownSaga:  # pragma: no cover - stores never delete sagas
            continue
        driven = drivers.drive(record.header)
        for violation in audit_saga(record, now=moment, stuck_after=after, owner_alive=driven):
            if violation.rule in ("stuck_retry_forever", "orphaned"):
                violations.append(violation.to_json())
        idle = moment - record.header.updated_at
        if idle > after:
            stalled.append({**row(record.header), "idle": round(idle, 3), "driven": driven})
    stalled.sort(key=lambda s: -s["idle"])
    return {"after": after, "violations": violations, "stalled": stalled}


def members(store: SagaStore) -> dict[str, Any]:
    """``saga members --json``."""
    return members_of(store).to_json()
