"""Only the commands that start or feed sagas create a store; the others, on a missing store,
say so (exit 5) and create nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import saga_cli

ROOT = Path(__file__).resolve().parent.parent


def saga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return saga_cli(*args, cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", [["list"], ["show", "x"], ["audit"], ["retry", "x"],
                                     ["cancel", "x"]], ids=lambda c: c[0])
def test_a_command_that_reads_never_creates_a_store(tmp_path, command):
    proc = saga(*command, "--store", "sqlite:///nonexistent/x.db", cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.strip() == "error: no saga store at nonexistent/x.db"
    assert list(tmp_path.iterdir()) == []


def test_send_creates_the_store_it_feeds(tmp_path):
    proc = saga("send", "PaymentConfirmed", "--key", "o-1", "--store", "sqlite:///new/x.db",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "x.db").exists()
    listed = saga("list", "--store", "sqlite:///new/x.db", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.strip() == "no sagas"
