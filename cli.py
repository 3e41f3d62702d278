"""The ``saga`` command: parses arguments, calls the library, renders. Nothing else.

Exit codes (DESIGN.md §6): 0 ok; 1 compensated / violations / counterexample; 2 usage errors and
invalid input; 3 a saga ended ``failed``; 4 unknown saga id; 5 a store that cannot be used.
Errors go to stderr as one line, never a traceback unless ``--debug``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sagas import __version__
from sagas.errors import FlowErrors, SagactorError
from sagas.loader import load_flow

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_COMPENSATED, EXIT_USAGE, EXIT_FAILED, EXIT_UNKNOWN, EXIT_STORE = 0, 1, 2, 3, 4, 5


def _err(message: str) -> None:
    click.echo(message, err=True)


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
            sys.exit(exc.exit_code)
        except SagactorError as exc:
            if debug:
                raise
            _err(f"error: {_one_line(exc)}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(130)
        except Exception as exc:
            if debug:
                raise
            _err(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                 "(run with --debug for the traceback)")
            sys.exit(70)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


@main.command()
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--strict", is_flag=True, help="Treat warnings (semantic checks) as errors.")
@handle_errors
def validate(flows: tuple[str, ...], strict: bool) -> None:
    """Check flow files: syntax, structure, names, paths, and recovery semantics.

    Prints "ok: NAME vN (K steps)" per valid file; warnings and errors go to stderr as
    FILE:LINE:COL: message. Exits 2 if any file is invalid.
    """
    invalid = False
    for path in flows:
        try:
            flow = load_flow(path, strict=strict)
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
    from sagas.compiler import compile_flow
    from sagas.graph import render

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
    from sagas.compiler import compile_flow
    from sagas.plan import plan as make_plan
    from sagas.plan import plans

    compiled = compile_flow(load_flow(flow))
    if fail_step is not None:
        names = [s.name for s in compiled.flow.steps]
        if fail_step not in names:
            raise click.BadParameter(
                f"no step {fail_step!r} in flow {compiled.flow.name} (steps: {', '.join(names)})",
                param_hint="--fail")
        result = make_plan(compiled, fail_step, kind)
        if as_json:
            click.echo(json.dumps(result.to_json(), indent=2))
        else:
            click.echo(_describe_plan(result))
        return
    every = plans(compiled)
    if as_json:
        click.echo(json.dumps({"flow": compiled.flow.name, "version": compiled.flow.version,
                               "plans": [p.to_json() for p in every]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{compiled.flow.name} v{compiled.flow.version}: recovery if a step "
                        "fails", title_justify="left")
    table.add_column("step")
    for k in ("rejected", "error", "timeout"):
        table.add_column(f"{k}")
    by_step: dict[str, dict[str, str]] = {}
    for p in every:
        by_step.setdefault(p.step, {})[p.kind] = _short_outcome(p)
    for step in compiled.flow.steps:
        name = f"{step.name} (pivot)" if step.pivot else step.name
        table.add_row(name, *(by_step[step.name][k] for k in ("rejected", "error", "timeout")))
    Console(soft_wrap=False, width=max(140, Console().width)).print(table)


def _short_outcome(p: Any) -> str:
    if p.status == "failed":
        return f"failed ({p.reason})"
    undo = ", ".join(s for s, _ in p.compensations) or "nothing"
    return f"undo {undo} → {p.status}"


def _describe_plan(p: Any) -> str:
    how = {"rejected": "is rejected", "error": "runs out of attempts on errors",
           "timeout": "runs out of attempts on timeouts"}[p.kind]
    lines = [f"{p.flow} v{p.version}: if {p.step} {how}"]
    lines.append(f"  ran: {' → '.join(p.ran)}")
    if p.compensations:
        lines.append("  compensate, in this order:")
        for i, (step, compensation) in enumerate(p.compensations, 1):
            lines.append(f"    {i}. {step} ({compensation})")
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


if __name__ == "__main__":
    main()
