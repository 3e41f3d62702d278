"""``parallel`` blocks: named branches that run at once, and their compensation.

All branches start together; the block succeeds when every branch completed. A branch step that
fails makes that branch undo its own steps while the others are halted (at their step boundary:
a step in flight finishes first and, if it succeeded, is undone too); then the steps before the
block are compensated. A cancel or the deadline stops every branch at once. A failure after the
block undoes every branch, then the steps before it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from sagas import FlowErrors, parse_flow
from sagas.engine import core
from sagas.language.compiler import compile_flow
from sagas.language.plan import plan
from sagas.testing import CoreDriver, SagaTestEnvironment
from tests.flow_support import BLOCK, CarDesk, FlightDesk, HotelDesk, SlowFlights, TripDesk
from tests.support import Scripted

ROOT = Path(__file__).resolve().parent.parent
TRIP_FILE = ROOT / "flows" / "trip_booking.yaml"
BRANCH_STEPS = ("book_flight", "book_hotel", "pay_hotel", "book_car")

TRIP = textwrap.dedent("""\
    saga: trip
    services:
      fl: tests.flow_support:FlightDesk
      ho: tests.flow_support:HotelDesk
      ca: tests.flow_support:CarDesk
      it: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 2, backoff: 10s, multiplier: 1, jitter: false}
      timeout: 30s
      on_compensation_failure: park
    deadline: 1h
    steps:
      - {name: prepare, service: it, action: do, compensation: undo}
      - name: book_travel
        parallel:
          flight:
            - {name: book_flight, service: fl, action: do, compensation: undo}
          hotel:
            - {name: book_hotel, service: ho, action: do, compensation: undo}
            - {name: pay_hotel, service: ho, action: do, compensation: undo}
          car:
            - {name: book_car, service: ca, action: do, compensation: undo}
      - {name: confirm, service: it, action: do, compensation: undo}
      - {name: finish, service: it, action: do, pivot: true}
    """)
FLIGHT = "        - {name: book_flight, service: fl, action: do, compensation: undo}\n"
HELD = TRIP.replace(FLIGHT, FLIGHT + "        - {name: flight_hold, delay: 5m}\n")


DESKS = {"fl": FlightDesk, "ho": HotelDesk, "ca": CarDesk, "it": TripDesk}


def services(**scripts: dict) -> dict[str, Scripted]:
    return {name: cls(scripts.get(name, {})) for name, cls in DESKS.items()}


def kinds(result) -> list[tuple[str, str | None]]:
    return [(e.type, e.step) for e in result.history]


def index(result, kind: str, step: str | None, data: dict | None = None) -> int:
    return next(i for i, e in enumerate(result.history)
                if e.type == kind and e.step == step and (data is None or e.data == data))


def compensated(result) -> list[str]:
    """Steps (not blocks) whose compensation succeeded, in order."""
    return [e.step for e in result.history
            if e.type == "compensation.succeeded" and e.step != "book_travel"]


def branch_ends(result) -> dict[str, str]:
    return {e.data["branch"]: e.type for e in result.history
            if e.type in ("branch.completed", "branch.compensated", "branch.failed")}


def succeeded(result) -> set[str]:
    return {e.step for e in result.history if e.type == "step.succeeded"} & set(BRANCH_STEPS)


def assert_ran_concurrently(result, steps=("book_flight", "book_hotel", "book_car")) -> None:
    first_end = next(i for i, e in enumerate(result.history)
                     if e.type in ("step.succeeded", "step.failed", "step.timed_out")
                     and e.step in BRANCH_STEPS)
    started = {e.step for e in result.history[:first_end] if e.type == "step.started"}
    assert set(steps) <= started, kinds(result)


# -- going forward ------------------------------------------------------------------------------
def test_every_branch_completes_then_the_saga_goes_on():
    svc = services()
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(parse_flow(TRIP, source="trip.yaml"), {})
    assert result.status == "completed"
    assert_ran_concurrently(result)
    assert svc["ho"].actions() == ["book_hotel", "pay_hotel"]
    assert svc["it"].actions() == ["prepare", "confirm", "finish"]
    assert branch_ends(result) == {f"book_travel.{b}": "branch.completed"
                                   for b in ("flight", "hotel", "car")}
    done = index(result, "step.succeeded", "book_travel")
    assert all(index(result, "branch.completed", "book_travel", {"branch": f"book_travel.{b}"})
               < done for b in ("flight", "hotel", "car"))
    assert index(result, "step.started", "book_travel") < index(result, "step.started",
                                                                 "book_flight")
    assert done < index(result, "step.started", "confirm")
    assert not any(e.type.startswith("compensation") for e in result.history)
    # a later step reads the outputs of branch steps
    assert result.context["steps"]["book_flight"] == {"step": "book_flight", "attempt": 1}


# -- acceptance: the shipped trip with a slow flight and a refused car --------------------------
def test_a_refused_car_cancels_flight_and_hotel_even_when_the_flight_answers_last():
    flights = SlowFlights()
    trip = {"trip_id": "t-1", "traveller": "ada", "flight": "LH-400", "hotel": "adlon",
            "car": "spaceship", "nights": 3}
    with SagaTestEnvironment(services={"flows.travel:Flights": flights}) as env:
        saga_id = env.start(str(TRIP_FILE), trip)
        assert flights.entered.wait(10)
        # the car is refused and its branch ends while the flight is still being booked
        env.wait_for(saga_id, "branch.compensated")
        history = env.result(saga_id).history
        assert not any(e.step == "book_flight" and e.type == "step.succeeded" for e in history)
        assert not any(e.step == "book_flight" and e.type == "compensation.started"
                       for e in history)
        flights.release.set()
        result = env.drive(saga_id)
        (hotels,) = env.instances("flows.travel:Hotels")
        (cars,) = env.instances("flows.travel:Cars")
    assert result.status == "compensated"
    assert_ran_concurrently(result)
    # halted at the step boundary: the flight booked, then (after its reply) cancelled
    booked = index(result, "step.succeeded", "book_flight")
    assert index(result, "step.failed", "book_car") < booked
    assert booked < index(result, "compensation.started", "book_flight")
    assert ("branch.halted", "book_travel") in kinds(result)
    assert any(e.type == "branch.halted" and e.data == {"branch": "book_travel.flight"}
               for e in result.history)
    assert sorted(compensated(result)) == ["book_flight", "book_hotel"]
    assert flights.cancelled == ["book_flight"]
    assert flights.bookings == {} and hotels.bookings == {} and cars.bookings == {}
    assert branch_ends(result) == {f"book_travel.{b}": "branch.compensated"
                                   for b in ("flight", "hotel", "car")}
    assert not any(e.step == "confirm_itinerary" for e in result.history)
    assert result.history[-1].type == "saga.compensated"


# -- a branch fails -----------------------------------------------------------------------------
def test_the_second_step_of_a_branch_fails_its_first_and_the_other_branches_are_undone():
    svc = services(ho={("pay_hotel", "action"): ["reject"]})
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(parse_flow(TRIP, source="trip.yaml"), {})
    assert result.status == "compensated"
    undone = compensated(result)
    assert sorted(undone[:-1]) == ["book_car", "book_flight", "book_hotel"]
    assert undone[-1] == "prepare"  # the steps before the block, after every branch
    assert "pay_hotel" not in undone  # rejected: it had no effect
    assert svc["ho"].compensations() == ["book_hotel"]
    assert svc["it"].actions() == ["prepare"]
    assert branch_ends(result) == {f"book_travel.{b}": "branch.compensated"
                                   for b in ("flight", "hotel", "car")}


def test_a_branch_that_runs_out_of_attempts_undoes_the_step_itself():
    svc = services(ca={("book_car", "action"): ["error"]})
    flow = parse_flow(TRIP.replace("book_car, service: ca, action: do, compensation: undo",
                                   "book_car, service: ca, action: do, compensation: undo, "
                                   "retry: {attempts: 1}"), source="trip.yaml")
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(flow, {})
    assert result.status == "compensated"
    assert [c.attempt for c in svc["ca"].calls if c.phase == "action"] == [1]
    undone = compensated(result)
    # every branch step that succeeded (pay_hotel if it ran before the halt), and the car
    assert set(undone[:-1]) == succeeded(result) | {"book_car"} and undone[-1] == "prepare"
    assert len(undone) == len(set(undone))
    hotel = [s for s in undone if s in ("book_hotel", "pay_hotel")]
    assert hotel == [s for s in ("pay_hotel", "book_hotel") if s in succeeded(result)]


def test_a_branch_waiting_in_backoff_stops_at_once():
    # the flight fails once and would retry in 10 s; the car is refused meanwhile
    svc = services(fl={("book_flight", "action"): ["error"]},
                   ca={("book_car", "action"): ["reject"]})
    with SagaTestEnvironment(services=svc) as env:
        begin = env.now()
        result = env.run(parse_flow(TRIP, source="trip.yaml"), {})
        assert env.now() == begin  # nobody waited for the backoff
    assert result.status == "compensated"
    assert [c.attempt for c in svc["fl"].calls if c.phase == "action"] == [1]
    # its one attempt failed with an error: the outcome is unknown, so it is undone
    assert set(compensated(result)[:-1]) == (succeeded(result) | {"book_flight"})
    assert "book_car" not in compensated(result) and compensated(result)[-1] == "prepare"


# -- a failure after the block ------------------------------------------------------------------
def test_a_step_after_the_block_rejected_undoes_every_branch_then_the_steps_before():
    svc = services(it={("confirm", "action"): ["reject"]})
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(parse_flow(TRIP, source="trip.yaml"), {})
    assert result.status == "compensated"
    assert ("compensation.started", "book_travel") in kinds(result)
    undone = compensated(result)
    assert sorted(undone[:-1]) == sorted(BRANCH_STEPS) and undone[-1] == "prepare"
    assert [s for s in undone if s in ("book_hotel", "pay_hotel")] == ["pay_hotel", "book_hotel"]
    block_undo = index(result, "compensation.started", "book_travel")
    assert all(block_undo < index(result, "compensation.started", s) for s in BRANCH_STEPS)
    # the branches are undone concurrently: every branch's first compensation starts before
    # any compensation finishes
    first_done = next(i for i, e in enumerate(result.history)
                      if e.type == "compensation.succeeded")
    assert {"book_flight", "pay_hotel", "book_car"} <= \
        {e.step for e in result.history[:first_done] if e.type == "compensation.started"}
    assert "confirm" not in svc["it"].compensations()
    assert "finish" not in svc["it"].actions()


# -- cancel and deadline ------------------------------------------------------------------------
def test_cancel_during_the_block_stops_every_branch_and_compensates():
    svc = services()
    with SagaTestEnvironment(services=svc) as env:
        saga_id = env.start(parse_flow(HELD, source="held.yaml"), {})
        env.settle()  # hotel and car done; the flight branch pauses
        env.runtime.cancel(saga_id)
        result = env.drive(saga_id)
    assert result.status == "compensated"
    timed_out = next(e for e in result.history
                     if e.type == "step.timed_out" and e.step != "book_travel")
    assert (timed_out.step, timed_out.data["reason"]) == ("flight_hold", "cancelled")
    undone = compensated(result)
    assert sorted(undone[:-1]) == sorted(BRANCH_STEPS) and undone[-1] == "prepare"
    assert svc["it"].actions() == ["prepare"]


def test_cancel_while_a_branch_step_is_in_flight_counts_it_as_timed_out():
    svc = services(fl={("book_flight", "action"): ["block"]})
    with SagaTestEnvironment(services=svc) as env:
        saga_id = env.start(parse_flow(TRIP, source="trip.yaml"), {})
        assert svc["fl"].blocked.wait(10)
        env.wait_for(saga_id, "branch.completed", count=2)  # hotel and car
        env.runtime.cancel(saga_id)
        env.wait_for(saga_id, "step.timed_out", step="book_flight")
        svc["fl"].release.set()
        result = env.drive(saga_id)
    assert result.status == "compensated"
    timed_out = next(e for e in result.history
                     if e.type == "step.timed_out" and e.step != "book_travel")
    assert (timed_out.step, timed_out.data["reason"]) == ("book_flight", "cancelled")
    undone = compensated(result)
    assert sorted(undone[:-1]) == sorted(BRANCH_STEPS) and undone[-1] == "prepare"
    assert svc["fl"].compensations() == ["book_flight"]


def test_the_deadline_during_the_block_compensates():
    flow = parse_flow(HELD.replace("deadline: 1h", "deadline: 1m"), source="short.yaml")
    with SagaTestEnvironment(services=services()) as env:
        begin = env.now()
        result = env.run(flow, {})
        assert env.now() == begin + 60
    assert result.status == "compensated"
    assert ("saga.deadline_exceeded", None) in kinds(result)
    timed_out = next(e for e in result.history
                     if e.type == "step.timed_out" and e.step != "book_travel")
    assert (timed_out.step, timed_out.data["reason"]) == ("flight_hold", "deadline")
    undone = compensated(result)
    assert sorted(undone[:-1]) == sorted(BRANCH_STEPS) and undone[-1] == "prepare"


# -- a compensation that parks ------------------------------------------------------------------
PARKING = TRIP.replace(
    "- {name: book_hotel, service: ho, action: do, compensation: undo}",
    "- {name: book_hotel, service: ho, action: do, compensation: undo, retry: {attempts: 1}}")


def test_a_parked_branch_compensation_fails_the_saga_after_the_others_then_retry_finishes():
    svc = services(ca={("book_car", "action"): ["reject"]},
                   ho={("book_hotel", "compensation"): ["error"]},
                   fl={("book_flight", "compensation"): ["block"]})
    with SagaTestEnvironment(services=svc) as env:
        saga_id = env.start(parse_flow(PARKING, source="parking.yaml"), {})
        env.wait_for(saga_id, "branch.failed")  # the hotel's compensation parked
        assert svc["fl"].blocked.wait(10)  # while the flight is still being cancelled
        assert env.result(saga_id).status == "compensating"
        svc["fl"].release.set()
        result = env.drive(saga_id)
        assert (result.status, result.reason) == ("failed", "compensation_failed")
        assert branch_ends(result) == {"book_travel.flight": "branch.compensated",
                                       "book_travel.hotel": "branch.failed",
                                       "book_travel.car": "branch.compensated"}
        assert index(result, "compensation.succeeded", "book_flight") < \
            index(result, "saga.failed", None)
        assert "prepare" not in compensated(result)  # the steps before the block stay
        # (pay_hotel is undone if it ran before the hotel branch was halted)
        assert set(compensated(result)) - {"pay_hotel"} == {"book_flight"}
        # the hotel works again: a retry re-drives the parked compensation, then goes on
        env.runtime.retry(saga_id)
        result = env.drive(saga_id)
    assert result.status == "compensated"
    undone = compensated(result)
    assert set(undone[:-1]) - {"pay_hotel"} == {"book_flight", "book_hotel"}
    assert undone[-1] == "prepare"
    assert [c.attempt for c in svc["ho"].calls
            if c.phase == "compensation" and c.step == "book_hotel"] == [1, 2]
    assert svc["fl"].compensations() == ["book_flight"]  # not compensated again
    assert svc["it"].actions() == ["prepare"]


def test_saga_retry_from_the_cli_finishes_a_parked_branch_compensation(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    svc = services(ca={("book_car", "action"): ["reject"]},
                   ho={("book_hotel", "compensation"): ["error"]})
    with SagaTestEnvironment(url, services=svc) as env:
        result = env.run(parse_flow(PARKING, source="parking.yaml"), {})
    assert (result.status, result.reason) == ("failed", "compensation_failed")
    out = CliRunner().invoke(cli.main, ["retry", result.saga_id, "--store", url, "--json"])
    assert out.exit_code == 1, out.output
    doc = json.loads(out.output)
    assert doc["status"] == "compensated"
    done = [e["step"] for e in doc["history"] if e["type"] == "compensation.succeeded"
            and e["step"] != "book_travel"]
    assert done[-2:] == ["book_hotel", "prepare"]


def test_timers_of_concurrent_branches_do_not_replace_each_other():
    flow = parse_flow(TRIP.replace(
        "        - {name: book_hotel, service: ho, action: do, compensation: undo}\n",
        "        - {name: hotel_wait, delay: 5s}\n"
        "        - {name: book_hotel, service: ho, action: do, compensation: undo}\n"),
        source="timers.yaml")
    svc = services(fl={("book_flight", "action"): ["error"]})  # retried after a 10 s backoff
    with SagaTestEnvironment(services=svc, wait_timeout=5) as env:
        begin = env.now()
        result = env.run(flow, {})
        assert env.now() == begin + 10
    assert result.status == "completed"
    assert svc["ho"].actions() == ["book_hotel", "pay_hotel"]
    wait_done = next(e for e in result.history
                     if e.type == "step.succeeded" and e.step == "hotel_wait")
    assert wait_done.at == begin + 5


# -- a branch that has ended; a block with nothing to undo (on the pure core) -------------------
def test_a_late_reply_after_its_branch_was_compensated_is_ignored_and_the_saga_goes_on():
    saga = CoreDriver(parse_flow(BLOCK))
    saga.reply("prep")
    saga.reply("a1")                          # branch a completed
    saga.fire("timeout", "b1")                # b1 times out: branch b compensated, block fails
    assert saga.of("branch.compensated", branch="blk.b")
    assert saga.of("compensation.started", "a1")
    saga.reply("b1", attempt=1)               # the late reply of b1's timed-out attempt
    saga.reply("a1", phase="compensation")    # branch a undone
    # the block's compensation finishes: prep is undone next ...
    assert saga.of("compensation.succeeded", "blk"), [(e.type, e.step) for e in saga.events]
    assert saga.of("compensation.started", "prep")
    # ... and the late reply was ignored (§4.5: it ends only the step *in progress*)
    assert [e.type for e in saga.events if e.step == "b1"][-1] == "reply.ignored"
    assert len(saga.of("branch.compensated", branch="blk.b")) == 1
    assert not saga.of("branch.completed", branch="blk.b")


def test_a_late_reply_after_its_branch_completed_is_ignored():
    saga = CoreDriver(parse_flow(BLOCK.replace("retry: {attempts: 1}",
                                               "retry: {attempts: 2, backoff: 0}")))
    saga.reply("prep")
    saga.fire("timeout", "b1")                # attempt 1 times out, attempt 2 at once
    saga.reply("b1", attempt=2)               # branch b completed
    assert len(saga.of("branch.completed", branch="blk.b")) == 1
    saga.reply("b1", attempt=1)               # attempt 1's reply comes late
    assert len(saga.of("step.succeeded", "b1")) == 1
    assert len(saga.of("branch.completed", branch="blk.b")) == 1
    assert saga.events[-1].type == "reply.ignored"


def test_a_block_with_nothing_to_undo_halts_its_branches_when_it_fails():
    b1 = "        - {name: b1, service: s, action: do, effects: none}\n"
    flat = BLOCK.replace("a1, service: s, action: do, compensation: undo",
                         "a1, service: s, action: do, effects: none")
    flat = flat.replace(b1, b1 + b1.replace("b1", "b2"))  # branch b: b1, then b2
    assert "a1, service: s, action: do, effects: none" in flat and "b2" in flat
    saga = CoreDriver(parse_flow(flat))
    saga.reply("prep")
    saga.reply("a1", outcome="rejected")      # the block fails and is undone: b is halted
    assert saga.of("branch.halted", "blk")
    assert not saga.of("compensation.started", "prep")  # the branches end first
    before = len(saga.sent)
    saga.reply("b1")                          # b1 was in flight: its branch stops here
    assert not saga.of("step.started", "b2")
    assert not [c for c in saga.sent[before:] if c.phase == "action"]
    assert saga.of("compensation.started", "prep")  # then the steps before the block


# -- a halted branch's backoff timer after the branch ended -------------------------------------
HALTED = textwrap.dedent("""\
    saga: halted_backoff
    services:
      fl: tests.flow_support:FlightDesk
      ho: tests.flow_support:HotelDesk
      ca: tests.flow_support:CarDesk
      it: tests.flow_support:TripDesk
    defaults:
      retry: {attempts: 3, backoff: 10s, multiplier: 1, jitter: false}
      timeout: 30s
    steps:
      - {name: prep, service: it, action: do, compensation: undo}
      - name: blk
        parallel:
          a:
            - {name: a1, service: fl, action: do, compensation: undo, retry: {backoff: 3s}}
          b:
            - {name: b1, service: ho, action: do, effects: none, retry: {backoff: 5s}}
    """)


def test_a_halted_branch_starts_no_attempt_after_it_ended():
    svc = {"fl": FlightDesk({("a1", "action"): ["error", "reject"]}),
           "ho": HotelDesk({("b1", "action"): ["error"]}),
           "ca": CarDesk({}),
           "it": TripDesk({("prep", "compensation"): ["error"]})}
    # t+0: a1 error (again at +3s), b1 error (again at +5s); t+3: a1 rejected: the block
    # fails, branch b (in backoff) is halted and ends, prep's undo errors (again at +13s)
    with SagaTestEnvironment(services=svc) as env:
        result = env.run(parse_flow(HALTED, source="halted.yaml"), {})
    assert result.status == "compensated"
    assert svc["ho"].actions() == ["b1"], [(e.type, e.step, e.attempt) for e in result.history]
    undone = next(i for i, e in enumerate(result.history)
                  if e.type == "compensation.succeeded" and e.step == "blk")
    assert not [e for e in result.history[undone:] if e.type == "step.started"]


# -- restart ------------------------------------------------------------------------------------
def test_retry_of_a_saga_parked_unavailable_mid_block_goes_on_forward():
    text = BLOCK.replace("effects: none", "compensation: undo")
    saga = CoreDriver(parse_flow(text))
    saga.reply("prep")
    saga.reply("a1")                          # branch a completed, b1 in flight
    last = saga.events[-1]
    saga.events.append(core.park_unavailable(saga.saga_id, last.seq, last.event_id, "gone",
                                             saga))
    saga.restart()                            # a new process: the services import again
    assert (saga.status, saga.reason) == ("failed", "definition_unavailable")
    before = len(saga.sent)
    saga.retry("test")
    assert saga.status == "running"
    assert not saga.of("compensation.started", "blk")
    sent = {(c.step, c.phase) for c in saga.sent[before:]}
    assert ("b1", "action") in sent
    saga.reply("b1")
    assert saga.of("step.succeeded", "blk")
    assert saga.status == "completed"


def test_a_restart_mid_block_finishes_without_running_completed_steps_again(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    flow = parse_flow(HELD, source="held.yaml")
    with SagaTestEnvironment(url, start=1_000_000.0, services=services()) as first:
        saga_id = first.start(flow, {})
        first.settle()
        ends = branch_ends(first.result(saga_id))
        assert ends == {"book_travel.hotel": "branch.completed",
                        "book_travel.car": "branch.completed"}
    again = services()
    with SagaTestEnvironment(url, start=1_000_100.0, services=again) as second:
        assert second.runtime.recover() == [saga_id]
        result = second.drive(saga_id)
        assert second.now() == 1_000_300.0  # the pause keeps its original end
    assert result.status == "completed"
    assert again["fl"].actions() == [] and again["ho"].actions() == [] \
        and again["ca"].actions() == []
    assert again["it"].actions() == ["confirm", "finish"]
    for step in (*BRANCH_STEPS, "flight_hold"):
        assert kinds(result).count(("step.started", step)) == 1, step
    assert index(result, "step.succeeded", "book_travel") < index(result, "step.started",
                                                                  "confirm")


def test_a_restart_mid_block_then_a_failure_still_undoes_every_branch(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    flow = parse_flow(HELD, source="held.yaml")
    with SagaTestEnvironment(url, start=1_000_000.0, services=services()) as first:
        saga_id = first.start(flow, {})
        first.settle()
    again = services(it={("confirm", "action"): ["reject"]})
    with SagaTestEnvironment(url, start=1_000_010.0, services=again) as second:
        second.runtime.recover()
        result = second.drive(saga_id)
    assert result.status == "compensated"
    undone = compensated(result)
    assert sorted(undone[:-1]) == sorted(BRANCH_STEPS) and undone[-1] == "prepare"


# -- validation ---------------------------------------------------------------------------------
CAR = "        - {name: book_car, service: ca, action: do, compensation: undo}\n"
HOTEL = ("        - {name: book_hotel, service: ho, action: do, compensation: undo}\n"
         "        - {name: pay_hotel, service: ho, action: do, compensation: undo}\n")


def position(text: str, needle: str) -> tuple[int, int]:
    start = text.index(needle)
    return text.count("\n", 0, start) + 1, start - (text.rfind("\n", 0, start) + 1) + 1


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    (CAR, CAR + "        - name: inner\n          parallel:\n"
              "            x: [{name: x1, service: ca, action: do, compensation: undo}]\n"
              "            y: [{name: y1, service: ca, action: do, compensation: undo}]\n",
     "- name: inner", "not another parallel block"),
    (CAR, CAR + "        - name: pick\n          choice:\n"
              "            - when: {path: $.input.x, eq: 1}\n              steps: []\n",
     "- name: pick", "not a choice"),
    ("      hotel:\n" + HOTEL + "      car:\n" + CAR, "", "flight:", "two or more branch"),
    ("      car:\n" + CAR, "      car: []\n", "[]", "is empty"),
    (CAR, CAR + "        - {name: paid, wait_for: {event: Paid, key: $.input.id}, "
                "timeout: 1m}\n", "{name: paid", "cannot wait"),
    (CAR, "        - {name: book_car, service: ca, action: do, pivot: true}\n", "true",
     "must be a top-level step"),
    ("  - {name: prepare, service: it, action: do, compensation: undo}",
     "  - {name: prepare, service: it, action: do, pivot: true}\n"
     "  - {name: after_pivot, service: it, action: do, retry: {attempts: 3}}",
     "- name: book_travel", "comes after the pivot"),
    (CAR, "        - {name: book_hotel, service: ca, action: do, compensation: undo}\n",
     "book_hotel, service: ca", "duplicate step name 'book_hotel'"),
])
def test_a_malformed_parallel_block_is_refused_with_its_line_and_column(old, new, needle,
                                                                         message):
    assert old in TRIP
    text = TRIP.replace(old, new, 1)
    if "pivot: true" in new and "prepare" in new:  # the pivot moved: the old one is a 2nd one
        text = text.replace("  - {name: finish, service: it, action: do, pivot: true}\n", "")
        text = text.replace("- {name: confirm, service: it, action: do, compensation: undo}",
                            "- {name: confirm, service: it, action: do, retry: {attempts: 3}}")
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="bad.yaml")
    errors = caught.value.errors
    found = [e for e in errors if message in e.message]
    assert found, [e.format() for e in errors]
    line, column = position(text, needle)
    if needle.startswith("- "):  # the error points at the mapping, after the dash
        column += 2
    assert (found[0].line, found[0].column) == (line, column), found[0].format()


# -- graph and plan -----------------------------------------------------------------------------
def test_saga_graph_shows_the_block_and_its_branches():
    runner = CliRunner()
    out = runner.invoke(cli.main, ["graph", str(TRIP_FILE)])
    assert out.exit_code == 0, out.output
    for text in ("book_travel", "flight", "hotel", "car", "book_flight", "book_hotel",
                 "book_car", "book_travel.flight", "book_travel.hotel", "book_travel.car"):
        assert text in out.output, text
    dot = runner.invoke(cli.main, ["graph", str(TRIP_FILE), "--format", "dot"])
    assert dot.exit_code == 0 and "book_travel.car" in dot.output


def test_saga_plan_for_a_refused_car_lists_the_flight_and_hotel_compensations():
    out = CliRunner().invoke(cli.main, ["plan", str(TRIP_FILE), "--fail", "book_car",
                                        "--kind", "rejected", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert sorted(c["step"] for c in doc["compensations"]) == ["book_flight", "book_hotel"]
    assert all(c["compensation"] == "cancel" for c in doc["compensations"])
    assert doc["status"] == "compensated"
    text = CliRunner().invoke(cli.main, ["plan", str(TRIP_FILE), "--fail", "book_car"])
    assert text.exit_code == 0
    assert "book_flight (cancel)" in text.output and "book_hotel (cancel)" in text.output
    assert "book_car (cancel)" not in text.output


def test_plan_of_a_branch_step_undoes_its_branch_the_others_then_the_steps_before():
    compiled = compile_flow(parse_flow(TRIP, source="trip.yaml"))
    p = plan(compiled, "pay_hotel", "rejected")
    steps = [s for s, _ in p.compensations]
    assert sorted(steps[:-1]) == ["book_car", "book_flight", "book_hotel"]
    assert steps[-1] == "prepare" and p.status == "compensated"
    p = plan(compiled, "pay_hotel", "error")  # unknown outcome: undone too, before book_hotel
    steps = [s for s, _ in p.compensations]
    assert steps.index("pay_hotel") < steps.index("book_hotel") and steps[-1] == "prepare"
    p = plan(compiled, "confirm", "rejected")
    steps = [s for s, _ in p.compensations]
    assert sorted(steps[:-1]) == sorted(BRANCH_STEPS) and steps[-1] == "prepare"
    with pytest.raises(ValueError):
        plan(compiled, "book_travel")


def test_saga_validate_accepts_the_shipped_parallel_flow():
    out = CliRunner().invoke(cli.main, ["validate", str(TRIP_FILE)])
    assert out.exit_code == 0, out.output
