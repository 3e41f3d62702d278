"""Topics of published saga events, and the patterns a subscription names.

A saga event's topic is ``<flow name>.<event type>``: ``order_inventory.saga.completed``,
``order_inventory.step.started``. A subscription names topics or ``fnmatch`` patterns over them
(``*`` matches any run of characters, dots included; ``?`` one character; ``[abc]`` one of a
set): ``order_inventory.*`` is every event of that flow, ``*.saga.completed`` every completed
saga, ``*`` everything. Matching is case-sensitive.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from actors import check_topics

__all__ = ["TopicFilter", "topic_of"]


def topic_of(flow: str, event_type: str) -> str:
    """The topic of an event of type ``event_type`` of a saga of flow ``flow``."""
    return f"{flow}.{event_type}"


class TopicFilter:
    """Whether a topic matches any of a subscription's patterns (the answer cached per topic:
    there are only as many topics as flows times event types).

    Used on the bus's reader thread only; not thread-safe.
    """

    __slots__ = ("_cache", "_regex", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        """``ServiceDefinitionError`` (an ``actors`` error) for an empty or malformed list."""
        self.patterns = check_topics(list(patterns))
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in self.patterns))
        self._cache: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        matched = self._cache.get(topic)
        if matched is None:
            matched = self._cache[topic] = self._regex.match(topic) is not None
        return matched

    def __repr__(self) -> str:
        return f"TopicFilter({list(self.patterns)!r})"
