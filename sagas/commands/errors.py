"""What a command says about the error that ended it, and the errors of a command's usage.

:class:`UsageProblem` is raised by the functions of :mod:`sagas.commands` for arguments they
cannot use (the CLI reports it as a usage error, with the option it names). :func:`error_lines`
is the text on stderr for any other error: every problem of a flow file at its
``FILE:LINE:COL``, one line for a library error, one line naming the type for anything else.
Neither knows an exit code: that is the CLI's table.
"""

from __future__ import annotations

from ..errors import FlowErrors, InputError, SagactorError

__all__ = ["UsageProblem", "error_lines", "one_line"]


class UsageProblem(InputError):
    """Arguments a command cannot use: ``option`` names the option whose value is wrong
    (``--fail``), or is ``None`` when the combination of options is."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.message = message
        self.option = option


def one_line(exc: BaseException) -> str:
    """An error's message on one line: its first line, or its words joined by single spaces;
    the type's name when the message is empty or cannot be made."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = " ".join(text.split()) if "\n" not in text else text.splitlines()[0]
    return text or type(exc).__name__


def error_lines(exc: BaseException) -> list[str]:
    """The lines stderr shows for ``exc``, which ended a command."""
    if isinstance(exc, FlowErrors):
        return [error.format() for error in exc.errors]
    if isinstance(exc, SagactorError):
        return [f"error: {one_line(exc)}"]
    return [f"internal error: {type(exc).__name__}: {one_line(exc)} "
            "(run with --debug for the traceback)"]
