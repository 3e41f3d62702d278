"""Services whose answers are hard to print: long texts, control characters, wrong types."""

from __future__ import annotations

from typing import Any

from actors import Rejected, Service, handles

LONG_REASON = ("insufficient stock for widget-with-a-very-long-name: 10000000 asked, 1000000 "
               "left in the central warehouse, 0 in transit, 0 on order")


class Noisy(Service):
    @handles("ok")
    def ok(self, command: Any) -> dict[str, Any]:
        return {"done": True}

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return {}

    @handles("refuse_long")
    def refuse_long(self, command: Any) -> dict[str, Any]:
        raise Rejected(LONG_REASON)

    @handles("refuse_with_escapes")
    def refuse_with_escapes(self, command: Any) -> dict[str, Any]:
        raise Rejected("bell\x07 and \x1b]0;owned\x07 title")

    @handles("return_a_number")
    def return_a_number(self, command: Any) -> Any:
        return 42
