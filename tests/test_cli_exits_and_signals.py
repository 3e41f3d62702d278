"""Every command exits when its work is done, whatever a handler does; the first Ctrl-C or
SIGTERM stops gracefully (and says what it left in flight), a second exits at once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import SAGA_CODE, saga_cli

ROOT = Path(__file__).resolve().parent.parent
HANGS = ROOT / "tests" / "flows" / "hangs"
def saga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return saga_cli(*args, cwd=cwd, timeout=120)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SAGA_CODE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def wait_for_sagas(db: Path, at_least: int, timeout: float = 30.0) -> None:
    """Until the store holds ``at_least`` sagas (polling: another process writes them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                if conn.execute("SELECT count(*) FROM sagas").fetchone()[0] >= at_least:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} sagas in {db} after {timeout}s")


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
    wait_for_sagas(db, 1)
    time.sleep(0.2)  # the stuck step is in flight now (its timeout is 300 ms)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    begun = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - begun < 5
