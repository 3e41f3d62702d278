"""What the ``saga`` commands do, without the argument parsing, printing and exit codes of
``cli.py``.

One module per command or job; each command's function takes the parsed arguments and returns
a plain result (a :class:`~sagas.SagaResult`, a summary dict, a report with ``status`` and
``to_json()``) that the CLI prints and maps to an exit code. Problems are raised as the
library's errors (:mod:`sagas.errors`) or :class:`UsageProblem`; a first Ctrl-C or SIGTERM as
:class:`Stopped`, which says what was left in flight.

- flows: :mod:`.validate` (``saga validate``), :mod:`.graph`, :mod:`.plan`;
- running sagas: :mod:`.run` (one saga, or a batch through :mod:`.batch`), :mod:`.resume`,
  :mod:`.act` (``retry``, ``cancel``), :mod:`.serve`, :mod:`.send`;
- reading a store: :mod:`.reading` (``list``, ``show``), :mod:`.audit`, :mod:`.members`;
- ``saga test``: :mod:`.property_testing` (the CLI imports :mod:`sagas.testing` itself);
- services for orchestrators elsewhere: :mod:`.worker` (``saga worker``), and the commands
  they gave up on: :mod:`.dead_letters` (``saga dead-letters``);
- shared: :mod:`.session` (a store or runtime for one command: a client of a shared store's
  live members, or a member itself), :mod:`.inputs` (JSON inputs),
  :mod:`.interrupts` (graceful stop), :mod:`.errors` (what an error says), :mod:`.process`
  (logging, GC, stdout), :mod:`.render` (text for the terminal).

Adding a command: a module here with its function and result, re-exported below, and a
function in ``cli.py`` that parses, calls it, prints, and exits through the table.
"""

from __future__ import annotations

from ..remote.broker import BrokerUnavailable
from . import help_texts
from .act import cancel_saga, retry_saga
from .audit import AuditReport, audit_store_at
from .dead_letters import DeadLetters, dead_letters, render_dead_letters
from .errors import UsageProblem, error_lines, one_line
from .graph import draw_flow
from .help_texts import *  # noqa: F403 - the help texts, listed in help_texts.__all__
from .interrupts import Stopped, graceful_stop
from .members import MembersReport, store_members
from .placement import place_services, runtime_options
from .plan import RecoveryPlans, recovery_plans
from .process import configure_process, silence_stdout
from .property_testing import (
    coverage_warning,
    flow_test_status,
    load_flow_and_examples,
    run_flow_test,
)
from .reading import list_sagas, show_saga
from .render import (
    partition_ranges,
    plan_table,
    printable,
    progress_bar,
    render_audit,
    render_list,
    render_member_serving,
    render_members,
    render_plan,
    render_plans,
    render_resumed,
    render_sent,
    render_serving,
    render_skipped,
    render_started,
    render_summary,
    render_timeline,
    wide_console,
)
from .resume import resume_orphans
from .run import RunRequest, SingleRun, batch_status, prepare_run, run_many, run_one
from .send import Sent, event_data, send_event
from .serve import MemberServing, load_served_flows, load_triggered_flows, serve_flows
from .ui import read_token, serve_ui
from .validate import CheckedFlow, FlowChecks
from .worker import WorkerServing, load_worker_flows, run_worker

__all__ = [
    *help_texts.__all__,
    "AuditReport",
    "BrokerUnavailable",
    "CheckedFlow",
    "DeadLetters",
    "FlowChecks",
    "MemberServing",
    "MembersReport",
    "RecoveryPlans",
    "RunRequest",
    "Sent",
    "SingleRun",
    "Stopped",
    "UsageProblem",
    "WorkerServing",
    "audit_store_at",
    "batch_status",
    "cancel_saga",
    "configure_process",
    "coverage_warning",
    "dead_letters",
    "draw_flow",
    "error_lines",
    "event_data",
    "flow_test_status",
    "graceful_stop",
    "list_sagas",
    "load_flow_and_examples",
    "load_served_flows",
    "load_triggered_flows",
    "load_worker_flows",
    "one_line",
    "partition_ranges",
    "place_services",
    "plan_table",
    "prepare_run",
    "printable",
    "progress_bar",
    "read_token",
    "recovery_plans",
    "render_audit",
    "render_dead_letters",
    "render_list",
    "render_member_serving",
    "render_members",
    "render_plan",
    "render_plans",
    "render_resumed",
    "render_sent",
    "render_serving",
    "render_skipped",
    "render_started",
    "render_summary",
    "render_timeline",
    "resume_orphans",
    "retry_saga",
    "run_flow_test",
    "run_many",
    "run_one",
    "run_worker",
    "runtime_options",
    "send_event",
    "serve_flows",
    "serve_ui",
    "show_saga",
    "silence_stdout",
    "store_members",
    "wide_console",
]
