"""The ``saga`` command: parses arguments, calls the library, renders. Nothing else.

Exit codes (DESIGN.md §6): 0 ok; 1 compensated / violations / counterexample; 2 usage errors and
invalid input; 3 a saga ended ``failed``; 4 unknown saga id; 5 a store that cannot be used.
Errors go to stderr as one line, never a traceback unless ``--debug``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from sagas import __version__
from sagas.commands.inputs import parse_json, read_inputs, read_text
from sagas.commands.interrupts import Stopped, graceful_stop
from sagas.commands.render import (
    printable,
    progress_bar,
    render_list,
    render_summary,
    render_timeline,
)
from sagas.errors import (
    BadStoreUrl,
    DefinitionUnavailable,
    FlowError,
    FlowErrors,
    IdConflict,
    InputError,
    SagactorError,
    SagaOrphaned,
    SagaTimeout,
    StoreError,
    UnknownSaga,
)
from sagas.language.loader import load_flow

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_COMPENSATED, EXIT_USAGE, EXIT_FAILED, EXIT_UNKNOWN, EXIT_STORE = 0, 1, 2, 3, 4, 5
EXIT_INTERNAL, EXIT_SIGNALLED, EXIT_INTERRUPTED, EXIT_PIPE = 70, 128, 130, 141
EXIT_VIOLATIONS = EXIT_COUNTEREXAMPLE = 1
EXIT_BY_STATUS = {"completed": EXIT_OK, "compensated": EXIT_COMPENSATED, "failed": EXIT_FAILED}
# the first match, most specific first, decides
EXIT_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (FlowError, EXIT_USAGE), (InputError, EXIT_USAGE), (DefinitionUnavailable, EXIT_USAGE),
    (IdConflict, EXIT_USAGE), (BadStoreUrl, EXIT_USAGE), (SagaOrphaned, EXIT_FAILED),
    (UnknownSaga, EXIT_UNKNOWN), (StoreError, EXIT_STORE), (SagaTimeout, EXIT_COMPENSATED),
    (SagactorError, EXIT_COMPENSATED),
)


def exit_code_of(exc: BaseException) -> int:
    """The exit code of a library error (:data:`EXIT_BY_ERROR`)."""
    return next(code for kind, code in EXIT_BY_ERROR if isinstance(exc, kind))


def _err(message: str) -> None:
    click.echo(printable(message, one_line=False), err=True)


def _one_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = " ".join(text.split()) if "\n" not in text else text.splitlines()[0]
    return text or type(exc).__name__


def handle_errors(func: F) -> F:
    """Turn library errors into one line on stderr and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except FlowErrors as exc:
            if debug:
                raise
            for error in exc.errors:
                _err(error.format())
            sys.exit(exit_code_of(exc))
        except SagactorError as exc:
            if debug:
                raise
            _err(f"error: {_one_line(exc)}")
            sys.exit(exit_code_of(exc))
        except Stopped as stopped:
            _err("interrupted")
            sys.exit(EXIT_SIGNALLED + stopped.signum)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # `saga list | head -1`: the reader has gone; say nothing more
            _quiet_stdout()
            sys.exit(EXIT_PIPE)
        except Exception as exc:
            if debug:
                raise
            _err(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                 "(run with --debug for the traceback)")
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class SagaGroup(click.Group):
    """Prints every error, usage errors included, as one line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._main(*args, **kwargs)
        finally:
            try:
                sys.stdout.flush()
            except BrokenPipeError:  # the reader went away before the last line: say nothing
                _quiet_stdout()
                raise SystemExit(EXIT_PIPE) from None

    def _main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            _err(exc.format_message())
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "saga"
            _err(f"error: {exc.format_message()} (see '{command} --help')")
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            _err(f"error: {exc.format_message()}")
            sys.exit(exc.exit_code)
        except click.Abort:
            _err("aborted")
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=SagaGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="saga", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """sagactor: run multi-step business transactions (sagas) declared in YAML.

    A flow lists steps, each an action on a service with a compensation that undoes it. When a
    step fails, the steps already done are compensated in reverse order.

    \b
    Exit codes: 0 ok, 1 compensated, 2 usage error or invalid input, 3 failed (needs a person),
    4 unknown saga id, 5 store unusable.
    """
    import logging

    # the library logs; the CLI reports errors as one line and exit codes (logs with --debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    from sagas.engine.gc_tuning import tune_gc

    tune_gc()  # the CLI is an application: it opts in to throughput thresholds


@main.command()
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--strict", is_flag=True, help="Treat warnings (semantic checks) as errors.")
@click.option("--no-import", is_flag=True,
              help="Do not import the services' modules (for flows whose services are not "
                   "installed here, or whose code you do not want to run); every other check "
                   "still runs.")
@handle_errors
def validate(flows: tuple[str, ...], strict: bool, no_import: bool) -> None:
    """Check flow files: syntax, structure, names, paths, recovery semantics, and services.

    Imports each declared service (module:Class, found as `saga run` finds it) and checks
    that every action and compensation names one of its handlers; importing runs the
    module's code (--no-import skips it). Prints "ok: NAME vN (K steps)" per valid file;
    warnings and errors go to stderr as FILE:LINE:COL: message. Exits 2 if any is invalid.
    """
    invalid = False
    for path in flows:
        try:
            flow = load_flow(path, strict=strict, check_services=not no_import)
        except FlowErrors as exc:
            invalid = True
            for error in exc.errors:
                _err(error.format())
            continue
        for warning in flow.warnings:
            _err(warning.format())
        plural = "step" if len(flow.steps) == 1 else "steps"
        click.echo(f"ok: {flow.name} v{flow.version} ({len(flow.steps)} {plural})")
    if invalid:
        sys.exit(EXIT_USAGE)


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True, help="Mermaid stateDiagram-v2 or Graphviz DOT.")
@handle_errors
def graph(flow: str, fmt: str) -> None:
    """Print the flow's compiled state machine as a diagram.

    Render DOT with Graphviz, e.g. `saga graph FLOW --format dot | dot -Tsvg > flow.svg`.
    """
    from sagas.language.compiler import compile_flow
    from sagas.language.graph import render

    click.echo(render(compile_flow(load_flow(flow)), fmt), nl=False)


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--fail", "fail_step", metavar="STEP",
              help="The step that fails. Without it, every step and kind is shown.")
@click.option("--kind", type=click.Choice(["rejected", "error", "timeout"]), default="rejected",
              show_default=True,
              help="How it fails: rejected (a business no), or its attempts run out on errors "
                   "or timeouts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def plan(flow: str, fail_step: str | None, kind: str, as_json: bool) -> None:
    """Show the recovery plan: what is compensated, in which order, if a step fails.

    Or what ends `failed`, and why: the pivot's outcome unknown (pivot_unknown), or a step
    after the pivot failing (forward_recovery).
    """
    from sagas.commands.render import plan_table, render_plan
    from sagas.language.compiler import compile_flow
    from sagas.language.plan import check_failable, plans, route_plans

    compiled = compile_flow(load_flow(flow))
    if fail_step is not None:
        try:
            check_failable(compiled, fail_step)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fail") from None
        try:
            found = route_plans(compiled, fail_step, kind)
        except ValueError as exc:  # a wait step only times out
            raise click.BadParameter(str(exc), param_hint="--kind") from None
        if as_json:  # the first route's plan (each names its route)
            click.echo(json.dumps(found[0].to_json(), indent=2))
        else:
            click.echo("\n".join(render_plan(p, compiled) for p in found))
        return
    every = plans(compiled)
    if as_json:
        click.echo(json.dumps({"flow": compiled.flow.name, "version": compiled.flow.version,
                               "plans": [p.to_json() for p in every]}, indent=2))
        return
    from rich.console import Console

    Console(soft_wrap=False, width=max(140, Console().width)).print(plan_table(compiled, every))


# -- running sagas ------------------------------------------------------------------------------
DEFAULT_STORE = "sqlite:///.saga/sagas.db"
store_option = click.option(
    "--store", "store_url", envvar="SAGA_STORE", default=DEFAULT_STORE, show_default=True,
    metavar="URL", help="Where sagas are kept: sqlite:///PATH (relative; four slashes for an "
                        "absolute path) or memory:// (throwaway). Env: SAGA_STORE.")


def _read_inputs(input_json: str | None, input_file: str | None) -> list[Any]:
    if (input_json is None) == (input_file is None):
        raise click.UsageError("give the saga input with exactly one of --input JSON or "
                               "--input-file FILE")
    if input_json is not None:
        return [parse_json(input_json, "--input")]
    assert input_file is not None
    return read_inputs(input_file)


def _open_store(store_url: str, *, create: bool) -> Any:
    """Only `run`, `serve`, `resume` and `send` create a store; other commands on a missing
    one say `no saga store at PATH` (exit 5) and create nothing."""
    from sagas.stores import open_store

    return open_store(store_url, create=create)


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option("--input", "input_json", metavar="JSON", help="The saga input, as JSON.")
@click.option("--input-file", metavar="FILE",
              help="The saga input from a file ('-': standard input): one JSON document, or JSON "
                   "Lines (one input per line; a batch takes them in turn).")
@click.option("--id", "saga_id", metavar="ID",
              help="Choose the saga id (a business key, [A-Za-z0-9_.-]{1,128}). Running an id "
                   "that exists with the same input returns that saga; nothing runs twice.")
@store_option
@click.option("--fail", multiple=True, metavar="STEP",
              help="Make every attempt of STEP's action raise Rejected (repeatable).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Run a batch of N sagas (default: one, or one per line of --input-file).")
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True,
              help="Sagas in flight at once in a batch.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def run(flow: str, input_json: str | None, input_file: str | None, saga_id: str | None,
        store_url: str, fail: tuple[str, ...], count: int | None, concurrency: int,
        as_json: bool) -> None:
    """Run a saga (or a batch) of FLOW and print how it went.

    \b
    One saga: its timeline; exit 0 completed, 1 compensated, 3 failed.
    A batch (--count N, or several inputs): a progress bar on stderr, then counts,
    throughput and latency percentiles; exit 0 if every saga completed or was
    compensated, 3 if any failed.
    """
    from sagas.engine.runtime import validate_input, validate_saga_id

    loaded = load_flow(flow)
    inputs = _read_inputs(input_json, input_file)
    names = [s.name for s in loaded.steps if s.calls_service]
    for step in fail:
        if step not in names:
            raise click.BadParameter(f"no step {step!r} in flow {loaded.name} "
                                     f"(steps: {', '.join(names)})", param_hint="--fail")
    for number, saga_input in enumerate(inputs, 1):
        try:
            validate_input(loaded, saga_input)
        except InputError as exc:
            if len(inputs) > 1:
                raise InputError(f"{exc} (input {number} of {input_file})") from None
            raise
    if saga_id is not None:
        validate_saga_id(saga_id)
    total = count if count is not None else len(inputs)
    if total > 1 and saga_id is not None:
        raise click.UsageError("--id names one saga; it cannot be used with a batch")
    from sagas.commands.batch import BatchProgress, run_batch

    progress = BatchProgress()
    try:
        with graceful_stop(), _runtime(store_url, fail) as runtime:
            if total == 1:
                started = runtime.start(loaded, inputs[0], saga_id)
                progress.submitted, progress.last = 1, started
                try:
                    result = runtime.wait(started)
                except SagaOrphaned as exc:  # an existing saga (--id) that nobody drives
                    result = runtime.result(started)
                    _err(f"note: {exc}")
                if as_json:
                    click.echo(json.dumps(result.to_json(), indent=2))
                else:
                    click.echo(render_timeline(result))
                sys.exit(EXIT_BY_STATUS.get(result.status, EXIT_FAILED))
            with progress_bar(loaded.name, total) as on_progress:
                summary = run_batch(runtime, loaded, inputs, total, concurrency,
                                    on_progress=on_progress, progress=progress)
    except Stopped as stopped:
        left = progress.submitted - progress.ended
        what = (f"saga {progress.last} was left in flight" if total == 1 and left
                else f"{left} of {progress.submitted} sagas started were left in flight")
        _err(f"interrupted: {what}; 'saga resume' finishes them"
             if left else "interrupted: no saga was left in flight")
        sys.exit(EXIT_SIGNALLED + stopped.signum)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render_summary(loaded.name, summary))
    sys.exit(EXIT_FAILED if summary["failed"] else EXIT_OK)


@contextlib.contextmanager
def _runtime(store_url: str, fail: tuple[str, ...] = (), *, create: bool = True) -> Iterator[Any]:
    """A runtime for one command, closed with a short wait for services: a handler that
    blocks forever must not keep the command from exiting once its sagas are done.
    ``fail``: steps whose every action attempt is rejected (`run --fail`)."""
    from actors import Faults
    from sagas.engine.runtime import Runtime

    faults = None
    if fail:
        faults = Faults()
        for step in fail:
            faults.add(step=step, phase="action", kind="reject",
                       message=f"injected by --fail {step}")
    store = _open_store(store_url, create=create)
    try:
        runtime = Runtime(store, faults=faults)
        try:
            yield runtime
        finally:
            runtime.close(timeout=3.0)
    finally:
        store.close()


@main.command(name="list")
@store_option
@click.option("--status", type=click.Choice(["running", "compensating", "completed",
                                             "compensated", "failed"]),
              help="Only sagas with this status.")
@click.option("--flow", "flow_name", metavar="NAME", help="Only sagas of this flow.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N sagas.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def list_(store_url: str, status: str | None, flow_name: str | None, limit: int | None,
          as_json: bool) -> None:
    """List the sagas in a store, newest first."""
    store = _open_store(store_url, create=False)
    try:
        headers = store.list(status=status, flow=flow_name, limit=limit)
    finally:
        store.close()
    rows = [{"saga_id": h.saga_id, "flow": h.flow, "version": h.version, "status": h.status,
             "started_at": h.started_at, "updated_at": h.updated_at} for h in headers]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(render_list(rows))


@main.command()
@click.argument("saga_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def show(saga_id: str, store_url: str, as_json: bool) -> None:
    """Show one saga's full history (exit 4 if there is no such saga)."""
    from sagas.engine.runtime import load_result

    store = _open_store(store_url, create=False)
    try:
        result = load_result(store, saga_id)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_timeline(result))


@main.command()
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def resume(store_url: str, as_json: bool) -> None:
    """Finish every in-flight saga whose owner is gone (after a crash or kill -9).

    Sagas still driven by a live process are left to it. Prints how many sagas were resumed
    and how they ended.
    """
    counts = {"completed": 0, "compensated": 0, "failed": 0}
    adopted: list[str] = []
    try:
        with graceful_stop(), _runtime(store_url) as runtime:
            adopted = runtime.recover()
            for saga_id in adopted:
                status = runtime.wait(saga_id).status
                counts[status] = counts.get(status, 0) + 1
    except Stopped as stopped:
        left = len(adopted) - sum(counts.values())
        _err(f"interrupted: {left} of {len(adopted)} resumed sagas were left in flight; "
             "'saga resume' again finishes them")
        sys.exit(EXIT_SIGNALLED + stopped.signum)
    summary = {"resumed": len(adopted), **counts}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"resumed {len(adopted)} sagas: {counts['completed']} completed, "
                   f"{counts['compensated']} compensated, {counts['failed']} failed")


@main.command()
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@store_option
@click.option("--for", "duration", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line for each saga started.")
@handle_errors
def serve(flows: tuple[str, ...], store_url: str, duration: float | None, as_json: bool) -> None:
    """Start a saga of each FLOW for every event of its trigger, until stopped.

    A flow declares `trigger: {event: OrderPlaced, id: $.input.order_id}`; then every
    `saga send OrderPlaced --key K --data JSON` (from any shell, on the same store) starts
    one saga with the event's data as input and the id `<flow>.<order_id>`: the same event or
    id never starts two. Events sent while nothing served the flow are started on the next
    serve. In-flight sagas whose owner is gone are finished too (as `saga resume`). Prints
    `started <saga id>` per saga; exit 0 when stopped, 2 for a flow without a trigger.
    """
    import time

    from sagas.engine.runtime import Runtime
    from sagas.language.loader import load_flow

    loaded = [load_flow(path) for path in flows]
    for flow in loaded:
        if flow.trigger is None:
            raise InputError(f"{flow.source}: flow {flow.name!r} has no trigger to serve: add "
                             "`trigger: {event: <EventType>, id: $.input.<field>}`")
    stopped: list[int] = []  # a signal handler only appends: no lock is taken in a handler

    def started(flow_name: str) -> Any:
        def report(saga_id: str) -> None:
            if as_json:
                click.echo(json.dumps({"started": saga_id, "flow": flow_name}))
            else:
                click.echo(f"started {saga_id}")
        return report

    def skipped(flow_name: str) -> Any:
        def report(event_id: str, why: str) -> None:
            _err(f"skipped event {event_id} for {flow_name}: {why}")
        return report

    previous = {sig: signal.signal(sig, lambda signum, _: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Runtime(store_url) as runtime:
            runtime.recover()
            for flow in loaded:
                runtime.add_trigger(flow, on_start=started(flow.name),
                                    on_skip=skipped(flow.name))
                assert flow.trigger is not None
                click.echo(f"serving {flow.name}: a saga per {flow.trigger.event} event "
                           f"(id {flow.trigger.id}); stop with Ctrl-C", err=True)
            until = time.monotonic() + duration if duration is not None else None
            while not stopped and (until is None or time.monotonic() < until):
                time.sleep(0.05 if until is None else max(0.0, min(0.05,
                                                                   until - time.monotonic())))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _act_on(saga_id: str, store_url: str, as_json: bool, what: str) -> None:
    try:
        with graceful_stop(), _runtime(store_url, create=False) as runtime:
            result = runtime.retry(saga_id) if what == "retry" else runtime.cancel(saga_id)
            if not result.terminal:
                result = runtime.wait(saga_id)
    except Stopped as stopped:
        _err(f"interrupted: saga {saga_id} was left in flight; 'saga resume' finishes it")
        sys.exit(EXIT_SIGNALLED + stopped.signum)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_timeline(result))
    sys.exit(EXIT_BY_STATUS.get(result.status, EXIT_FAILED))


@main.command()
@click.argument("saga_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def retry(saga_id: str, store_url: str, as_json: bool) -> None:
    """Re-drive a failed saga from where it stopped, after a person fixed the cause.

    A saga parked on a compensation resumes that compensation; one that failed forward
    recovery drives forward again. The saga's owner does it if it is alive; otherwise this
    command does. Exit as `run`: 0 completed, 1 compensated, 3 failed.
    """
    _act_on(saga_id, store_url, as_json, "retry")


@main.command()
@click.argument("saga_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def cancel(saga_id: str, store_url: str, as_json: bool) -> None:
    """Cancel a running saga: before the pivot it is rolled back, after it, it carries on.

    A terminal saga is left as it is. Exit as `run`: 0 completed, 1 compensated, 3 failed.
    """
    _act_on(saga_id, store_url, as_json, "cancel")


@main.command()
@click.argument("event", metavar="EVENT")
@click.option("--key", required=True, metavar="KEY",
              help="The correlation key a waiting saga expects (e.g. the order id).")
@click.option("--id", "event_id", default=None, metavar="ID",
              help="The event's identity: sending the same id again is ignored.")
@click.option("--data", "data_json", default=None, metavar="JSON",
              help="The event's data, a JSON object: the wait step's output.")
@click.option("--data-file", default=None, metavar="FILE",
              help="The event's data from a file ('-': standard input), for data too big for "
                   "a command line.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def send(event: str, key: str, event_id: str | None, data_json: str | None,
         data_file: str | None, store_url: str, as_json: bool) -> None:
    """Send EVENT to the saga that waits (or will wait) for it with this --key.

    The event is kept in the store until a saga's wait_for step consumes it, so it may be sent
    before the saga gets there, and from any shell: the process driving the saga picks it up.
    Exit 0 when recorded or already recorded (--id), 2 for a malformed event, 5 if the store
    cannot be used.
    """
    if data_json is not None and data_file is not None:
        raise click.UsageError("give the event's data with one of --data or --data-file")
    if data_file is not None:
        data = parse_json(read_text(data_file, "--data-file"), f"--data-file {data_file}")
    else:
        data = parse_json(data_json, "--data") if data_json is not None else {}
    if not isinstance(data, dict):
        raise InputError(f"the event's data must be a JSON object, got {type(data).__name__}")
    store = _open_store(store_url, create=True)
    try:
        import time

        try:
            recorded, created = store.send_event(event, key, data, event_id=event_id,
                                                 sent_at=time.time())
        except (ValueError, TypeError) as exc:
            raise InputError(str(exc)) from None
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"event_id": recorded.event_id, "event": recorded.type,
                               "key": recorded.key, "recorded": created,
                               "position": recorded.position}, indent=2))
    elif created:
        click.echo(f"sent {recorded.type} key={recorded.key} (id {recorded.event_id})")
    else:
        click.echo(f"already sent: {recorded.type} key={recorded.key} (id {recorded.event_id});"
                   " ignored")


@main.command()
@store_option
@click.option("--stuck-after", type=float, default=3600.0, show_default=True, metavar="SECONDS",
              help="Report retry_forever sagas compensating for longer than this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def audit(store_url: str, stuck_after: float, as_json: bool) -> None:
    """Check the saga guarantees over every saga in a store; exit 1 on any violation.

    Each violation is printed with its saga id and seq.
    """
    from sagas.audit import audit_store

    store = _open_store(store_url, create=False)
    try:
        violations = audit_store(store, stuck_after=stuck_after)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([{"saga_id": v.saga_id, "seq": v.seq, "rule": v.rule,
                                "message": v.message} for v in violations], indent=2))
    else:
        for violation in violations:
            click.echo(violation.format())
        if not violations:
            click.echo("ok: no violations")
    sys.exit(EXIT_VIOLATIONS if violations else EXIT_OK)


@main.command(name="test")
@click.argument("flow", metavar="FLOW")
@click.option("--input", "input_examples", multiple=True, metavar="JSON",
              help="An example input (repeatable). Without any, inputs that reach every route "
                   "(the happy path, each choice branch, each business rejection) are searched "
                   "for, from the input schema, the choices' conditions and the services' own "
                   "constants.")
@click.option("--examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="The budget of runs with faults. Default: every single fault point and "
                   "recovery pair along every route, then 400 more (pairs and random "
                   "schedules). A budget too small for the single faults is reported.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="The same seed gives the same run.")
@click.option("--handler-timeout", type=click.FloatRange(min=0, min_open=True),
              default=5.0, show_default=True, metavar="SECONDS",
              help="A call into a service (handler, snapshot, invariant) running longer than "
                   "this, in wall-clock time, is a counterexample.")
@click.option("--replay-db", type=click.Path(file_okay=False), default=None, metavar="PATH",
              help="Keep each counterexample found in the directory PATH and try the kept ones "
                   "first next time (default: nothing is kept, nothing replayed).")
@handle_errors
def test_(flow: str, input_examples: tuple[str, ...], examples: int | None, seed: int,
          handler_timeout: float, replay_db: str | None) -> None:
    """Property-test FLOW with its declared services under faults.

    \b
    For each route the inputs reach, it runs:
      1. the input without faults;
      2. every single fault point along the route: each action and compensation that ran,
         each fault kind (error, reject, timeout, late reply, duplicate, redelivery after
         the effect, reply lost after the effect) on its first attempt and on a retry, each
         persistent fault (every attempt errs, times out, or loses its reply), and a runtime
         crash and resume after each event;
      3. pairs of faults, where recovery bugs hide first; then random schedules.

    A run must keep the saga guarantees (README: Guarantees), recover as `saga plan` says,
    leave every service's snapshot() as it was if the saga was compensated, and as a run
    without faults left it if the saga completed, and keep every @invariant. The first run
    that breaks one is made as small as it goes and printed with its history, the faults
    marked where they struck; exit 1. Nothing is written to the working directory.
    """
    from sagas.engine.runtime import validate_input
    from sagas.testing import private_hypothesis_home, test_flow

    private_hypothesis_home()

    loaded = load_flow(flow)
    parsed = [parse_json(text, "--input") for text in input_examples]
    for example in parsed:
        validate_input(loaded, example)
    with graceful_stop():
        report = test_flow(loaded, examples=examples, seed=seed, input_examples=parsed,
                           handler_timeout=handler_timeout, replay=replay_db,
                           exit_if_stuck=True)
    click.echo(report.describe())
    if not report.complete and report.routes:
        _err(f"warning: only {report.singles_tried} of {report.singles_total} single-fault "
             f"points were tried within --examples {examples}")
    elif not report.complete:
        _err("warning: no input could be made from the flow's input schema; give --input")
    sys.exit(EXIT_OK if report.ok else EXIT_COUNTEREXAMPLE)


if __name__ == "__main__":
    main()
