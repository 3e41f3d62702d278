"""The messages the runtime passes around: frozen value objects, never loose dicts.

pykka does not copy messages, so everything here is immutable: a :class:`Command` deep-freezes its
``payload`` and ``result`` when it is built (:func:`freeze`), so the handler, the sender and any
number of redeliveries can share it safely across threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import Any, Literal, Protocol

__all__ = [
    "OUTCOMES",
    "PHASES",
    "Command",
    "Deliver",
    "Outcome",
    "Phase",
    "Replies",
    "Reply",
    "StoredReply",
    "Teller",
    "action_key",
    "compensation_key",
    "freeze",
    "thaw",
]

Phase = Literal["action", "compensation"]
Outcome = Literal["succeeded", "rejected", "error"]
PHASES: frozenset[str] = frozenset({"action", "compensation"})
OUTCOMES: frozenset[str] = frozenset({"succeeded", "rejected", "error"})

_SCALARS = (str, int, float, bool, type(None))


class Teller(Protocol):
    """Anything a message can be sent to: a pykka ``ActorRef``, or a test double."""

    def tell(self, message: Any, /) -> None: ...


def freeze(obj: Any) -> Any:
    """Deep-freeze JSON-like data: mappings become ``MappingProxyType``, lists become tuples.

    Always builds a new structure (nothing of ``obj`` is shared but its scalars), so no one
    holding ``obj`` can change the frozen copy. Accepts mappings with ``str`` keys, lists, tuples,
    ``str``, ``int``, ``float``, ``bool`` and ``None``; anything else raises ``TypeError`` naming
    where it is.
    """
    return _freeze(obj, "$")


_SCALAR_TYPES = frozenset(_SCALARS)


def _freeze(obj: Any, path: str) -> Any:
    kind = type(obj)
    if kind in _SCALAR_TYPES:
        return obj
    if kind is dict and all(type(k) is str and type(v) in _SCALAR_TYPES
                            for k, v in obj.items()):
        return MappingProxyType(obj.copy())  # flat, the common payload: nothing to descend
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, Mapping):
        frozen = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"cannot freeze {path}: key {key!r} is a {type(key).__name__}; "
                    "JSON object keys are strings"
                )
            frozen[key] = _freeze(value, f"{path}.{key}")
        return MappingProxyType(frozen)
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(value, f"{path}[{i}]") for i, value in enumerate(obj))
    raise TypeError(
        f"cannot freeze {path}: a {type(obj).__name__} is not JSON-like "
        "(use dict, list, str, int, float, bool or None)"
    )


def thaw(obj: Any) -> Any:
    """The inverse of :func:`freeze`: plain, mutable ``dict``/``list`` copies, all the way down."""
    if isinstance(obj, Mapping):
        return {key: thaw(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(value) for value in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Command:
    """Run handler ``name`` of a service, for one attempt of one step of one saga.

    ``key`` is the idempotency key, the same for every attempt: ``saga_id:step`` for an action,
    ``saga_id:step:compensation`` for its compensation. ``payload`` and ``result`` (a compensation's
    view of its action's output, ``None`` when unknown) are deep-frozen on construction.
    ``timeout_at`` (Unix seconds) is informational: the runtime does not drop late commands.

    Raises ``ValueError`` for an unknown ``phase`` or an ``attempt`` below 1, and ``TypeError``
    for a payload that is not JSON-like.
    """

    command_id: str
    saga_id: str
    step: str
    phase: Phase
    name: str
    attempt: int
    key: str
    payload: Mapping[str, Any]
    result: Mapping[str, Any] | None = None
    timeout_at: float | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(
                f"Command.phase must be 'action' or 'compensation', not {self.phase!r}"
            )
        if self.attempt < 1:
            raise ValueError(f"Command.attempt counts from 1, got {self.attempt!r}")
        payload = self.payload
        if type(payload) is not dict and not isinstance(payload, Mapping):
            raise TypeError(f"Command.payload must be a mapping, not {type(payload).__name__}")
        _set_payload(self, _freeze(payload, "$.payload"))
        if self.result is not None:
            _set_result(self, _freeze(self.result, "$.result"))

    @property
    def action_key(self) -> str:
        """The key of the action this command belongs to: ``saga_id:step`` (what a
        compensation looks up to find what it undoes)."""
        return action_key(self.saga_id, self.step)


_set_payload = Command.__dict__["payload"].__set__
_set_result = Command.__dict__["result"].__set__


def action_key(saga_id: str, step: str) -> str:
    """The idempotency key of a step's action: the same for every attempt."""
    return f"{saga_id}:{step}"


def compensation_key(saga_id: str, step: str) -> str:
    """The idempotency key of a step's compensation: the same for every attempt."""
    return f"{saga_id}:{step}:compensation"


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of one command, sent by the service actor with ``reply_to.tell(reply)``.

    ``output`` is the handler's JSON object (a private plain ``dict``, for ``succeeded`` only);
    ``error`` is one line (for ``rejected`` and ``error``). ``replayed`` is true when the inbox
    answered from a stored definitive reply without running the handler. ``service`` and
    ``instance`` name the pool and the index of the instance that answered.
    """

    command: Command
    outcome: Outcome
    output: dict[str, Any] | None
    error: str | None
    replayed: bool
    service: str
    instance: int

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(
                f"Reply.outcome must be one of {sorted(OUTCOMES)}, not {self.outcome!r}"
            )


@dataclass(frozen=True, slots=True)
class Replies:
    """Several :class:`Reply` s to one receiver, sent as one message (in the order produced).

    A service actor that handled a batch of commands answers each receiver once; a receiver
    handles ``replies`` in order, as if each had arrived alone.
    """

    replies: tuple[Reply, ...]


@dataclass(frozen=True, slots=True)
class Deliver:
    """What a service actor receives: a command and where to send its :class:`Reply`."""

    command: Command
    reply_to: Teller


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A definitive reply as an :class:`~actors.InboxStore` keeps it (no command, no routing)."""

    outcome: Outcome
    output: dict[str, Any] | None
    error: str | None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(
                f"StoredReply.outcome must be one of {sorted(OUTCOMES)}, not {self.outcome!r}"
            )


def _direct_init(cls: type) -> None:
    """Give a frozen, slotted dataclass an ``__init__`` that sets each field through its slot
    (then calls ``__post_init__``, if any), instead of the generated one's
    ``object.__setattr__`` per field: the same signature and checks at about half the cost.
    These messages are built several times per saga step."""
    params, body, namespace = [], [], {"__post_init__": getattr(cls, "__post_init__", None)}
    for f in fields(cls):
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    if namespace["__post_init__"] is not None:
        body.append("    __post_init__(self)")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]


for _cls in (Command, Reply, Replies, Deliver, StoredReply):
    _direct_init(_cls)
