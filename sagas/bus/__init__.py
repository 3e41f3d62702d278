"""The event bus: saga events published from the store's log to subscribers.

Topics, the delivery promise and what happens to a failing handler: :mod:`sagas.bus._bus`.
"""

from ._bus import (
    MAX_PAGES,
    PAGE_SIZE,
    RESERVED_PREFIX,
    Delivery,
    EventBus,
    Start,
    Subscriber,
    Subscription,
    topic_of,
)

__all__ = ["MAX_PAGES", "PAGE_SIZE", "RESERVED_PREFIX", "Delivery", "EventBus", "Start",
           "Subscriber", "Subscription", "topic_of"]
