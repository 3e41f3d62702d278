"""The event bus across a ``kill -9``: a subscriber resumes from its durable cursor and, over
both lives of the process, gets every event of the log in order — duplicates only right around
the crash, never a gap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sagas.bus import PAGE_SIZE
from sagas.stores import SqliteStore
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent
SAGAS = 400


def child(db: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.bus_support", str(db), str(out),
                             str(SAGAS)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    text = path.read_text()
    return [int(line) for line in text.splitlines()[: text.count("\n")]]  # whole lines only


@pytest.mark.slow
def test_a_subscriber_killed_mid_way_resumes_from_its_cursor_missing_nothing(
    tmp_path: Path,
) -> None:
    db, first_out, second_out = tmp_path / "bus.db", tmp_path / "first", tmp_path / "second"
    first = child(db, first_out)

    def three_pages_in() -> bool:
        assert first.poll() is None, first.communicate()  # it must still run when killed
        return len(lines(first_out)) >= 3 * PAGE_SIZE

    try:
        eventually(three_pages_in, 60, what="three pages of events delivered")
    finally:
        first.kill()  # SIGKILL
    first.wait(10)
    first_run = lines(first_out)
    with SqliteStore(db) as store:
        cursor = store.cursor("positions")
        written = store.last_position()
    assert cursor is not None and 0 < cursor <= first_run[-1]
    assert written > first_run[-1]  # killed behind the log, with sagas in flight

    second = child(db, second_out)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and "done" in out, err
    second_run = lines(second_out)
    with SqliteStore(db) as store:
        log = [event.position for _, event in store.read_all(0, 10**9)]
        assert store.cursor("positions") == log[-1]
        assert all(h.status == "completed" for h in store.list()) and len(store.list()) == SAGAS

    for run in (first_run, second_run):
        assert run == sorted(set(run))  # in order, no repeats within one life
    assert first_run == log[: len(first_run)]  # a prefix of the log
    assert second_run[0] == cursor + 1  # resumed just after its durable cursor
    assert second_run == log[log.index(cursor + 1):]  # then everything, no gap
    repeated = set(first_run) & set(second_run)
    assert len(repeated) == first_run[-1] - cursor  # only what came after the last save
