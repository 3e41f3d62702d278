"""Every command exits when its work is done, whatever a handler does; the first Ctrl-C or
SIGTERM stops gracefully (and says what it left in flight), a second exits at once."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import SAGA_CODE, eventually, saga_cli

ROOT = Path(__file__).resolve().parent.parent
HANGS = ROOT / "tests" / "flows" / "hangs"


def saga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return saga_cli(*args, cwd=cwd, timeout=120)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SAGA_CODE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def count(db: Path, sql: str) -> int:
    """The count ``sql`` reads from the store another process writes (0 while there is none)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=1)) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def wait_for_sagas(db: Path, at_least: int, timeout: float = 30.0) -> None:
    """Until the store holds ``at_least`` sagas (another process writes them)."""
    eventually(lambda: count(db, "SELECT count(*) FROM sagas") >= at_least, timeout,
               interval=0.05, what=f"{at_least} sagas in {db}")


@pytest.mark.slow
def test_saga_run_exits_although_a_handler_never_returns(tmp_path):
    begun = time.monotonic()
    proc = saga("run", str(HANGS / "stuck.yaml"), "--input", "{}", "--store",
                f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    # the undo of "two" waits behind the stuck call on the same instance, and times out too
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("failed (compensation_failed)")
    assert time.monotonic() - begun < 60


@pytest.mark.slow
def test_ctrl_c_stops_a_batch_gracefully_and_resume_finishes_it(tmp_path):
    db = tmp_path / "s.db"
    proc = start("run", str(HANGS / "slow.yaml"), "--input", "{}", "--count", "100000",
                 "--concurrency", "20", "--store", f"sqlite:///{db}", cwd=tmp_path)
    wait_for_sagas(db, 40)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: " in err and "left in flight; 'saga resume' finishes them" in err
    assert "Traceback" not in err
    resumed = saga("resume", "--store", f"sqlite:///{db}", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    audit = saga("audit", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout  # every saga ended, by the rules
    listed = saga("list", "--store", f"sqlite:///{db}", "--status", "running", "--json",
                  cwd=tmp_path)
    assert listed.stdout.strip() == "[]"


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c(tmp_path):
    db = tmp_path / "s.db"
    proc = start("run", str(HANGS / "slow.yaml"), "--input", "{}", "--count", "100000",
                 "--store", f"sqlite:///{db}", cwd=tmp_path)
    wait_for_sagas(db, 20)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: " in err and "Traceback" not in err


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    db = tmp_path / "s.db"
    proc = start("run", str(HANGS / "stuck.yaml"), "--input", "{}", "--store",
                 f"sqlite:///{db}", cwd=tmp_path)
    eventually(lambda: count(db, "SELECT count(*) FROM events WHERE type = 'step.started' "
                                 "AND step = 'two'"), 30, what="the stuck step 'two' started")
    proc.send_signal(signal.SIGINT)  # the stuck handler never returns: the stop waits for it ...
    # ... when the second signal comes. Nothing shows that the first one was handled (the
    # command says so only as it exits), and two signals that arrive before Python's handler
    # runs are handled once: so the second one is sent a little later
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    begun = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - begun < 5
