"""The connection to the broker (redis-server) that orchestrators and workers share.

One place opens a redis-py client from a URL (``redis://[[user]:password@]host[:port][/db]``,
``rediss://`` for TLS, ``unix:///path.sock?db=N``), shows the URL with its password masked
(``redis://:***@host:6379/0``, never the password, in errors and logs), and turns what can go
wrong into this package's errors::

    SagactorError
    └── BrokerError              anything the broker cannot do
        ├── BadBrokerUrl         not a Redis URL (a usage error)
        └── BrokerUnavailable    the broker cannot be used: unreachable, refusing the
                                 password, or redis-py missing (``pip install 'sagactor[redis]'``)

Clients answer ``str`` (``decode_responses=True``): stream names, entry ids and the JSON
``body`` of every entry are text. redis-py's own retries are off: a caller that outlives a
redis-server restart (a worker) retries with its own backoff and says so, once, and a caller
that must not wait (a command starting) fails at once; :func:`is_transient` tells the errors
of a restart or a failover from the others.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from ..errors import SagactorError
from ..stores import display_url

__all__ = [
    "SCHEMES",
    "BadBrokerUrl",
    "BrokerError",
    "BrokerUnavailable",
    "connect",
    "ensure_group",
    "is_transient",
    "masked_url",
    "transient_errors",
    "unavailable_as_one_line",
]

SCHEMES = ("redis", "rediss", "unix")
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection: an unreachable host fails a command's start after this."""
SOCKET_TIMEOUT = 15.0
"""Seconds a reply may take (longer than any ``BLOCK`` a caller asks for)."""
INSTALL = "pip install 'sagactor[redis]'"


class BrokerError(SagactorError):
    """Anything the broker cannot do."""


class BadBrokerUrl(BrokerError):
    """A broker URL that is not a Redis URL."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be used: unreachable, refusing us, or no redis-py here."""


def masked_url(url: str) -> str:
    """``url`` fit to show: its password replaced by ``***``."""
    return display_url(url)


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise BrokerUnavailable(f"the Redis broker needs redis-py: {INSTALL}") from None
    return redis


@functools.cache
def transient_errors() -> tuple[type[BaseException], ...]:
    """The errors of a broker that is restarting, failing over or out of reach for a while."""
    redis = _redis()
    exceptions = redis.exceptions
    return (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ReadOnlyError,
            exceptions.MasterDownError, exceptions.TryAgainError, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :func:`transient_errors`, or the reply of a server still
    loading its data after a restart (``LOADING``)."""
    return isinstance(exc, transient_errors()) or str(exc).startswith("LOADING")


def connect(url: str, *, check: bool = True) -> Any:
    """A redis-py client for ``url`` (answering ``str``; its own retries off), checked with a
    ``PING`` unless ``check`` is false.

    Raises :class:`BadBrokerUrl` for a URL that is not a Redis one and
    :class:`BrokerUnavailable` (one line: the masked URL and why) when redis-py is missing or
    the server cannot be reached or refuses us.
    """
    if not isinstance(url, str):
        raise BadBrokerUrl(f"a broker URL must be a string, got {type(url).__name__}")
    shown = masked_url(url)
    scheme = url.partition("://")[0].lower()
    if "://" not in url or scheme not in SCHEMES:
        raise BadBrokerUrl(f"broker {shown} is not a Redis URL: use "
                           "redis://[:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS)")
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT, socket_keepalive=True, health_check_interval=10,
            retry=Retry(NoBackoff(), 0))
    except ValueError as exc:  # redis-py's own checks of the URL (a port that is no number)
        raise BadBrokerUrl(f"broker {shown}: {_scrub(exc, url)}") from None
    if check:
        with unavailable_as_one_line(shown, url):
            client.ping()
    return client


@contextlib.contextmanager
def unavailable_as_one_line(shown: str, url: str = "") -> Iterator[None]:
    """Turn a redis-py error raised in the block into :class:`BrokerUnavailable`: ``broker
    <shown> cannot be used: <why>`` (the password never in it)."""
    redis = _redis()
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"broker {shown} cannot be used: {_scrub(exc, url)}") from None
    except OSError as exc:
        raise BrokerUnavailable(f"broker {shown} cannot be used: {_scrub(exc, url)}") from None


def ensure_group(client: Any, stream: str, group: str) -> None:
    """Create consumer group ``group`` of ``stream`` reading from its start (``XGROUP CREATE
    stream group 0 MKSTREAM``: the stream too, if missing); a group that exists is left."""
    redis = _redis()
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _scrub(exc: BaseException, url: str) -> str:
    """``exc`` as one line, with the password of ``url`` (should redis-py quote it) masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if url and url != masked_url(url):
        text = text.replace(url, masked_url(url))
        secret = _password(url)
        if secret:
            text = text.replace(secret, "***")
    return text


def _password(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        return unquote(parts.password or "")
    except ValueError:
        return ""
