"""The store port is documented facet by facet, and its contract suite ships in the package
(:mod:`sagas.stores.contract`), so a backend written outside this project can run it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import sagas.stores
from sagas.stores import (
    Cursors,
    EventLog,
    ExternalEvents,
    Leases,
    LogReader,
    Ownership,
    Requests,
    SagaStore,
    ServiceInbox,
    partition_of,
)
from sagas.stores.contract import JOIN_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
FACETS = (EventLog, Cursors, LogReader, Ownership, Leases, Requests, ExternalEvents,
          ServiceInbox)


def test_each_facet_documents_its_contract_and_every_method_in_one_place() -> None:
    documented: dict[str, type] = {}
    for facet in (*FACETS, SagaStore):
        assert inspect.getdoc(facet), facet.__name__
        for name, member in vars(facet).items():
            if name.startswith("_"):
                continue
            assert name not in documented, f"{name} in {facet.__name__} and {documented[name]}"
            documented[name] = facet
            method = member.fget if isinstance(member, property) else member
            assert inspect.getdoc(method), f"{facet.__name__}.{name}"
    every = {name for name in dir(SagaStore) if not name.startswith("_")}
    assert every == set(documented)  # and `url`, an attribute every facet declares


def test_the_full_port_is_every_facet() -> None:
    for facet in FACETS:
        assert facet in SagaStore.__mro__, facet.__name__
        assert facet.__name__ in sagas.stores.__all__


def test_the_contract_without_pytest_says_what_to_install() -> None:
    code = ("import sys; sys.modules['pytest'] = None\n"
            "try:\n"
            "    import sagas.stores.contract\n"
            "except ImportError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=JOIN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "sagas.stores.contract is a pytest suite" in proc.stdout
    assert "sagactor[test]" in proc.stdout


@pytest.mark.parametrize(
    ("saga_id", "partitions", "partition"),
    [("order-1", 64, 47), ("order-1", 1, 0), ("", 64, 0), ("commande-é", 64, 4),
     ("trip.o-9", 16384, 14763)],
)
def test_a_sagas_partition_is_the_crc32_of_its_utf8_id(
    saga_id: str, partitions: int, partition: int
) -> None:
    """Documented and stable: anyone can compute it (what another language's member does)."""
    assert partition_of(saga_id, partitions) == partition
    assert partition == zlib.crc32(saga_id.encode("utf-8")) % partitions


def test_partitions_spread_ids_over_every_partition() -> None:
    seen = [partition_of(f"order-{n}", 64) for n in range(6400)]
    counts = [seen.count(p) for p in range(64)]
    assert min(counts) > 50 and max(counts) < 150
