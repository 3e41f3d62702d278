"""``saga test --replay-db PATH``: counterexamples kept between runs and tried first.

One JSON Lines file per flow name in PATH; a line is one counterexample: the flow definition's
sha256 it was found on, the input and the schedule. Lines that no longer parse are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..language.model import Flow
from ._harness import Schedule

__all__ = ["load_counterexamples", "save_counterexample"]


def _file(directory: str | os.PathLike[str], flow: Flow) -> Path:
    return Path(directory) / f"{flow.name}.jsonl"


def _encode(flow: Flow, saga_input: Any, schedule: Schedule) -> str:
    return json.dumps({
        "definition": flow.definition,
        "input": saga_input,
        "faults": [[*key, kind] for key, kind in sorted(schedule.faults.items())],
        "persistent": [[*key, kind] for key, kind in sorted(schedule.persistent.items())],
        "crash_after": schedule.crash_after,
    }, sort_keys=True)


def load_counterexamples(directory: str | os.PathLike[str],
                         flow: Flow) -> list[tuple[Any, Schedule]]:
    """The counterexamples kept for ``flow`` (by name), oldest first."""
    try:
        lines = _file(directory, flow).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for line in lines:
        try:
            item = json.loads(line)
            faults = {(str(p), str(s), int(a)): str(k) for p, s, a, k in item["faults"]}
            persistent = {(str(p), str(s)): str(k) for p, s, k in item["persistent"]}
            crash = item["crash_after"]
            schedule = Schedule(faults, None if crash is None else int(crash), persistent)
        except (ValueError, KeyError, TypeError):
            continue
        found.append((item["input"], schedule))
    return found


def save_counterexample(directory: str | os.PathLike[str], flow: Flow, saga_input: Any,
                        schedule: Schedule) -> None:
    """Keep one counterexample (once)."""
    path = _file(directory, flow)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _encode(flow, saga_input, schedule)
    try:
        if line in path.read_text(encoding="utf-8").splitlines():
            return
    except FileNotFoundError:
        pass
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
