"""``saga ui``: the web console (:mod:`sagas.web`) over a saga store, until Ctrl-C or SIGTERM.

The console reads the store and writes cancel and retry requests to it, as ``saga cancel``
from another shell does; it never drives a saga. It listens on 127.0.0.1:8080 by default; any
address that is not this machine's loopback needs a token (``SAGA_UI_TOKEN``, or a file:
never the command line, which ``ps`` shows), and every request then carries it. Starlette and
uvicorn come with the ``web`` extra (``pip install 'sagactor[web]'``).

:func:`serve_ui` is the command; :func:`start_ui` runs the console in a thread of a process
that does something else too (``saga serve --http``), until its :meth:`ConsoleServer.stop`;
:func:`listen_ui` does what can refuse before that process starts anything (the address, the
token, the extra, the socket), and :func:`start_ui` then serves on its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from ..errors import InputError
from ..stores import SagaStore, open_store
from .interrupts import signals_recorded

__all__ = ["DEFAULT_HTTP", "TOKEN_ENV", "ConsoleServer", "Listening", "listen_ui", "parse_http",
           "read_token", "serve_ui", "start_ui"]

DEFAULT_HTTP = "127.0.0.1:8080"
TOKEN_ENV = "SAGA_UI_TOKEN"
MIN_TOKEN = 16
TOKEN_CHARS = re.compile(rf"[A-Za-z0-9._~+/=-]{{{MIN_TOKEN},4096}}")
INSTALL = "the web console needs Starlette and uvicorn: pip install 'sagactor[web]'"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
TICK = 0.05


def parse_http(http: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0: any free one) as ``(host, port)``;
    ``InputError`` if malformed."""
    text = http.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise InputError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8080), not {http[:80]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InputError(f"--http: write an IPv6 address in brackets, [{host}]:{port}")
    return host, int(port)


def read_token(token_file: str | None = None,
               environ: Mapping[str, str] | None = None) -> str | None:
    """The console's token: the first line of ``token_file`` if given, else the
    ``SAGA_UI_TOKEN`` environment variable, else ``None``. ``InputError`` for a file that
    cannot be read or is empty."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--token-file {token_file}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
        if not token:
            raise InputError(f"--token-file {token_file}: the file is empty")
        return token
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return token or None


def _check_token(token: str | None, host: str, command: str) -> None:
    from ..web.security import is_loopback

    if token is None:
        if not is_loopback(host):
            raise InputError(f"{command} on {host} (not this machine's loopback) needs a token: "
                             f"set {TOKEN_ENV} or give --token-file FILE")
        return
    if not TOKEN_CHARS.fullmatch(token):
        raise InputError(f"the console's token must be at least {MIN_TOKEN} characters of "
                         "A-Z a-z 0-9 . _ ~ + / = - (e.g. from `openssl rand -hex 24`)")


def _web() -> tuple[Any, Any, Any, type]:
    """The console's modules, uvicorn, and uvicorn's server leaving signals to us."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise InputError(INSTALL) from None
    from ..web import app, security

    class Server(uvicorn.Server):  # type: ignore[misc]
        """uvicorn's server, run in a thread: signals are :func:`serve_ui`'s."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return app, security, uvicorn, Server


def _listen(host: str, port: int, command: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = "the address is in use" if exc.errno == errno.EADDRINUSE else \
            (exc.strerror or str(exc))
        raise InputError(f"{command} cannot listen on {_hostport(host, port)}: {why}") from None
    return sock


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConsoleServer:
    """The console serving in a thread of its own: its :attr:`url`, and :meth:`stop`."""

    def __init__(self, server: Any, sock: socket.socket, store: SagaStore | None,
                 url: str) -> None:
        self._server = server
        self._sock = sock
        self._store = store
        self.url = url
        self._failed: BaseException | None = None
        self._stopping = False
        # on_ended(error or None): told if it stops serving without being asked to (stop())
        self.on_ended: Callable[[BaseException | None], None] | None = None
        self._thread = threading.Thread(target=self._run, name="saga-ui", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start() or alive()
            self._failed = exc
        if not self._stopping and self._server.started and self.on_ended is not None:
            self.on_ended(self._failed)

    def _start(self) -> None:
        self._thread.start()
        give_up = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > give_up:
                self.stop()
                raise InputError(f"saga ui did not start on {self.url}: "
                                 f"{self._failed or 'it took too long'}")
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        """Whether it still serves."""
        return self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """What ended the serving thread, if it ended by an error."""
        return self._failed

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving (requests under way get ``timeout`` seconds to finish) and close
        the store if it opened it. Calling it twice is fine."""
        self._stopping = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._store is not None:
            self._store.close()


class Listening(NamedTuple):
    """A console's address checked and bound (:func:`listen_ui`), not serving yet."""

    host: str
    sock: socket.socket
    token: str | None

    def close(self) -> None:
        """Let the address go (when the console will not be started after all)."""
        with contextlib.suppress(OSError):
            self.sock.close()


def listen_ui(http: str = DEFAULT_HTTP, token: str | None = None, *,
              command: str = "saga ui") -> Listening:
    """Everything :func:`start_ui` checks before it opens the store: ``http`` parsed, a token
    where the address needs one (and well formed), the ``web`` extra importable, the socket
    bound; ``InputError`` (one line, naming ``command``) otherwise. For a process that must
    refuse before it starts anything else (``saga serve --http``)."""
    host, port = parse_http(http)
    _check_token(token, host, command)
    _web()
    return Listening(host, _listen(host, port, command), token)


def start_ui(store: str | SagaStore, http: str | Listening = DEFAULT_HTTP, *,
             token: str | None = None, broker_url: str | None = None,
             allowed_hosts: Iterable[str] = ()) -> ConsoleServer:
    """Serve the console over the store at ``store`` (a URL of a store which must exist, or
    an open store, which the caller closes after :meth:`ConsoleServer.stop`) on ``http``
    (``HOST:PORT``, or the socket :func:`listen_ui` bound, with its token) in a thread;
    returns once it listens.

    ``InputError`` (one line): a malformed ``http``, a non-loopback address without a
    ``token`` or a token too short, the address in use, the ``web`` extra missing;
    ``StoreMissing`` / ``StoreUnavailable`` when the store cannot be used. ``allowed_hosts``:
    more names the page may be reached by (``Host`` headers), e.g. the host's DNS name."""
    listening = http if isinstance(http, Listening) else None
    if listening is not None:
        token = listening.token
    else:
        host, port = parse_http(str(http))
        _check_token(token, host, "saga ui")
    app, security, uvicorn, server_class = _web()
    try:
        opened = open_store(store, create=False) if isinstance(store, str) else None
    except BaseException:
        if listening is not None:
            listening.close()
        raise
    try:
        if listening is None:
            listening = Listening(host, _listen(host, port, "saga ui"), token)
        host, sock = listening.host, listening.sock
        bound_port = sock.getsockname()[1]
        guard = security.Guard(security.allowed_hosts(host, bound_port, allowed_hosts), token)
        config = uvicorn.Config(app.create_app(opened or store, guard, broker_url=broker_url),
                                log_config=None, log_level="warning", access_log=False,
                                lifespan="off",
                                server_header=False, date_header=False, proxy_headers=False,
                                timeout_graceful_shutdown=int(STOP_TIMEOUT))
        shown = "localhost" if host in ("127.0.0.1", "localhost") else host
        console = ConsoleServer(server_class(config), sock, opened,
                                f"http://{_hostport(shown, bound_port)}/")
    except BaseException:
        if listening is not None:
            listening.close()
        if opened is not None:
            opened.close()
        raise
    console._start()
    return console


def serve_ui(store_url: str, http: str = DEFAULT_HTTP, token: str | None = None,
             on_ready: Callable[[str], None] | None = None, broker_url: str | None = None,
             *, allowed_hosts: Iterable[str] = ()) -> None:
    """``saga ui``: serve the console (:func:`start_ui`) until SIGINT or SIGTERM, then stop
    and return (exit 0). ``on_ready(url)`` is called once it listens (``http://localhost:
    PORT/`` for a loopback address, the real port when ``http`` asked for port 0)."""
    in_main = threading.current_thread() is threading.main_thread()
    with signals_recorded() if in_main else contextlib.nullcontext([]) as stopped:
        console = start_ui(store_url, http, token=token, broker_url=broker_url,
                           allowed_hosts=allowed_hosts)
        try:
            if on_ready is not None:
                on_ready(console.url)
            while not stopped and console.alive:
                time.sleep(TICK)
        finally:
            console.stop()
        if not stopped:
            raise RuntimeError(f"the console stopped by itself: {console.failure}")
