"""`saga ui --http` and `saga serve --http` refuse an address off loopback without a token in
one line, exit 2, before anything starts (issue 18, point 4: the token comes from
SAGA_UI_TOKEN or --token-file, never argv). Nothing is served, so no web extra is needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import one_clear_line, saga_cli

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "flows" / "order_inventory.yaml")


def _environ(**more: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}, **more}


@pytest.mark.parametrize("command", [["ui"], ["serve", FLOW]], ids=["ui", "serve"])
def test_an_address_off_loopback_without_a_token_is_refused_in_one_line(command, tmp_path):
    store = tmp_path / "sagas.db"
    refused = saga_cli(*command, "--store", f"sqlite:///{store}", "--http", "0.0.0.0:8080",
                       env=_environ())
    assert refused.returncode == 2
    line = one_clear_line(refused.stderr)
    assert "0.0.0.0" in line and "needs a token" in line
    assert "SAGA_UI_TOKEN" in line and "--token-file" in line
    assert refused.stdout == ""
    assert not store.exists()  # saga serve started nothing: no store made, no saga driven


@pytest.mark.parametrize("command", [["ui"], ["serve", FLOW]], ids=["ui", "serve"])
def test_a_token_too_short_or_a_bad_address_is_refused_in_one_line(command, tmp_path):
    store = f"sqlite:///{tmp_path / 'sagas.db'}"
    short = saga_cli(*command, "--store", store, "--http", "0.0.0.0:8080",
                     env=_environ(SAGA_UI_TOKEN="short"))
    assert short.returncode == 2 and "at least 16" in one_clear_line(short.stderr)
    (tmp_path / "empty").write_text("")
    empty = saga_cli(*command, "--store", store, "--http", "0.0.0.0:8080", "--token-file",
                     str(tmp_path / "empty"), env=_environ())
    assert empty.returncode == 2 and "is empty" in one_clear_line(empty.stderr)
    bad = saga_cli(*command, "--store", store, "--http", "8080", env=_environ())
    assert bad.returncode == 2 and "HOST:PORT" in one_clear_line(bad.stderr)
    assert not (tmp_path / "sagas.db").exists()


def test_saga_serve_refuses_an_address_in_use_before_it_starts_anything(tmp_path):
    pytest.importorskip("starlette", reason="the web extra")
    import socket

    store = tmp_path / "sagas.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = saga_cli("serve", FLOW, "--store", f"sqlite:///{store}", "--http",
                           f"127.0.0.1:{port}", env=_environ())
    assert refused.returncode == 2
    assert "in use" in one_clear_line(refused.stderr)
    assert not store.exists()
