"""The errors the actor runtime raises, and how it turns any exception into one line.

::

    ActorError                  root of every error this package raises on purpose
    ├── ServiceDefinitionError  a bad ``@handles`` or ``Service`` class (raised at import time)
    ├── ActorUnavailable        ``ServicePool.call`` on an instance that is stopped for good
    ├── CallTimeout             ``ServicePool.call`` got no answer in time (also a ``TimeoutError``)
    ├── CallFailed              ``ServicePool.call``'s function raised a ``BaseException``
    ├── SchedulerStopped        ``schedule()`` on a stopped scheduler
    └── SettleTimeout           ``VirtualClock.advance(settle=...)`` never saw the system idle

:class:`~actors.Rejected` is not in this tree: it is raised *by user handlers* to say "no", and the
runtime turns it into a ``rejected`` reply; it never escapes the runtime.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "ActorError",
    "ActorUnavailable",
    "CallFailed",
    "CallTimeout",
    "SchedulerStopped",
    "ServiceDefinitionError",
    "SettleTimeout",
    "describe_exception",
    "safe_repr",
]

_MAX_MESSAGE = 500
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 3


class ActorError(Exception):
    """Root of every error the actor runtime raises on purpose."""


class ServiceDefinitionError(ActorError):
    """A ``@handles`` decoration or a ``Service`` class is wrong; raised where it is defined."""


class ActorUnavailable(ActorError):
    """The service instance is stopped for good (its pool was stopped, or it could not restart)."""


class CallTimeout(ActorError, TimeoutError):
    """``ServicePool.call`` got no answer in time; the function may still run later."""


class CallFailed(ActorError):
    """The function given to ``ServicePool.call`` raised a ``BaseException`` (e.g. ``SystemExit``).

    The original is ``__cause__``; ordinary exceptions are re-raised as they are.
    """


class SchedulerStopped(ActorError):
    """A timer was scheduled on a scheduler that has been stopped."""


class SettleTimeout(ActorError, TimeoutError):
    """``VirtualClock.advance(..., settle=activity)`` waited in vain for the system to go idle."""


def describe_exception(exc: BaseException) -> str:
    """One line for any exception: ``"ValueError: boom"``, never raising.

    Whitespace (newlines included) is collapsed and the text is cut at 500 characters. An exception
    whose ``str()`` raises gives ``"BadExc (unprintable exception)"``.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:
        return f"{name} (unprintable exception)"
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return f"{name}: {text}" if text else name


def safe_repr(obj: object) -> str:
    """A short ``repr`` for logs and error messages that never raises."""
    try:
        return _repr.repr(obj)
    except BaseException:
        return f"<{type(obj).__name__} (unprintable)>"
