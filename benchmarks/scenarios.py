"""The scenarios: id, title, the function that runs one, and how many sagas (full / ``--quick``).

The ids are what ``--only`` takes (``S8`` selects ``S8a``, ``S8b`` and ``S8c``); ``B1``, the
bare-pykka baseline every ratio is taken against, is always run. The number of sagas is what the
scenario's function is given: for S6 the sagas it parks (its row times S1's workload, a tenth as
many sagas), for S7 the sagas it recovers, for S11 and S12 the sagas of each of their runs. A
scenario that ``requires`` something missing (S11: PostgreSQL and psycopg; S12: redis-server and
redis-py) is skipped with one line saying what to install, except under ``CI=true``, where it
runs and fails.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ._common import Result

__all__ = ["BASELINE", "SCENARIOS", "Scenario", "select"]


@dataclass(frozen=True)
class Scenario:
    """One line of the table."""

    id: str
    title: str
    function: str  # "module:function" under benchmarks, called with the number of sagas
    full: int
    quick: int
    requires: str | None = None
    """"module:function" under benchmarks saying in one line what to install for this scenario
    (``None`` when all is there); the scenario is then skipped, except under ``CI=true``."""

    def sagas(self, quick: bool) -> int:
        return self.quick if quick else self.full

    def unavailable(self) -> str | None:
        """What to install before this scenario can run, or ``None``."""
        if self.requires is None:
            return None
        module, _, name = self.requires.partition(":")
        check: Callable[[], str | None] = getattr(
            importlib.import_module(f"benchmarks.{module}"), name)
        return check()

    def load(self) -> Callable[[int], Result]:
        module, _, name = self.function.partition(":")
        function: Callable[[int], Result] = getattr(
            importlib.import_module(f"benchmarks.{module}"), name)
        return function


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("B0", "plain function calls (4 calls per saga)", "baselines:run_plain",
             1_000_000, 100_000),
    Scenario("B1", "bare pykka: 4 actors, 100 callers, ask per step", "baselines:run_pykka",
             20_000, 2_000),
    Scenario("S1", "actor runtime, memory://, happy path", "actor_runtime:run_s1",
             50_000, 2_000),
    Scenario("S2", "S1 failing at step 3 (2 compensations)", "actor_runtime:run_s2",
             20_000, 1_000),
    Scenario("S3", "SQLite synchronous=normal", "actor_runtime:run_s3", 10_000, 1_000),
    Scenario("S4", "SQLite synchronous=full", "actor_runtime:run_s4", 3_000, 500),
    Scenario("S5", "deterministic harness (run_schedule, virtual time)", "harness:run_s5",
             50_000, 5_000),
    Scenario("S6", "S1 while N sagas wait in flight on SQLite", "inflight:run_s6",
             100_000, 5_000),
    Scenario("S7", "recovery: resume N in-flight sagas from SQLite", "recovery:run_s7",
             10_000, 1_000),
    Scenario("S8a", "handlers burn 10 µs CPU per step", "actor_runtime:run_s8_cpu",
             10_000, 1_000),
    Scenario("S8b", "handlers block 1 ms per call, instances: 1", "actor_runtime:run_s8_io1",
             3_000, 500),
    Scenario("S8c", "handlers block 1 ms per call, instances: 8", "actor_runtime:run_s8_io8",
             5_000, 500),
    Scenario("S10", "S3 with a subscriber sleeping 10 ms per event", "event_bus:run_s10",
             1_000, 300),
    Scenario("S11", "S3's workload on PostgreSQL, 1 member (2 in the notes)",
             "scale_out:run_s11", 10_000, 1_000, requires="pg_server:unavailable"),
    Scenario("S12", "S3's workload, every service remote: SQLite (PostgreSQL in the notes)",
             "remote_services:run_s12", 5_000, 1_000, requires="remote_services:unavailable"),
)

BASELINE = "B1"


def select(only: str | None) -> list[Scenario]:
    """The scenarios ``--only`` names (comma-separated ids, a prefix such as ``S8`` taking its
    whole family), plus the baseline; all of them without ``--only``. ``ValueError`` names an
    id that matches nothing."""
    if not only:
        return list(SCENARIOS)
    wanted: set[str] = {BASELINE}
    for raw in only.split(","):
        key = raw.strip().upper()
        if not key:
            continue
        matched = [s.id for s in SCENARIOS if s.id.upper() == key or
                   (s.id.upper().startswith(key) and s.id[len(key):].isalpha())]
        if not matched:
            known = ", ".join(s.id for s in SCENARIOS)
            raise ValueError(f"unknown scenario {raw.strip()!r} (known: {known})")
        wanted.update(matched)
    return [s for s in SCENARIOS if s.id in wanted]
