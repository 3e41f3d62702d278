"""The errors sagactor raises, in one tree.

::

    SagactorError
    ├── FlowError                one problem in a flow file, with source, line and column
    │   └── FlowErrors           every problem of one file (``.errors``); positioned at the first
    ├── InputError               a saga input that is not JSON or fails the flow's input schema
    ├── DefinitionUnavailable    a flow's services cannot be imported or started
    ├── IdConflict               a saga id exists with another definition or input
    ├── SagaTimeout              ``Runtime.wait`` ran out of time (the saga is still running)
    ├── SagaOrphaned             a saga in flight that no live process drives (``saga resume``)
    └── StoreError               anything a saga store cannot do
        ├── BadStoreUrl          an unknown scheme or malformed store URL (a usage error)
        ├── StoreUnavailable     the store cannot be used: damaged, locked, newer schema
        │   └── StoreMissing     there is no store where one should be read (nothing is created)
        ├── UnknownSaga          no saga with that id
        ├── SeqConflict          an append at a ``seq`` that is already taken
        └── LeaseLost            a fenced write for a partition whose lease its member no
                                 longer holds (or never held) at that epoch: nothing written

The CLI turns each into one line on stderr and an exit code (its table, ``cli.EXIT_BY_ERROR``):
the exceptions themselves know nothing of exit codes.
"""

from __future__ import annotations

__all__ = [
    "BadStoreUrl",
    "DefinitionUnavailable",
    "FlowError",
    "FlowErrors",
    "IdConflict",
    "InputError",
    "LeaseLost",
    "SagaOrphaned",
    "SagaTimeout",
    "SagactorError",
    "SeqConflict",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "UnknownSaga",
]


class SagactorError(Exception):
    """Root of every error sagactor raises on purpose."""



class FlowError(SagactorError):
    """One problem in a flow definition, at ``source:line:column`` (1-based)."""


    def __init__(self, message: str, *, source: str = "<flow>", line: int = 1, column: int = 1):
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self.format())

    def format(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"


class FlowErrors(FlowError):
    """Every problem found in one flow; ``line``/``column``/``message`` are the first one's."""

    def __init__(self, errors: list[FlowError]):
        if not errors:
            raise ValueError("FlowErrors needs at least one error")
        self.errors = sorted(errors, key=lambda e: (e.line, e.column))
        first = self.errors[0]
        super().__init__(first.message, source=first.source, line=first.line, column=first.column)
        self.args = ("\n".join(e.format() for e in self.errors),)

    def __str__(self) -> str:
        return self.args[0]


class InputError(SagactorError):
    """A saga input that is not valid JSON or does not satisfy the flow's input schema."""



class DefinitionUnavailable(SagactorError):
    """A flow's services could not be imported or instantiated."""



class IdConflict(SagactorError):
    """A saga id that already exists with a different definition or input."""



class SagaTimeout(SagactorError):
    """Waiting for a saga to end ran out of time; the saga itself goes on."""



class SagaOrphaned(SagactorError):
    """A saga is in flight but the process that drove it is gone; ``saga resume`` finishes it."""



class StoreError(SagactorError):
    """A saga store could not do what was asked."""



class BadStoreUrl(StoreError):
    """The store URL has an unknown scheme or is malformed."""



class StoreUnavailable(StoreError):
    """The store exists but cannot be used: damaged, locked, or of a newer schema."""



class StoreMissing(StoreUnavailable):
    """No store exists where one was to be opened without creating it (``open_store(url,
    create=False)``: the commands that only read or act on existing sagas)."""


    def __init__(self, path: str):
        self.path = path
        super().__init__(f"no saga store at {path}")


class UnknownSaga(StoreError):
    """No saga with that id in the store."""


    def __init__(self, saga_id: str):
        self.saga_id = saga_id
        super().__init__(f"unknown saga id {saga_id!r}")


class SeqConflict(StoreError):
    """An append found its expected ``seq`` already taken (another writer got there first)."""


    def __init__(self, saga_id: str, seq: int):
        self.saga_id = saga_id
        self.seq = seq
        super().__init__(f"saga {saga_id!r}: seq {seq} is already taken")


class LeaseLost(StoreError):
    """A fenced write (``EventLog.write(..., fence=...)``) was refused, and nothing of it
    written: the lease of ``partition``, where saga ``saga_id`` lives, is not held by
    ``member`` at ``epoch`` (another member took it over, it expired or was released), or
    the fence names no epoch for it (``epoch`` is ``None``: the member never held it). The
    member drops the partition: it must not write to its sagas again before it acquires its
    lease anew (a new epoch) and reloads them."""

    def __init__(self, partition: int, member: str, epoch: int | None, saga_id: str):
        self.partition = partition
        self.member = member
        self.epoch = epoch
        self.saga_id = saga_id
        if epoch is None:
            held = f"holds no lease on partition {partition}"
        else:
            held = f"no longer holds partition {partition} at epoch {epoch}"
        super().__init__(f"member {member!r} {held} (saga {saga_id!r}): the write was refused")
