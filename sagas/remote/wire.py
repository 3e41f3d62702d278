"""Round trips to the broker for the hot paths: many commands packed at once and sent over one
connection, their answers read back in order.

redis-py's pipelines spend most of their time per command in Python (building each command,
encoding each argument, looking up a callback for each answer): ≈ 8 µs of CPU per ``XADD``
here, against ≈ 1.6 µs when the whole batch is packed by hiredis' ``pack_command`` (C) and
the answers are taken as hiredis parses them (measured: ``BENCHMARKS.md``, S12). The
orchestrator's commands and acknowledgements, its reads of replies and a worker's reads and
answers go through :func:`round_trip` and :func:`read_group`; everything else uses redis-py
as usual. Without hiredis (it comes with the ``redis`` extra), redis-py packs the commands.

Errors are redis-py's: a connection that fails mid-way is closed (no answer is left unread on
it for the next user) and the error raised; a command the server refuses raises its
``ResponseError`` once every answer of the batch has been read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["read_group", "round_trip"]

try:
    from hiredis import pack_command as _pack_one
except ImportError:  # redis-py's own packer
    _pack_one = None


def _response_error() -> type[Exception]:
    from redis.exceptions import ResponseError

    return ResponseError


def _packed(connection: Any, commands: Sequence[Sequence[Any]]) -> list[bytes]:
    if _pack_one is None:
        return list(connection.pack_commands(commands))
    return [b"".join([_pack_one(tuple(command)) for command in commands])]


def round_trip(client: Any, commands: Sequence[Sequence[Any]], *,
               transaction: bool = False) -> list[Any]:
    """Send ``commands`` (each a sequence of ``str``/``bytes``/``int``/``float`` arguments, the
    command's name first) in one write and return their answers, in order; with
    ``transaction`` inside ``MULTI``/``EXEC`` (the answers are ``EXEC``'s)."""
    if not commands:
        return []
    if transaction:
        commands = [("MULTI",), *commands, ("EXEC",)]
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command(_packed(connection, commands))  # its health check, too
        answers = []
        failure: BaseException | None = None
        for _ in commands:
            try:
                answers.append(connection.read_response())
            except _response_error() as exc:  # the command's own error: read the rest
                answers.append(exc)
                failure = failure or exc
    except BaseException:
        connection.disconnect()  # answers may be left unread on it
        raise
    finally:
        pool.release(connection)
    if transaction:
        answers = answers[-1] if failure is None else answers
        if failure is None and isinstance(answers, list):
            failure = next((a for a in answers if isinstance(a, Exception)), None)
    if failure is not None:
        raise failure
    return answers


def read_group(client: Any, group: str, consumer: str, streams: Sequence[str], *, count: int,
               block_ms: int | None = None) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``XREADGROUP`` of new entries (``>``) of ``streams``: ``(stream, [(entry id, fields as
    a dict)])`` for the streams that had some (``None`` fields, which a server sends for an
    entry deleted after it was read, are passed on as ``None``)."""
    command: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    if block_ms is not None:
        command += ["BLOCK", block_ms]
    command += ["STREAMS", *streams, *[">"] * len(streams)]
    found = round_trip(client, [command])[0]
    if not found:
        return []
    if isinstance(found, dict):  # RESP3: a map of stream -> entries
        found = list(found.items())
    return [(stream, [(entry_id, _pairs(fields)) for entry_id, fields in entries])
            for stream, entries in found]


def _pairs(fields: Any) -> dict[str, Any] | None:
    if fields is None or isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))
