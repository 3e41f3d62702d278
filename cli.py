"""The ``saga`` command: parses arguments, calls the library, renders. Nothing else: each
command calls :mod:`sagas.commands`, prints what it returns and exits with the code its outcome
(a status, or the error that ended it) has in the one table below (DESIGN.md §6). Errors go to
stderr as one line, never a traceback unless ``--debug``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from sagas import __version__, commands, errors

# -- the one table: a command's outcome -> its exit code ------------------------------------------
EXIT_OK, EXIT_COMPENSATED, EXIT_USAGE, EXIT_FAILED, EXIT_UNKNOWN, EXIT_STORE = 0, 1, 2, 3, 4, 5
EXIT_BROKER, EXIT_INTERNAL, EXIT_SIGNALLED, EXIT_INTERRUPTED, EXIT_PIPE = 6, 70, 128, 130, 141
EXIT_VIOLATIONS = EXIT_COUNTEREXAMPLE = 1
EXIT_BY_STATUS = {"ok": EXIT_OK, "completed": EXIT_OK, "compensated": EXIT_COMPENSATED,
                  "failed": EXIT_FAILED, "invalid": EXIT_USAGE, "violations": EXIT_VIOLATIONS,
                  "counterexample": EXIT_COUNTEREXAMPLE}
# the first match, most specific first, decides
EXIT_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (errors.FlowError, EXIT_USAGE), (errors.InputError, EXIT_USAGE),
    (errors.IdConflict, EXIT_USAGE), (errors.DefinitionUnavailable, EXIT_USAGE),
    (errors.BadStoreUrl, EXIT_USAGE),
    (errors.SagaOrphaned, EXIT_FAILED), (errors.UnknownSaga, EXIT_UNKNOWN),
    (errors.StoreError, EXIT_STORE), (commands.BrokerUnavailable, EXIT_BROKER),
    (errors.SagactorError, EXIT_COMPENSATED), (click.UsageError, EXIT_USAGE),
    (click.Abort, EXIT_INTERRUPTED), (KeyboardInterrupt, EXIT_INTERRUPTED),
    (BrokenPipeError, EXIT_PIPE), (Exception, EXIT_INTERNAL))


def exit_code_of(outcome: str | BaseException) -> int:
    """The exit code of a command's outcome: a status (:data:`EXIT_BY_STATUS`; one it does not
    know counts as failed), or the error that ended it (:data:`EXIT_BY_ERROR`; a signal that
    stopped it gracefully exits 128 + the signal's number)."""
    if isinstance(outcome, str):
        return EXIT_BY_STATUS.get(outcome, EXIT_FAILED)
    if isinstance(outcome, commands.Stopped):
        return EXIT_SIGNALLED + outcome.signum
    return next(code for kind, code in EXIT_BY_ERROR if isinstance(outcome, kind))


def _exit(outcome: str | BaseException) -> NoReturn:
    sys.exit(exit_code_of(outcome))


def _err(message: str) -> None:
    click.echo(commands.printable(message, one_line=False), err=True)


def _emit(as_json: bool, document: Callable[[], Any], text: Callable[[], str]) -> None:
    """One JSON document (``--json``) or the text on stdout."""
    click.echo(json.dumps(document(), indent=2) if as_json else text())


def _show_saga(result: Any, as_json: bool, note: str | None = None) -> None:
    """Print how a saga ended (after the note on stderr, if there is one)."""
    if note is not None:
        _err(f"note: {note}")
    _emit(as_json, result.to_json, lambda: commands.render_timeline(result))


class SagaCommand(click.Command):
    """A ``saga`` subcommand: library errors are one line on stderr (a traceback with
    ``--debug``) and exit with their code; a usage problem is a usage error of the command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except commands.UsageProblem as problem:
            if problem.option is None:
                raise click.UsageError(problem.message, ctx=ctx) from None
            raise click.BadParameter(problem.message, ctx, param_hint=problem.option) from None
        except KeyboardInterrupt as interrupt:  # a Stopped says what was left in flight
            _err(getattr(interrupt, "report", "interrupted"))
            _exit(interrupt)
        except BrokenPipeError as gone:  # `saga list | head -1`: the reader has gone; say nothing
            commands.silence_stdout()
            _exit(gone)
        except Exception as exc:
            if ctx.find_root().params.get("debug"):
                raise
            for line in commands.error_lines(exc):
                _err(line)
            _exit(exc)


class SagaGroup(click.Group):
    """Prints every error, usage errors included, as one line on stderr."""

    command_class = SagaCommand

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            _err(exc.format_message())
            _exit(exc)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "saga"
            _err(f"error: {exc.format_message()} (see '{command} --help')")
            _exit(exc)
        except click.ClickException as exc:  # click's own code (e.g. a file it cannot open)
            _err(f"error: {exc.format_message()}")
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            _err("aborted")
            _exit(exc)
        finally:
            try:
                sys.stdout.flush()
            except BrokenPipeError:  # the reader went away before the last line: say nothing
                commands.silence_stdout()
                raise SystemExit(EXIT_PIPE) from None


@click.group(cls=SagaGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="saga", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human",
              envvar="SAGA_LOG_FORMAT", help=commands.LOG_FORMAT_HELP)
def main(debug: bool, log_format: str) -> None:
    """sagactor: run multi-step business transactions (sagas) declared in YAML.

    A flow lists steps, each an action on a service with a compensation that undoes it. When a
    step fails, the steps already done are compensated in reverse order.

    \b
    Exit codes: 0 ok, 1 compensated, 2 usage error or invalid input, 3 failed (needs a person),
    4 unknown saga id, 5 store unusable, 6 broker unusable.
    """
    commands.configure_process(debug, log_format)  # logs as asked; an application's GC


json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
metrics_option = click.option("--metrics", metavar="HOST:PORT", envvar="SAGA_METRICS",
                              help=commands.METRICS_HELP)
DEFAULT_STORE = "sqlite:///.saga/sagas.db"
store_option = click.option(
    "--store", "store_url", envvar="SAGA_STORE", default=DEFAULT_STORE, show_default=True,
    metavar="URL", help="Where sagas are kept: sqlite:///PATH (relative; four slashes for an "
                        "absolute path), postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (the "
                        "postgres extra) or memory:// (throwaway). Env: SAGA_STORE.")


def store_and_json(command: Callable[..., Any]) -> Callable[..., Any]:
    return store_option(json_option(command))


BROKER_HELP = "redis://[:PASSWORD@]HOST[:PORT][/DB] (the redis extra). Env: SAGA_BROKER."


def placed(command: Callable[..., Any]) -> Callable[..., Any]:
    """--broker and --remote: the services that run in workers (saga worker), not here."""
    @functools.wraps(command)
    def place(*args: Any, broker_url: str | None, remote: str, **kwargs: Any) -> Any:
        commands.place_services(broker_url, remote, kwargs.pop("publish", None))
        return command(*args, **kwargs)
    remote = click.option("--remote", envvar="SAGA_REMOTE", default="", metavar="A,B|all",
                          help=commands.REMOTE_HELP)
    return click.option("--broker", "broker_url", envvar="SAGA_BROKER", metavar="URL",
                        help=BROKER_HELP)(remote(place))


# -- flows ----------------------------------------------------------------------------------------
@main.command(help=commands.VALIDATE_HELP)
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--strict", is_flag=True, help="Treat warnings (semantic checks) as errors.")
@click.option("--no-import", is_flag=True, help=commands.NO_IMPORT_HELP)
@click.option("--remote", default="", metavar="A,B", help="Services placed in workers: not "
              "imported (as --no-import, for those only).")
def validate(flows: tuple[str, ...], strict: bool, no_import: bool, remote: str) -> None:
    checks = commands.FlowChecks(flows, strict=strict, check_services=not no_import,
                                 remote=remote)
    for checked in checks:
        for problem in checked.problems:
            _err(problem.format())
        if checked.flow is not None:
            click.echo(checked.summary)
    _exit(checks.status)


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True, help="Mermaid stateDiagram-v2 or Graphviz DOT.")
def graph(flow: str, fmt: str) -> None:
    """Print the flow's compiled state machine as a diagram.

    Render DOT with Graphviz, e.g. `saga graph FLOW --format dot | dot -Tsvg > flow.svg`.
    """
    click.echo(commands.draw_flow(flow, fmt), nl=False)


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--fail", "fail_step", metavar="STEP",
              help="The step that fails. Without it, every step and kind is shown.")
@click.option("--kind", type=click.Choice(["rejected", "error", "timeout"]), default="rejected",
              show_default=True, help=commands.KIND_HELP)
@json_option
def plan(flow: str, fail_step: str | None, kind: str, as_json: bool) -> None:
    """Show the recovery plan: what is compensated, in which order, if a step fails.

    Or what ends `failed`, and why: the pivot's outcome unknown (pivot_unknown), or a step
    after the pivot failing (forward_recovery).
    """
    found = commands.recovery_plans(flow, fail_step, kind)
    _emit(as_json, found.to_json, lambda: commands.render_plans(found))


# -- running sagas --------------------------------------------------------------------------------
@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--input", "input_json", metavar="JSON", help="The saga input, as JSON.")
@click.option("--input-file", metavar="FILE",
              help=commands.INPUT_FILE_HELP)
@click.option("--id", "saga_id", metavar="ID",
              help=commands.SAGA_ID_HELP)
@store_option
@click.option("--fail", multiple=True, metavar="STEP",
              help="Make every attempt of STEP's action raise Rejected (repeatable).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Run a batch of N sagas (default: one, or one per line of --input-file).")
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True,
              help="Sagas in flight at once in a batch.")
@placed
@json_option
def run(flow: str, input_json: str | None, input_file: str | None, saga_id: str | None,
        store_url: str, fail: tuple[str, ...], count: int | None, concurrency: int,
        as_json: bool) -> None:
    """Run a saga (or a batch) of FLOW and print how it went.

    One saga: its timeline; exit 0 completed, 1 compensated, 3 failed. A batch (--count N,
    or several inputs): a progress bar on stderr, then counts, throughput and latency
    percentiles; exit 0 if none failed, 3 if any did. On PostgreSQL with a live member
    (saga serve), that member drives them; --fail exits 2.
    """
    request = commands.prepare_run(flow, input_json=input_json, input_file=input_file,
                                   saga_id=saga_id, fail=fail, count=count)
    if request.total == 1:
        single = commands.run_one(store_url, request, on_end=lambda ended: _show_saga(
            ended.result, as_json, ended.note))  # shown before the runtime closes
        _exit(single.result.status)
    summary = commands.run_many(store_url, request, concurrency, display=commands.progress_bar)
    _emit(as_json, lambda: summary, lambda: commands.render_summary(request.flow.name, summary))
    _exit(commands.batch_status(summary))


@main.command(name="list")
@click.option("--status", type=click.Choice(["running", "compensating", "completed",
                                             "compensated", "failed"]),
              help="Only sagas with this status.")
@click.option("--flow", "flow_name", metavar="NAME", help="Only sagas of this flow.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N sagas.")
@store_and_json
def list_(store_url: str, status: str | None, flow_name: str | None, limit: int | None,
          as_json: bool) -> None:
    """List the sagas in a store, newest first."""
    rows = commands.list_sagas(store_url, status=status, flow=flow_name, limit=limit)
    _emit(as_json, lambda: rows, lambda: commands.render_list(rows))


@main.command()
@click.argument("saga_id", metavar="ID")
@store_and_json
def show(saga_id: str, store_url: str, as_json: bool) -> None:
    """Show one saga's full history (exit 4 if there is no such saga)."""
    result = commands.show_saga(store_url, saga_id)
    _emit(as_json, result.to_json, lambda: commands.render_timeline(result))


@main.command()
@placed
@store_and_json
def resume(store_url: str, as_json: bool) -> None:
    """Finish every in-flight saga whose owner is gone (after a crash or kill -9).

    Sagas still driven by a live process are left to it (on PostgreSQL, all of them while a
    member is alive). Prints how many sagas were resumed and how they ended.
    """
    summary = commands.resume_orphans(store_url, on_note=lambda note: _err(f"note: {note}"))
    _emit(as_json, lambda: summary, lambda: commands.render_resumed(summary))


@main.command(help=commands.SERVE_HELP)
@click.argument("flows", nargs=-1, metavar="[FLOW]...")
@store_option
@click.option("--for", "duration", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).")
@click.option("--lease-ttl", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, envvar="SAGA_LEASE_TTL", metavar="SECONDS",
              help=commands.LEASE_TTL_HELP)
@click.option("--publish", metavar="URL", envvar="SAGA_PUBLISH", help=commands.PUBLISH_HELP)
@placed
@metrics_option
@click.option("--http", metavar="HOST:PORT", help=commands.SERVE_HTTP_HELP)
@click.option("--token-file", metavar="FILE", help=commands.TOKEN_FILE_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line per saga started.")
def serve(flows: tuple[str, ...], store_url: str, duration: float | None, lease_ttl: float,
          metrics: str | None, http: str | None, token_file: str | None, as_json: bool) -> None:
    commands.serve_flows(commands.load_served_flows(flows, store_url), store_url,
                         duration=duration, lease_ttl=lease_ttl, on_note=_err, metrics=metrics,
                         http=http, token=commands.read_token(token_file),
                         on_start=lambda *s: click.echo(commands.render_started(*s, as_json)))


def _act_on_saga(name: str, act: Callable[[str, str], Any], doc: str) -> None:
    """``saga retry`` / ``saga cancel``: act on one saga, print how it ended, exit by it."""

    @main.command(name=name, help=doc)
    @click.argument("saga_id", metavar="ID")
    @placed
    @store_and_json
    def act_on_saga(saga_id: str, store_url: str, as_json: bool) -> None:
        result = act(store_url, saga_id)
        _show_saga(result, as_json)
        _exit(result.status)


_act_on_saga("retry", commands.retry_saga, commands.RETRY_HELP)
_act_on_saga("cancel", commands.cancel_saga, commands.CANCEL_HELP)


@main.command(help=commands.SEND_HELP)
@click.argument("event", metavar="EVENT")
@click.option("--key", required=True, metavar="KEY",
              help="The correlation key a waiting saga expects (e.g. the order id).")
@click.option("--id", "event_id", default=None, metavar="ID",
              help="The event's identity: sending the same id again is ignored.")
@click.option("--data", "data_json", default=None, metavar="JSON",
              help="The event's data, a JSON object: the wait step's output.")
@click.option("--data-file", default=None, metavar="FILE",
              help=commands.DATA_FILE_HELP)
@store_and_json
def send(event: str, key: str, event_id: str | None, data_json: str | None,
         data_file: str | None, store_url: str, as_json: bool) -> None:
    data = commands.event_data(data_json, data_file)
    sent = commands.send_event(store_url, event, key, data, event_id=event_id)
    _emit(as_json, sent.to_json, lambda: commands.render_sent(sent))


@main.command(help=commands.MEMBERS_HELP)
@store_and_json
def members(store_url: str, as_json: bool) -> None:
    report = commands.store_members(store_url)
    _emit(as_json, report.to_json, lambda: commands.render_members(report))


@main.command()
@click.option("--stuck-after", type=float, default=3600.0, metavar="S", help=commands.STUCK_HELP)
@store_and_json
def audit(store_url: str, stuck_after: float, as_json: bool) -> None:
    """Check the saga guarantees over every saga in a store; print each violation with its
    saga id and seq; exit 1 on any."""
    report = commands.audit_store_at(store_url, stuck_after=stuck_after)
    _emit(as_json, report.to_json, lambda: commands.render_audit(report))
    _exit(report.status)


@main.command(help=commands.WORKER_HELP)
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--broker", "broker_url", envvar="SAGA_BROKER", required=True, metavar="URL",
              help=BROKER_HELP)
@click.option("--services", metavar="A,B", help="Host only these (default: all with a class).")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Commands held (read, not yet answered) at once.")
@metrics_option
@click.option("--json", "as_json", is_flag=True, help="Once serving, say what as JSON on stdout.")
def worker(flows: tuple[str, ...], broker_url: str, services: str | None, concurrency: int,
           metrics: str | None, as_json: bool) -> None:
    commands.run_worker(commands.load_worker_flows(flows), broker_url, _err, services=services,
                        concurrency=concurrency, on_json=click.echo if as_json else None,
                        metrics=metrics)


def _dead_letters(action: str, doc: str) -> click.Command:  # saga dead-letters ACTION
    def act(broker_url: str, service: str | None, as_json: bool, ids: tuple[str, ...] = (),
            every: bool = False) -> None:
        done = commands.dead_letters(action, broker_url, service, ids, every)
        _emit(as_json, done.to_json, done.render)
    if action != "list":
        act = click.argument("ids", nargs=-1, metavar="[ID]...")(click.option(
            "--all", "every", is_flag=True, help=commands.DEAD_LETTERS_ALL_HELP)(act))
    return click.command(action, cls=SagaCommand, help=doc)(click.option(
        "--broker", "broker_url", envvar="SAGA_BROKER", required=True, metavar="URL",
        help=BROKER_HELP)(click.option("--service", metavar="S", help=commands.
                                       DEAD_LETTERS_SERVICE_HELP)(json_option(act))))


main.add_command(SagaGroup("dead-letters", help=commands.DEAD_LETTERS_HELP, commands=[
    _dead_letters(action, doc) for action, doc in commands.DEAD_LETTERS_HELPS.items()]))


@main.command(help=commands.UI_HELP)
@store_option
@click.option("--http", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT")
@click.option("--token-file", metavar="FILE", help=commands.TOKEN_FILE_HELP)
@click.option("--broker", "broker_url", envvar="SAGA_BROKER", metavar="URL", help=BROKER_HELP)
def ui(store_url: str, http: str, token_file: str | None, broker_url: str | None) -> None:
    commands.serve_ui(store_url, http, token=commands.read_token(token_file), broker_url=broker_url,
                      on_ready=lambda url: _err(f"saga ui on {url} (Ctrl-C stops it)"))


@main.command(name="test", help=commands.TEST_HELP)
@click.argument("flow", metavar="FLOW")
@click.option("--input", "input_examples", multiple=True, metavar="JSON",
              help=commands.TEST_INPUT_HELP)
@click.option("--examples", type=click.IntRange(min=1), default=None, metavar="N",
              help=commands.TEST_EXAMPLES_HELP)
@click.option("--seed", type=int, default=0, show_default=True,
              help="The same seed gives the same run.")
@click.option("--handler-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="SECONDS", help="A call into a service (handler, "
              "snapshot, invariant) running longer than this (wall clock) is a counterexample.")
@click.option("--replay-db", type=click.Path(file_okay=False), default=None, metavar="PATH",
              help=commands.REPLAY_DB_HELP)
def test_(flow: str, input_examples: tuple[str, ...], examples: int | None, seed: int,
          handler_timeout: float, replay_db: str | None) -> None:
    text, warning, status = commands.run_flow_test(
        flow, input_examples, examples=examples, seed=seed, handler_timeout=handler_timeout,
        replay=replay_db)  # imports sagas.testing (hypothesis): saga test only
    click.echo(text)
    if warning is not None:
        _err(warning)
    _exit(status)


if __name__ == "__main__":
    main()
