"""A registered owner's process is told apart from any other that had its pid
(:mod:`sagas.stores._process`): what keeps a live owner alive when its lock file is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sagas.stores._process import ProcessIdentity, _stat, process_alive, this_process
from sagas.stores.contract import JOIN_TIMEOUT
from tests.support import eventually

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

NAMED = """
import sys
with open("/proc/self/comm", "w") as comm:
    comm.write(sys.argv[1])
print("named", flush=True)
sys.stdin.readline()
"""


def _identity_of(pid: int) -> ProcessIdentity:
    stat = _stat(str(pid))
    assert stat is not None
    return this_process()._replace(pid=pid, started=stat.started)


def test_this_process_is_alive() -> None:
    me = this_process()
    assert me.started is not None and me.boot and me.pidns and me.pidns.startswith("pid:")
    assert process_alive(me) is True
    assert this_process() is me  # computed once per process


@pytest.mark.parametrize("name", ["a) (b c", "x) S 1 2 3", ")"])
def test_a_process_whose_name_has_spaces_and_parentheses_is_read_right(name: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", NAMED, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "named\n"
        stat = _stat(str(child.pid))
        assert stat is not None and stat.pid == child.pid and stat.state in "RS"
        identity = _identity_of(child.pid)
        assert process_alive(identity) is True
        assert process_alive(identity._replace(started=stat.started - 1)) is False
    finally:
        child.kill()
        child.communicate(timeout=JOIN_TIMEOUT)
    assert process_alive(identity) is False


def test_a_process_that_exited_is_gone_even_before_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = _identity_of(child.pid)
        child.kill()
        eventually(lambda: (stat := _stat(str(child.pid))) is None or stat.state == "Z",
                   JOIN_TIMEOUT, what="the child exiting")
        assert process_alive(identity) is False
    finally:
        child.wait(timeout=JOIN_TIMEOUT)


def test_what_cannot_be_checked_from_here_is_unknown() -> None:
    me = this_process()
    assert process_alive(me._replace(pidns="pid:[1]")) is None  # another container's pids
    assert process_alive(me._replace(started=None)) is None  # recorded without /proc
    assert process_alive(me._replace(boot=None)) is None
    assert process_alive(me._replace(boot="another-boot")) is False  # before this boot
