"""Human-readable text for the CLI: a saga's timeline, a batch summary, a saga list, recovery
plans, a store's members, and what ``resume``, ``send``, ``serve`` and ``audit`` did.

Text that came from outside (a handler's error, an input, an id) is passed through
:func:`printable` first: control characters are shown escaped (``\\x1b``), never sent to the
terminal, where an escape sequence in a rejection message could rewrite the screen.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..engine.membership import ranges
from ..events import (
    BRANCH_COMPENSATED,
    BRANCH_COMPLETED,
    BRANCH_FAILED,
    BRANCH_HALTED,
    CHOICE_MADE,
    COMPENSATION_FAILED,
    COMPENSATION_RETRYING,
    COMPENSATION_SUCCEEDED,
    REPLY_IGNORED,
    SAGA_FAILED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SUCCEEDED,
    STEP_TIMED_OUT,
    Event,
)

__all__ = ["partition_ranges", "plan_table", "printable", "progress_bar", "render_audit",
           "render_list", "render_member_serving", "render_members", "render_plan",
           "render_plans", "render_resumed", "render_sent", "render_serving", "render_skipped",
           "render_started", "render_summary", "render_timeline", "wide_console"]

# the events whose line shows what failed, what was returned, that a retry is scheduled, which
# branch it was (a branch's failure shows what failed)
_FAILURES = frozenset({STEP_FAILED, COMPENSATION_FAILED, BRANCH_FAILED})
_SUCCESSES = frozenset({STEP_SUCCEEDED, COMPENSATION_SUCCEEDED})
_RETRIES = frozenset({STEP_RETRYING, COMPENSATION_RETRYING})
_BRANCH_ENDS = frozenset({BRANCH_HALTED, BRANCH_COMPLETED, BRANCH_COMPENSATED})

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MIN_DETAIL = 40  # characters of an output shown however narrow the terminal


def printable(text: str, *, one_line: bool = True) -> str:
    """``text`` with control characters (and, if ``one_line``, newlines and tabs) escaped."""
    pattern = _CONTROL_OR_NEWLINE if one_line else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _cause_of_branch_failure(event: Event, by_id: Mapping[str, Event]) -> Event | None:
    """The failure inside a branch that made its block fail: followed back along the
    causation links from the block's ``step.failed``."""
    current = event
    for _ in range(64):
        cause = by_id.get(current.causation_id or "")
        if cause is None:
            return None
        if cause.type in (STEP_FAILED, STEP_TIMED_OUT) and cause.step != event.step:
            return cause
        current = cause
    return None


def _detail(event: Event, by_id: Mapping[str, Event]) -> tuple[str, bool]:
    """What an event says beyond its type and step, and whether it may be shortened (only
    outputs are: an error or a reason is shown whole)."""
    data = event.data
    kind = event.type
    if kind in _FAILURES:
        text = f"{data.get('kind')}: {data.get('error')}"
        if kind == STEP_FAILED and str(data.get("error", "")).startswith("branch "):
            cause = _cause_of_branch_failure(event, by_id)
            if cause is not None:
                why = ("timed out" if cause.type == STEP_TIMED_OUT else
                       f"{cause.data.get('kind')}: {cause.data.get('error')}")
                text += f" ({cause.step} #{cause.attempt} {why})"
        return text, False
    if kind == STEP_TIMED_OUT and data.get("reason"):
        return f"({data['reason']})", False
    if kind == SAGA_FAILED:
        return str(data.get("reason")), False
    if kind in _SUCCESSES:
        output = data.get("output")
        if output is None:  # a parallel block: its branches' outputs are theirs
            return "", True
        return json.dumps(output, separators=(",", ":")), True
    if kind in _RETRIES:
        return "next attempt scheduled", False
    if kind == REPLY_IGNORED:
        return f"{data.get('phase')} attempt {data.get('attempt')}: {data.get('outcome')}", False
    if kind in _BRANCH_ENDS:
        return f"branch {data.get('branch')}", False
    if kind == CHOICE_MADE:
        return f"took {data.get('branch')}", False
    return "", False


def render_timeline(result: Any, width: int | None = None) -> str:
    """A saga's history, one line per event, then its end. Columns fit the longest step
    name; outputs are shortened to the terminal's ``width``, errors never."""
    width = width if width is not None else shutil.get_terminal_size((100, 24)).columns
    history: Sequence[Event] = result.history
    by_id = {e.event_id: e for e in history}
    wheres = [("" if e.step is None else e.step + (f" #{e.attempt}" if e.attempt is not None
                                                   else "")) for e in history]
    column = max([24, *(len(w) for w in wheres)])
    lines = [printable(f"saga {result.saga_id}  {result.flow} v{result.version}")]
    start = history[0].at if history else 0.0
    for event, where in zip(history, wheres, strict=True):
        detail, shortenable = _detail(event, by_id)
        head = f"  {event.seq:>3} {'+' + format(event.at - start, '.3f') + 's':>10}  " \
               f"{event.type:<24} {where:<{column}} "
        room = max(MIN_DETAIL, width - len(head))
        if shortenable and len(detail) > room:
            detail = detail[:room - 3] + "..."
        lines.append(printable(head + detail).rstrip())
    lines.append(result.status + (f" ({printable(result.reason)})" if result.reason else ""))
    return "\n".join(lines)


def render_summary(flow: str, summary: Mapping[str, Any]) -> str:
    """A batch's counts, throughput and latency percentiles."""
    lat = summary["latency_ms"]
    return "\n".join([
        f"{flow}: {summary['count']} sagas in {summary['elapsed_s']:.2f}s "
        f"({summary['sagas_per_s']:.0f} sagas/s)",
        f"  completed    {summary['completed']}",
        f"  compensated  {summary['compensated']}",
        f"  failed       {summary['failed']}",
        f"  latency ms   p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}",
    ])


def render_list(rows: Sequence[Mapping[str, Any]]) -> str:
    """``saga list``: one saga a line, newest first; says so when there is none."""
    if not rows:
        return "no sagas"
    column = max(36, *(len(str(r["saga_id"])) for r in rows))
    lines = []
    for row in rows:
        started = datetime.datetime.fromtimestamp(row["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(printable(f"{row['saga_id']:<{column}} {row['flow']} v{row['version']:<4} "
                               f"{row['status']:<12} {started}"))
    return "\n".join(lines)


def render_resumed(summary: Mapping[str, int]) -> str:
    """``saga resume``: how many sagas were resumed and how they ended."""
    return (f"resumed {summary['resumed']} sagas: {summary['completed']} completed, "
            f"{summary['compensated']} compensated, {summary['failed']} failed")


def render_sent(sent: Any) -> str:
    """``saga send``: the event recorded, or that it had been sent before."""
    event = sent.event
    if sent.recorded:
        return f"sent {event.type} key={event.key} (id {event.event_id})"
    return f"already sent: {event.type} key={event.key} (id {event.event_id}); ignored"


def render_serving(flow: Any) -> str:
    """``saga serve``: a flow is served, started by which event, with which id (or, as a
    member, without a trigger: its sagas started from anywhere)."""
    if flow.trigger is None:
        return f"serving {flow.name}: drives its sagas, started from any shell; stop with Ctrl-C"
    return (f"serving {flow.name}: a saga per {flow.trigger.event} event "
            f"(id {flow.trigger.id}); stop with Ctrl-C")


def render_member_serving(serving: Any) -> str:
    """``saga serve`` as a member: who it is, on which store, the partitions it holds."""
    share = (f"partitions {partition_ranges(serving.held)} of {serving.partitions}"
             if serving.held else f"none of the {serving.partitions} partitions yet (the "
                                  "members share them within seconds)")
    return printable(f"member {serving.member} serving on {serving.store}: {share}, leases "
                     f"of {serving.lease_ttl:g}s")


def render_started(flow_name: str, saga_id: str, as_json: bool) -> str:
    """``saga serve``: a saga a trigger started (a JSON object with ``--json``)."""
    return (json.dumps({"started": saga_id, "flow": flow_name}) if as_json
            else f"started {saga_id}")


def render_skipped(flow_name: str, event_id: str, why: str) -> str:
    """``saga serve``: an event that could start no saga of a flow, and why."""
    return f"skipped event {event_id} for {flow_name}: {why}"


def render_audit(report: Any) -> str:
    """``saga audit``: each violation with its saga id and seq, or that there is none."""
    if not report.violations:
        return "ok: no violations"
    return "\n".join(violation.format() for violation in report.violations)


@contextlib.contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while the block runs; yields ``update(done)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=False)
    task = bar.add_task(printable(label), total=total)
    bar.start()
    try:
        yield lambda done: bar.update(task, completed=done)
    finally:
        bar.stop()


def _short_outcome(p: Any) -> str:
    if p.status == "failed":
        return f"failed ({p.reason})"
    undo = ", ".join(s for s, _ in p.compensations) or "nothing"
    return f"undo {undo} → {p.status}"


def render_plans(found: Any) -> str:
    """The plans of one step failing (a :class:`~.plan.RecoveryPlans`), one after another; or,
    for every step and kind, a table of them (:func:`plan_table`)."""
    if found.step is None:
        return _captured(plan_table(found.compiled, found.plans), 140)
    return "\n".join(render_plan(p, found.compiled) for p in found.plans)


def render_plan(p: Any, compiled: Any) -> str:
    """One plan, as `saga plan --fail STEP` prints it."""
    how = {"rejected": "is rejected", "error": "runs out of attempts on errors",
           "timeout": "runs out of attempts on timeouts"}[p.kind]
    route = f" (after {p.describe_route()})" if p.route else ""
    lines = [f"{p.flow} v{p.version}: if {p.step} {how}{route}"]
    lines.append(f"  ran: {' → '.join(p.ran)}")
    if p.compensations:
        lines.append("  compensate, in this order:")
        number = 0
        previous_track = None
        for step, compensation in p.compensations:
            track = compiled.track_of.get(step)
            if track is None:
                number += 1
                lines.append(f"    {number}. {step} ({compensation})")
            else:
                if previous_track is None:  # a parallel block: its branches undo together
                    number += 1
                    lines.append(f"    {number}. the branches, concurrently (each in reverse):")
                lines.append(f"       - branch {track}: {step} ({compensation})")
            previous_track = track
    else:
        lines.append("  compensate: nothing")
    if p.reason == "pivot_unknown":
        lines.append(f"  ends failed (pivot_unknown): {p.step} is the pivot and its outcome is "
                     "unknown, so nothing is undone; a person must check it")
    elif p.reason == "forward_recovery":
        lines.append(f"  ends failed (forward_recovery): {p.step} comes after the pivot; "
                     "`saga retry` drives it forward")
    else:
        lines.append(f"  ends {p.status}")
    return "\n".join(lines)


def wide_console(width: int = 140) -> Any:
    """A rich console on stdout at least ``width`` columns wide (a plan table's width), lines
    never wrapped."""
    from rich.console import Console

    return Console(soft_wrap=False, width=max(width, Console().width))


def _captured(renderable: Any, width: int) -> str:
    """What :func:`wide_console` would print of ``renderable``, as text (no final newline)."""
    console = wide_console(width)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().rstrip("\n")


def plan_table(compiled: Any, every: Sequence[Any]) -> Any:
    """Every step's recovery for each way it can fail, as a rich table (`saga plan`)."""
    from rich.table import Table

    table = Table(title=f"{compiled.flow.name} v{compiled.flow.version}: recovery if a step "
                        "fails", title_justify="left")
    table.add_column("step")
    for k in ("rejected", "error", "timeout"):
        table.add_column(f"{k}")
    by_step: dict[str, dict[str, dict[str, str]]] = {}  # step -> route -> kind -> outcome
    for p in every:
        by_step.setdefault(p.step, {}).setdefault(p.describe_route(), {})[p.kind] = \
            _short_outcome(p)
    for step in compiled.flow.steps:
        name = f"{step.name} (pivot)" if step.pivot else step.name
        track = compiled.track_of.get(step.name)
        if track is not None:
            name = f"{name} (in {track})"
        if step.is_delay:
            table.add_row(f"{name} (delay)", *(["cannot fail"] * 3))
            continue
        if step.is_parallel:
            table.add_row(f"{name} (parallel)", *(["see its branches' steps"] * 3))
            continue
        routes = by_step[step.name]
        for route, outcomes in routes.items():
            label = f"{name} (after {route})" if len(routes) > 1 else name
            if step.is_wait:
                table.add_row(f"{label} (wait)", "—", "—", outcomes["timeout"])
            else:
                table.add_row(label, *(outcomes.get(k, "—") for k in
                                       ("rejected", "error", "timeout")))
    return table


def partition_ranges(partitions: Iterable[int]) -> str:
    """``0-31,40,42-43``: partitions as ranges (``-`` for none)."""
    return ranges(partitions) or "-"


def _seen(member: Mapping[str, Any]) -> str:
    if member["seen_ago"] is None:
        return "never announced"
    ago = f"{member['seen_ago']:.1f}s ago"
    return ago if member["alive"] else f"gone ({ago})"


def _epochs(epochs: Mapping[str, int]) -> str:
    values = sorted(set(epochs.values()))
    if not values:
        return "-"
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}"


MAX_UNDRIVEN_SHOWN = 20
"""Undriven sagas ``saga members`` lists one a line (``--json`` lists them all)."""


def render_members(report: Any) -> str:
    """``saga members``: a table of the members (partitions as ranges, epochs, last seen,
    host and pid, flows run, sagas left undriven), a summary line, and the sagas nobody
    drives."""
    from rich.table import Table

    alive = [m for m in report.members if m["alive"]]
    held = report.partitions - len(report.unheld_partitions)
    lines: list[str] = []
    if report.members:
        lines.append(printable(f"members of {report.store}:"))
        table = Table()
        for column in ("member", "host:pid", "last seen", "partitions", "epochs", "runs",
                       "undriven"):
            table.add_column(column, overflow="fold")
        for m in report.members:
            table.add_row(printable(m["member"]), printable(f"{m['host']}:{m['pid']}"),
                          _seen(m), partition_ranges(m["partitions"]), _epochs(m["epochs"]),
                          printable(", ".join(map(str, m["runs"]))) or "-", str(m["undriven"]))
        lines.append(_captured(table, 120))
        summary = (f"{len(alive)} of {len(report.members)} members alive; {held} of "
                   f"{report.partitions} partitions held")
    else:
        summary = (f"no members: {report.store} has {report.partitions} partitions, "
                   f"{held} held")
    if report.unheld_partitions and (report.members or report.shared):
        summary += f" (unheld: {partition_ranges(report.unheld_partitions)})"
    undriven = report.undriven
    lines.append(printable(summary + (f"; {len(undriven)} sagas in flight undriven" if undriven
                                      else "")))
    for saga in undriven[:MAX_UNDRIVEN_SHOWN]:
        why = (f"member {saga['member']} cannot run flow {saga['flow']}"
               if saga["why"] == "cannot_run" else
               f"no member holds partition {saga['partition']}")
        lines.append(printable(f"undriven {saga['saga_id']} ({saga['flow']}): {why}"))
    if len(undriven) > MAX_UNDRIVEN_SHOWN:
        lines.append(f"... and {len(undriven) - MAX_UNDRIVEN_SHOWN} more (--json lists them all)")
    return "\n".join(lines)
