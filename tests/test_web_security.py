"""Who may use the web console (``saga ui``), and how it keeps other web pages out: the Host
check (DNS rebinding), the token (required off loopback, never from argv), the CSRF check of
every POST, the security headers, and no secret of a store or broker URL in what it shows.
Each on a real socket, as ``saga ui`` serves."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas.commands.ui import parse_http, read_token, serve_ui, start_ui
from sagas.errors import InputError, StoreMissing
from sagas.stores import open_store

if not os.environ.get("CI"):
    pytest.importorskip("starlette", reason="the web console needs the web extra")
    pytest.importorskip("uvicorn", reason="the web console needs the web extra")

from sagas.web.security import allowed_hosts, is_loopback
from tests.browser.console_data import Client

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "t0ken+for/the=console_tests.0123456789~"  # base64 and hex characters too


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/sagas.db"
    open_store(url).close()  # an empty store
    return url


@contextlib.contextmanager
def serving(url: str, **options: Any) -> Iterator[Client]:
    console = start_ui(url, options.pop("http", "127.0.0.1:0"), **options)
    try:
        yield Client(console.url, options.get("token"))
    finally:
        console.stop()


# -- Host: DNS rebinding ----------------------------------------------------------------------
def test_a_host_header_that_is_not_the_consoles_address_is_refused(store_url):
    with serving(store_url) as client:
        port = client.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}",
                     f"LOCALHOST:{port}"):
            assert client.get("/api/sagas", {"Host": host}).status_code == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}",
                     f"127.0.0.1.evil.example:{port}", "localhost"):
            refused = client.get("/api/sagas", {"Host": host})
            assert refused.status_code == 400, host
            assert "not this console's address" in refused.json()["error"]
        assert client.get("/", {"Host": f"rebound.example:{port}"}).status_code == 400


def test_the_names_a_console_answers_to():
    assert allowed_hosts("127.0.0.1", 8080) == {"127.0.0.1:8080", "localhost:8080",
                                                "[::1]:8080"}
    assert "10.1.2.3:9000" in allowed_hosts("10.1.2.3", 9000)
    assert allowed_hosts("0.0.0.0", 9000) is None  # unknown names: the token guards it
    named = allowed_hosts("0.0.0.0", 9000, ["console.internal", "other:8443"])
    assert {"console.internal:9000", "other:8443", "localhost:9000"} <= named
    assert "console.internal" not in named
    assert "ops.example" in allowed_hosts("127.0.0.1", 80, ["ops.example"])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost") and is_loopback("127.8.9.10")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("localhost.evil.example")


# -- CSRF -------------------------------------------------------------------------------------
def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(store_url):
    with serving(store_url) as client:
        path = "/api/sagas/cancel"
        body = {"filter": {}, "dry_run": True}
        assert client.post(path, body).status_code == 200
        missing = client.post(path, body, csrf=False)
        assert missing.status_code == 403 and "CSRF" in missing.json()["error"]
        wrong = client.post(path, body, {"X-CSRF-Token": "guessed"})
        assert wrong.status_code == 403
        other = client.post(path, body, {"Origin": "http://evil.example"})
        assert other.status_code == 403 and "another origin" in other.json()["error"]
        site = client.post(path, body, {"Sec-Fetch-Site": "cross-site"})
        assert site.status_code == 403 and "another site" in site.json()["error"]
        no_origin = client.request("POST", path, b"{}", {"X-CSRF-Token": client.csrf})
        assert no_origin.status_code == 400  # curl: past the checks, and the body lacks sagas
        assert client.get("/api/sagas/x/cancel").status_code == 405  # changes are POSTs
        assert client.request("DELETE", "/api/sagas/x/cancel").status_code == 403
        big = client.request("POST", path, b"{" + b" " * (1 << 20) + b"}",
                              {"X-CSRF-Token": client.csrf, "Content-Type": "application/json"})
        assert big.status_code == 413


def test_the_csrf_token_is_in_the_page_and_differs_per_process(store_url):
    with serving(store_url) as first, serving(store_url) as second:
        page = first.get("/").text
        assert f'<meta name="csrf-token" content="{first.csrf}">' in page
        assert first.csrf != second.csrf and len(first.csrf) >= 40


# -- the token --------------------------------------------------------------------------------
def test_off_loopback_the_console_refuses_to_start_without_a_token(store_url):
    for http in ("0.0.0.0:0", "[::]:0", "10.255.255.1:0"):
        with pytest.raises(InputError) as refused:
            start_ui(store_url, http)
        message = str(refused.value)
        assert "needs a token" in message and "SAGA_UI_TOKEN" in message
        assert "--token-file" in message and "\n" not in message
    with pytest.raises(InputError, match="at least 16"):
        start_ui(store_url, "0.0.0.0:0", token="short")
    with pytest.raises(InputError, match="at least 16"):
        start_ui(store_url, "127.0.0.1:0", token="has a space in it, sadly")


def test_with_a_token_every_request_needs_it_but_the_assets_and_login(store_url):
    with serving(store_url, token=TOKEN) as client:
        assert client.get("/api/sagas").status_code == 200  # Bearer
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Cookie": "saga_ui_token=no"}):
            refused = client.get("/api/sagas", headers, authorized=False)
            assert refused.status_code == 401, headers
            assert "token" in refused.json()["error"]
        assert client.post("/api/sagas/cancel", {"filter": {}}, authorized=False
                           ).status_code == 401
        page = client.get("/", authorized=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert client.get("/static/console.js", authorized=False).status_code == 200
        login = client.get("/login", authorized=False)
        assert login.status_code == 200 and 'type="password"' in login.text
        assert TOKEN not in login.text


def test_logging_in_sets_a_strict_http_only_cookie(store_url):
    with serving(store_url, token=TOKEN) as client:
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": client.origin}

        def log_in(token: str, csrf: str, next_path: str = "/") -> Any:
            body = urllib.parse.urlencode({"token": token, "csrf": csrf, "next": next_path}
                                          ).encode()
            return client.request("POST", "/login", body, form, authorized=False)

        wrong = log_in("not-the-token-at-all", client.csrf)
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        stale = log_in(TOKEN, "an-old-form")
        assert stale.status_code == 403
        done = log_in(TOKEN, client.csrf, "//evil.example/")
        assert done.status_code == 303 and done.headers["location"] == "/"  # never elsewhere
        cookie = done.headers["set-cookie"]
        value = cookie.split(";", 1)[0]
        assert value.startswith("saga_ui_token=") and TOKEN.split("+")[0] in value
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.get("/", {"Cookie": value}, authorized=False).status_code == 200
        cross = client.request("POST", "/login", b"token=x", {**form,
                               "Origin": "http://evil.example"}, authorized=False)
        assert cross.status_code == 403


def test_the_token_comes_from_a_file_or_the_environment_never_argv(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\nsecond line ignored\n")
    assert read_token(str(path), environ={}) == TOKEN
    assert read_token(None, environ={"SAGA_UI_TOKEN": f"  {TOKEN} "}) == TOKEN
    assert read_token(None, environ={}) is None
    assert read_token(str(path), environ={"SAGA_UI_TOKEN": "other"}) == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_token(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="--token-file"):
        read_token(str(tmp_path / "missing"))


# -- what is shown ----------------------------------------------------------------------------
def test_every_answer_has_the_security_headers(store_url):
    with serving(store_url) as client:
        for path in ("/", "/api/sagas", "/static/console.css", "/api/nope"):
            headers = client.get(path).headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert "server" not in headers


def test_no_password_of_the_broker_url_is_shown(store_url):
    secret = "br0ker-s3cret"
    with serving(store_url, broker_url=f"redis://:{secret}@127.0.0.1:1/0") as client:
        info = client.get("/api/info")
        assert secret not in info.text and "***" in info.json()["broker"]
        letters = client.get("/api/dead-letters")  # nothing listens on port 1
        assert letters.status_code == 503 and "cannot be used" in letters.json()["error"]
        assert secret not in letters.text
        page = client.get("/").text + client.get("/static/console.js").text
        assert secret not in page


def test_parse_http():
    assert parse_http("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http("[::1]:0") == ("::1", 0)
    assert parse_http("localhost:9") == ("localhost", 9)
    for bad in ("8080", "host:", ":8080", "::1:8080", "h:99999", "h:http"):
        with pytest.raises(InputError, match="--http"):
            parse_http(bad)


def test_a_store_that_is_missing_is_not_created(tmp_path):
    with pytest.raises(StoreMissing):
        start_ui(f"sqlite:///{tmp_path}/nothing-here.db", "127.0.0.1:0")
    assert not (tmp_path / "nothing-here.db").exists()


def test_an_address_in_use_is_one_line(store_url):
    with serving(store_url) as client, pytest.raises(InputError) as refused:
        start_ui(store_url, f"127.0.0.1:{client.port}")
    assert "in use" in str(refused.value) and "\n" not in str(refused.value)


def test_serve_ui_serves_until_sigterm_then_returns(store_url):
    script = ("import sys; from sagas.commands.ui import serve_ui; "
              "serve_ui(sys.argv[1], '127.0.0.1:0', on_ready=lambda url: print(url, flush=True))")
    child = subprocess.Popen([sys.executable, "-c", script, store_url], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("http://localhost:") and url.endswith("/")
        curl = url.replace("localhost", "127.0.0.1")  # as curl 127.0.0.1:PORT/... asks
        with urllib.request.urlopen(curl + "api/sagas?status=compensated", timeout=10) as got:
            assert got.status == 200 and got.read() == b"[]"
        child.send_signal(signal.SIGTERM)
        assert child.wait(15) == 0, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_serve_ui_off_loopback_without_a_token_refuses_before_listening(store_url):
    with pytest.raises(InputError, match="needs a token"):
        serve_ui(store_url, "0.0.0.0:8080")
