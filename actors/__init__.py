"""The actor runtime of sagactor: service actors, their inbox, supervision, timers.

It knows nothing of sagas. Users write :class:`Service` classes with :func:`handles` methods (and
raise :class:`Rejected` for a business "no"; :func:`subscribes` marks a method that reacts to
published events); the saga engine starts them as
:class:`ServicePool` s and talks to them with :class:`Command` / :class:`Reply` messages.

Threads: every service object runs on its own pykka actor thread; a :class:`ThreadScheduler` has
one daemon thread; everything else runs on the caller's thread. Errors: :class:`ActorError` is the
root of what this package raises (the tree is in ``actors._errors``).
"""

from __future__ import annotations

from ._activity import Activity, CountingRef
from ._clock import Clock, SystemClock, VirtualClock
from ._deadletters import DeadLetter, DeadLetters
from ._dispatch import Dispatcher
from ._errors import (
    ActorError,
    ActorUnavailable,
    CallFailed,
    CallTimeout,
    SchedulerStopped,
    ServiceDefinitionError,
    SettleTimeout,
)
from ._faults import Fault, FaultInjector, FaultKind, Faults
from ._inbox import InboxStore, MemoryInbox
from ._json import dumps_compact, loads_compact
from ._mailbox import fast_inbox
from ._messages import (
    Command,
    Deliver,
    Outcome,
    Phase,
    Replies,
    Reply,
    StoredReply,
    Teller,
    action_key,
    compensation_key,
    freeze,
    thaw,
)
from ._pool import ServicePool
from ._service import Rejected, Service, check_topics, handles, subscribes
from ._timers import (
    Scheduler,
    ThreadScheduler,
    TimerHandle,
    VirtualScheduler,
    make_scheduler,
)

__all__ = [
    "Activity",
    "ActorError",
    "ActorUnavailable",
    "CallFailed",
    "CallTimeout",
    "Clock",
    "Command",
    "CountingRef",
    "DeadLetter",
    "DeadLetters",
    "Deliver",
    "Dispatcher",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Faults",
    "InboxStore",
    "MemoryInbox",
    "Outcome",
    "Phase",
    "Rejected",
    "Replies",
    "Reply",
    "Scheduler",
    "SchedulerStopped",
    "Service",
    "ServiceDefinitionError",
    "ServicePool",
    "SettleTimeout",
    "StoredReply",
    "SystemClock",
    "Teller",
    "ThreadScheduler",
    "TimerHandle",
    "VirtualClock",
    "VirtualScheduler",
    "action_key",
    "check_topics",
    "compensation_key",
    "dumps_compact",
    "fast_inbox",
    "freeze",
    "handles",
    "loads_compact",
    "make_scheduler",
    "subscribes",
    "thaw",
]
