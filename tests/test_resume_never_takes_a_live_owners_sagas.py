"""A live owner keeps its sagas whatever happens to its files: deleting ``<db>.owners/`` (or one
lock file) while a batch runs once made ``saga resume`` take the live batch's sagas. Once the
owner is really dead, ``saga resume`` adopts them as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sagas.stores import open_store
from tests.test_recovery import FLOW, Child, saga

pytestmark = pytest.mark.slow  # live runs in other processes: CI runs these



def _sagas(url: str, ids: list[str]) -> dict[str, tuple[str, str | None, int]]:
    """Each saga's status, owner and number of events."""
    store = open_store(url, create=False)
    try:
        headers = [store.header(saga_id) for saga_id in ids]
        return {h.saga_id: (h.status, h.owner, h.last_seq) for h in headers}
    finally:
        store.close()


@pytest.mark.parametrize("lost", ["the owners directory", "one lock file"])
def test_resume_takes_nothing_from_a_live_run_whose_lock_files_were_deleted(
    tmp_path: Path, lost: str
) -> None:
    flow = tmp_path / "crashy.yaml"
    flow.write_text(FLOW.replace("TIMEOUT", "30s"))
    db = tmp_path / "sagas.db"
    url = f"sqlite:///{db}"
    child = Child(url, flow, 10, CRASH_DROP_B="1")  # its sagas wait at step b
    before = _sagas(url, child.ids)
    owners = db.with_name(db.name + ".owners")
    if lost == "the owners directory":
        shutil.rmtree(owners)
    else:
        (lock,) = owners.iterdir()
        lock.unlink()
    resumed = saga("resume", "--store", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed"] == 0
    assert _sagas(url, child.ids) == before  # same owner, not one event more
    assert {status for status, _, _ in before.values()} == {"running"}

    child.kill()  # really dead now: its sagas are resumed
    resumed = saga("resume", "--store", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"resumed": 10, "completed": 10, "compensated": 0,
                                          "failed": 0}
    audit = saga("audit", "--store", url)
    assert audit.returncode == 0, audit.stdout + audit.stderr
