"""The ``saga`` command on a PostgreSQL store: a saga run there is listed and shown from
another process, a command that only reads creates nothing, and no error shows the password."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.postgres_server import (  # noqa: F401 - fixtures
    PostgresServer,
    postgres_server,
    postgres_url,
    require_postgres,
)
from tests.support import saga_cli

pytestmark = pytest.mark.slow  # a real PostgreSQL server and saga processes: CI runs these


ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-Pa55"
ORDER = '{"order_id":"o-1","sku":"widget","qty":1,"amount":25}'


def _masked(url: str) -> str:
    return url.replace(f":{SECRET}@", ":***@")


def test_a_saga_run_on_postgres_completes_and_is_listed(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path  # noqa: F811
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    url = postgres_server.url(name, password=SECRET)  # trust authentication takes any password
    run = saga_cli("run", "flows/order_inventory.yaml", "--input", ORDER, "--id", "o-1",
                   "--store", url, timeout=120)
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout + run.stderr
    listed = saga_cli("list", "--store", url, "--json", timeout=120)
    assert listed.returncode == 0, listed.stderr
    sagas = json.loads(listed.stdout)
    assert [(s["saga_id"], s["status"]) for s in sagas] == [("o-1", "completed")]
    env = {**os.environ, "SAGA_STORE": url}
    shown = saga_cli("show", "o-1", cwd=tmp_path, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout
    audit = saga_cli("audit", cwd=tmp_path, env=env, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert list(tmp_path.iterdir()) == []  # no SQLite file made on the side


def test_a_command_that_reads_never_creates_a_database(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    name = postgres_server.new_name()
    url = postgres_server.url(name, password=SECRET)
    proc = saga_cli("list", "--store", url, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.strip() == f"error: no saga store at {_masked(url)}"
    assert name not in postgres_server.databases()


def test_an_unreachable_server_exits_5_with_the_password_masked() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_postgres("psycopg is not installed (pip install 'sagactor[postgres]')")
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://saga:{SECRET}@127.0.0.1:{port}/sagas"
    for command in (["list"], ["run", "flows/order_inventory.yaml", "--input", ORDER]):
        proc = saga_cli(*command, "--store", url, timeout=120)
        assert proc.returncode == 5, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"error: saga store {_masked(url)} cannot be reached: "), line


def test_a_malformed_url_is_a_usage_error_with_the_password_masked() -> None:
    proc = saga_cli("list", "--store", f"postgresql://saga:{SECRET}@127.0.0.1/", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "postgresql://saga:***@127.0.0.1/" in proc.stderr
