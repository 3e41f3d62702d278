"""Test doubles for the choice and parallel flow tests, and :data:`BLOCK`, a small flow with a
parallel block for driving through the core by hand (``sagas.testing.CoreDriver``)."""

from __future__ import annotations

import threading
from typing import Any

from actors import handles
from flows.travel import Flights
from tests.support import Scripted


class SlowFlights(Flights):
    """The shipped flights service, but a booking waits until the test releases it: the
    flight's reply comes after the other branches have finished."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.cancelled: list[str] = []

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(30), "test never released the flight"
        return super().book(command)

    @handles("cancel")
    def cancel(self, command: Any) -> dict[str, Any]:
        self.cancelled.append(command.step)
        return super().cancel(command)


class FlightDesk(Scripted):
    """A scripted service of its own class (services of one class share their instances)."""


class HotelDesk(Scripted):
    pass


class CarDesk(Scripted):
    pass


class TripDesk(Scripted):
    pass


BLOCK = """\
saga: par_block
services:
  s: tests.flow_support:TripDesk
defaults:
  retry: {attempts: 1}
  timeout: 10s
steps:
  - {name: prep, service: s, action: do, compensation: undo}
  - name: blk
    parallel:
      a:
        - {name: a1, service: s, action: do, compensation: undo}
      b:
        - {name: b1, service: s, action: do, effects: none}
"""
"""The YAML text of a flow: ``prep``, then block ``blk`` of branch ``a`` (``a1``, which has a
compensation) and branch ``b`` (``b1``, with no effects); one attempt, 10 s time-outs."""
