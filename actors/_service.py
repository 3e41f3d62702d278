"""User code: ``Service`` classes whose methods ``@handles`` named commands, and ``Rejected``.

A handler is a plain method ``def name(self, command) -> dict``. It runs on its service actor's
thread, one command at a time, so it needs no locks. What it does decides the outcome:

- returns a JSON object (``dict``)     → ``succeeded`` (the runtime hands the caller a private copy)
- raises :class:`Rejected`              → ``rejected``: a business "no", by contract without effect
- raises anything else                  → ``error``: transient, the caller may retry

A method marked ``@subscribes("order_inventory.saga.completed")`` reacts to published saga
events instead (the event bus, :mod:`sagas.bus`): ``def name(self, delivery) -> None``. It runs
on its subscription's own actor thread, *not* the service's, so a slow reaction never delays
the service's commands (nor the sagas waiting on them); state it shares with ``@handles``
methods needs a lock.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from types import FunctionType, MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._errors import ServiceDefinitionError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._messages import Command

__all__ = ["Rejected", "Service", "check_topics", "handles", "subscribes"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MARK = "__sagactor_handles__"
_TOPICS_MARK = "__sagactor_subscribes__"
_RESERVED = frozenset({"handler", "handler_names", "subscriptions"})
_TOPIC = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,256}\Z")


class Rejected(Exception):
    """Raised by a handler to say a business "no" (e.g. "insufficient stock").

    By contract a rejected command had no effect. An action's ``Rejected`` is definitive: it is
    stored in the inbox and never retried. A compensation's ``Rejected`` counts as a failed attempt.
    """

    def __init__(self, message: str = "rejected") -> None:
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


def handles(name: str) -> Callable[[F], F]:
    """Mark a method of a :class:`Service` as the handler of the command called ``name``.

    Checked when applied (``ServiceDefinitionError``): ``name`` must match ``[a-z][a-z0-9_]*``, and
    the decorated object must be a plain, synchronous ``def method(self, command)``.
    """
    if not isinstance(name, str):
        if callable(name):
            raise ServiceDefinitionError(
                f"@handles needs the command name: write @handles({_guess(name)!r}), not @handles"
            )
        raise ServiceDefinitionError(
            f"@handles(name): the command name must be a str, not {type(name).__name__}"
        )
    if not _NAME.match(name):
        raise ServiceDefinitionError(
            f"@handles({name!r}): a command name must match [a-z][a-z0-9_]* (e.g. 'reserve_stock')"
        )

    def decorate(fn: F) -> F:
        where = f"@handles({name!r})"
        if isinstance(fn, (staticmethod, classmethod)):
            raise ServiceDefinitionError(
                f"{where} must decorate a plain method `def {name}(self, command)`, "
                f"not a {type(fn).__name__}"
            )
        if not callable(fn):
            raise ServiceDefinitionError(
                f"{where} must decorate a method, got a {type(fn).__name__} ({fn!r})"
            )
        if not isinstance(fn, FunctionType):
            raise ServiceDefinitionError(
                f"{where} must decorate a method defined with `def`, got {type(fn).__name__}"
            )
        label = fn.__qualname__
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise ServiceDefinitionError(
                f"{where} on {label}: handlers are synchronous (they run on their actor's "
                "thread); use `def`, not `async def`"
            )
        if inspect.isgeneratorfunction(fn):
            raise ServiceDefinitionError(
                f"{where} on {label}: a handler returns a dict; this one is a generator (`yield`)"
            )
        previous = getattr(fn, _MARK, None)
        if previous is not None:
            raise ServiceDefinitionError(
                f"{where} on {label}: it already handles {previous!r}; one method handles one "
                "command (write a second method that calls this one)"
            )
        try:
            inspect.signature(fn).bind(object(), object())
        except TypeError:
            raise ServiceDefinitionError(
                f"{where} on {label}: a handler takes (self, command); "
                f"write `def {fn.__name__}(self, command): ...`"
            ) from None
        setattr(fn, _MARK, name)
        return fn

    return decorate


def check_topics(topics: object) -> tuple[str, ...]:
    """``topics`` as a tuple if it is a non-empty sequence of topic patterns, else
    ``ServiceDefinitionError``. A pattern is 1 to 256 of ``A-Za-z0-9_.-`` and the
    ``fnmatch`` wildcards ``* ? [ ] !`` (e.g. ``order_inventory.saga.completed``,
    ``order_inventory.*``, ``*.saga.completed``, ``*``)."""
    if isinstance(topics, str) or not isinstance(topics, (list, tuple, set, frozenset)):
        raise ServiceDefinitionError(
            f"topics are a list of topic patterns, got {type(topics).__name__} {topics!r}"
        )
    if not topics:
        raise ServiceDefinitionError("a subscription needs at least one topic pattern")
    for topic in topics:
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise ServiceDefinitionError(
                f"bad topic pattern {topic!r}: a topic is '<flow>.<event type>' "
                "(e.g. 'order_inventory.saga.completed'), a pattern may use * ? [ ] "
                "(e.g. 'order_inventory.*', '*.saga.completed', '*')"
            )
    return tuple(sorted(topics) if isinstance(topics, (set, frozenset)) else topics)


def subscribes(*topics: str) -> Callable[[F], F]:
    """Mark a method of a :class:`Service` as a subscriber to published saga events whose
    topic matches one of ``topics`` (see :func:`check_topics` for the patterns).

    Checked when applied (``ServiceDefinitionError``): at least one valid pattern, on a plain,
    synchronous ``def method(self, delivery)``. A method may both handle a command and
    subscribe. The runtime subscribes it when it starts the service (named
    ``<module>:<Class>.<method>``, the name of its durable cursor).
    """
    if len(topics) == 1 and callable(topics[0]):
        raise ServiceDefinitionError(
            "@subscribes needs topics: write @subscribes('order_inventory.saga.completed'), "
            "not @subscribes"
        )
    checked = check_topics(list(topics))

    def decorate(fn: F) -> F:
        where = f"@subscribes({', '.join(map(repr, checked))})"
        if not isinstance(fn, FunctionType):
            raise ServiceDefinitionError(
                f"{where} must decorate a method defined with `def`, got {type(fn).__name__}"
            )
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn) or \
                inspect.isgeneratorfunction(fn):
            raise ServiceDefinitionError(
                f"{where} on {fn.__qualname__}: a subscriber is a plain synchronous `def`"
            )
        if getattr(fn, _TOPICS_MARK, None) is not None:
            raise ServiceDefinitionError(
                f"{where} on {fn.__qualname__}: already subscribed; list every topic in one "
                "@subscribes(...)"
            )
        try:
            inspect.signature(fn).bind(object(), object())
        except TypeError:
            raise ServiceDefinitionError(
                f"{where} on {fn.__qualname__}: a subscriber takes (self, delivery); "
                f"write `def {fn.__name__}(self, delivery): ...`"
            ) from None
        setattr(fn, _TOPICS_MARK, checked)
        return fn

    return decorate


def _guess(fn: object) -> str:
    guess = getattr(fn, "__name__", "name")
    return guess if isinstance(guess, str) and _NAME.match(guess) else "name"


class Service:
    """Base class of services: subclass it and mark handlers with :func:`handles`.

    The runtime starts each service *object* as one pykka actor; all its handlers run on that
    actor's thread, one message at a time. Handler tables are built and checked when the subclass
    is created (``ServiceDefinitionError``): two methods of one class handling the same name, or a
    subclass overriding a handler method without ``@handles``, are errors.

    Override :meth:`snapshot` to expose business state to property tests.
    """

    _sagactor_handlers: ClassVar[Mapping[str, str]] = MappingProxyType({})
    _sagactor_names: ClassVar[frozenset[str]] = frozenset()
    _sagactor_subscriptions: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            own: dict[str, str] = {}
            for attr, value in vars(klass).items():
                name = getattr(value, _MARK, None) if isinstance(value, FunctionType) else None
                if name is None:
                    continue
                if name in own:
                    raise ServiceDefinitionError(
                        f"{klass.__qualname__}: methods {own[name]!r} and {attr!r} both handle "
                        f"{name!r}; a command has one handler"
                    )
                if attr in _RESERVED:
                    raise ServiceDefinitionError(
                        f"{klass.__qualname__}.{attr}: the method name {attr!r} is used by "
                        "Service; give the handler another name"
                    )
                own[name] = attr
            table.update(own)
        for name, attr in table.items():
            current = getattr(cls, attr, None)
            if getattr(current, _MARK, None) != name:
                raise ServiceDefinitionError(
                    f"{cls.__qualname__}.{attr} overrides a method that handles {name!r} without "
                    f"@handles({name!r}): decorate the override to keep it a handler, or rename it"
                )
        cls._sagactor_handlers = MappingProxyType(table)
        cls._sagactor_names = frozenset(table)
        subscriptions: dict[str, tuple[str, ...]] = {}
        for attr in dir(cls):
            topics = getattr(getattr(cls, attr, None), _TOPICS_MARK, None)
            if topics is None:
                continue
            if attr in _RESERVED:
                raise ServiceDefinitionError(
                    f"{cls.__qualname__}.{attr}: the method name {attr!r} is used by Service; "
                    "give the subscriber another name"
                )
            subscriptions[attr] = topics
        cls._sagactor_subscriptions = MappingProxyType(subscriptions)

    @classmethod
    def handler_names(cls) -> frozenset[str]:
        """The command names this class handles."""
        return cls._sagactor_names

    @classmethod
    def subscriptions(cls) -> Mapping[str, tuple[str, ...]]:
        """The methods marked :func:`subscribes`, by name, with their topic patterns."""
        return cls._sagactor_subscriptions

    def handler(self, name: str) -> Callable[[Command], Any]:
        """The bound handler method for command ``name``; ``KeyError`` if there is none."""
        try:
            attr = type(self)._sagactor_handlers[name]
        except KeyError:
            known = ", ".join(sorted(self.handler_names())) or "nothing"
            raise KeyError(
                f"{type(self).__name__} has no handler for {name!r} (it handles: {known})"
            ) from None
        handler: Callable[[Command], Any] = getattr(self, attr)
        return handler

    def snapshot(self) -> Any:
        """The service's business state for property tests; ``None`` (the default) means none.

        Called on the service's actor thread (via ``ServicePool.call``), so it sees a consistent
        state between two handlers. An exception propagates to the caller of ``call``.
        """
        return None
