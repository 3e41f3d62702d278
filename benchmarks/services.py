"""The services of the benchmark flows: four steps, each its own class (so its own actor).

Every handler counts what it did — actions, rejections, compensations — so a benchmark can prove
that its steps ran. A step whose payload (the saga input) says ``"fail": "<step name>"`` is
rejected (a business "no", so the steps before it are compensated): that is how S2 fails at its
third step without fault injection.

The work done per call is the class's :meth:`BenchService.work`: nothing (trivial), 10 µs of
CPU (``Cpu*``), or 1 ms blocked as if on I/O (``Io*``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from actors import Command, Rejected, Service, handles

__all__ = [
    "CPU_SECONDS",
    "IO_SECONDS",
    "BenchService",
    "CpuFirst",
    "CpuFourth",
    "CpuSecond",
    "CpuThird",
    "First",
    "Fourth",
    "IoFirst",
    "IoFourth",
    "IoSecond",
    "IoThird",
    "Parked",
    "Second",
    "Third",
    "counts",
]

CPU_SECONDS = 10e-6
"""CPU time burnt per call by the ``Cpu*`` services (holding the GIL, as Python code does)."""

IO_SECONDS = 0.001
"""Time blocked per call by the ``Io*`` services (releasing the GIL, as a socket read does)."""


class BenchService(Service):
    """A step service that counts its calls; subclasses choose the work done per call."""

    def __init__(self) -> None:
        super().__init__()
        self.actions = 0
        self.rejections = 0
        self.compensations = 0

    def work(self) -> None:
        """What one call costs besides the engine: nothing here."""

    @handles("act")
    def act(self, command: Command) -> dict[str, Any]:
        self.work()
        if command.payload.get("fail") == command.step:
            self.rejections += 1
            raise Rejected(f"{command.step} refuses (benchmark)")
        self.actions += 1
        return {"step": command.step}

    @handles("undo")
    def undo(self, command: Command) -> dict[str, Any]:
        self.work()
        self.compensations += 1
        return {}


class _Cpu(BenchService):
    def work(self) -> None:
        end = time.perf_counter() + CPU_SECONDS
        while time.perf_counter() < end:
            pass


class _Io(BenchService):
    def work(self) -> None:
        threading.Event().wait(IO_SECONDS)


class First(BenchService):
    """Step 1, trivial."""


class Second(BenchService):
    """Step 2, trivial."""


class Third(BenchService):
    """Step 3, trivial."""


class Fourth(BenchService):
    """Step 4, trivial."""


class CpuFirst(_Cpu):
    """Step 1, 10 µs of CPU per call."""


class CpuSecond(_Cpu):
    """Step 2, 10 µs of CPU per call."""


class CpuThird(_Cpu):
    """Step 3, 10 µs of CPU per call."""


class CpuFourth(_Cpu):
    """Step 4, 10 µs of CPU per call."""


class IoFirst(_Io):
    """Step 1, blocks 1 ms per call."""


class IoSecond(_Io):
    """Step 2, blocks 1 ms per call."""


class IoThird(_Io):
    """Step 3, blocks 1 ms per call."""


class IoFourth(_Io):
    """Step 4, blocks 1 ms per call."""


class Parked(BenchService):
    """The step S6 parks its sagas on (its commands are dropped: it never replies)."""


def counts(services: list[Service]) -> dict[str, int]:
    """Actions, rejections and compensations summed over a pool's instances."""
    total = {"actions": 0, "rejections": 0, "compensations": 0}
    for service in services:
        assert isinstance(service, BenchService)
        total["actions"] += service.actions
        total["rejections"] += service.rejections
        total["compensations"] += service.compensations
    return total
