"""Example services of the trip flow (``flows/trip_booking.yaml``): flights, hotels, cars.

Capacity is finite per flight, hotel and car class, so a full flight is a real ``Rejected``;
bookings are idempotent by ``command.key``; cancellations are safe when nothing was booked.
"""

from __future__ import annotations

from typing import Any

from actors import Rejected, Service, handles

__all__ = ["Cars", "Flights", "Hotels", "Itineraries"]

DEFAULT_SEATS = 100_000
DEFAULT_ROOMS = 100_000
CAR_CLASSES = {"compact": 50_000, "suv": 20_000, "van": 5_000}


class _Capacity(Service):
    """Bookings against a finite capacity per resource (a flight, a hotel, a car class)."""

    resource_field = ""
    default_capacity: int | None = 0
    initial_capacity: dict[str, int] = {}

    def __init__(self, capacity: dict[str, int] | None = None) -> None:
        super().__init__()
        self.capacity: dict[str, int] = dict(capacity or {})
        self.bookings: dict[str, tuple[str, int]] = {}

    @handles("book")
    def book(self, command: Any) -> dict[str, Any]:
        return self._take(command, 1)

    @handles("cancel")
    def cancel(self, command: Any) -> dict[str, Any]:
        return self._give_back(command)

    def _take(self, command: Any, units: int) -> dict[str, Any]:
        resource = command.payload[self.resource_field]
        if command.key in self.bookings:
            return {"booking_id": command.key, self.resource_field: resource}
        if resource not in self.capacity:
            if self.default_capacity is None:
                raise Rejected(f"unknown {self.resource_field} {resource!r}")
            self.capacity[resource] = self.default_capacity
        if self.capacity[resource] < units:
            raise Rejected(f"{self.resource_field} {resource} is fully booked")
        self.capacity[resource] -= units
        self.bookings[command.key] = (resource, units)
        return {"booking_id": command.key, self.resource_field: resource}

    def _give_back(self, command: Any) -> dict[str, Any]:
        booking = self.bookings.pop(command.action_key, None)
        if booking is None:
            return {"cancelled": False}
        resource, units = booking
        self.capacity[resource] += units
        return {"cancelled": True}

    def snapshot(self) -> dict[str, Any]:
        """Capacity that differs from what a resource starts with, and the bookings held."""
        initial = type(self).initial_capacity
        used = {r: c for r, c in self.capacity.items()
                if c != initial.get(r, self.default_capacity)}
        return {"capacity": used, "bookings": len(self.bookings)}


class Flights(_Capacity):
    resource_field = "flight"
    default_capacity = DEFAULT_SEATS


class Hotels(_Capacity):
    resource_field = "hotel"
    default_capacity = DEFAULT_ROOMS


class Cars(_Capacity):
    resource_field = "car"
    default_capacity = None  # only the known classes exist
    initial_capacity = CAR_CLASSES

    def __init__(self) -> None:
        super().__init__(CAR_CLASSES)


class Itineraries(Service):
    """Confirms the whole trip to the traveller: the point of no return."""

    def __init__(self) -> None:
        super().__init__()
        self.confirmed: dict[str, dict[str, Any]] = {}

    @handles("confirm")
    def confirm(self, command: Any) -> dict[str, Any]:
        trip = self.confirmed.setdefault(command.key, {
            "trip_id": command.payload["trip_id"], "flight": command.payload["flight"],
            "hotel": command.payload["hotel"], "car": command.payload["car"]})
        return {"itinerary_id": command.key, **trip}

    def snapshot(self) -> dict[str, Any]:
        return {"confirmed": len(self.confirmed)}
