"""A worker written with plain redis-py, importing nothing of sagactor: proof that the README's
wire protocol (``sagas/remote/protocol.py``) is enough to serve a flow's class-less services.

``python tests/plain_redis_worker.py REDIS_URL SERVICE[,SERVICE...] [--hold STEP=SECONDS]``

Every handler answers ``ok`` with ``{"handler", "worker", "payload"}``, except ``fail_*``
handlers, which answer ``rejected``. ``--hold STEP=SECONDS`` makes the first action of that
step take that long (a slow remote call). It keeps the protocol's rules: definitive replies in
the service's inbox hash (a redelivered command is answered from there without running the
handler), a compensation's tombstone for its action's key, and the inbox entry, the reply and
the acknowledgement in one MULTI/EXEC. Each handler run is appended to the list
``plain-worker:runs`` as ``<service>:<handler>:<key>`` (what the tests count).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import redis

GROUP = "sagactor:workers"


def main(argv: list[str]) -> None:
    url, services = argv[0], argv[1].split(",")
    holds: dict[str, float] = {}
    if len(argv) > 3 and argv[2] == "--hold":
        step, _, seconds = argv[3].partition("=")
        holds[step] = float(seconds)
    client = redis.Redis.from_url(url)
    streams = {f"sagactor:commands:{service}": ">" for service in services}
    for stream in streams:
        try:
            client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    me = f"{socket.gethostname()}:{os.getpid()}"
    print(f"plain worker {me} serving {', '.join(services)}", flush=True)
    held: set[str] = set()
    while True:
        for stream, entries in client.xreadgroup(GROUP, me, streams, count=50, block=500) or []:
            for entry_id, fields in entries:
                handle(client, stream.decode(), entry_id, fields, me, holds, held)


def handle(client: redis.Redis, stream: str, entry_id: bytes, fields: dict, me: str,
           holds: dict[str, float], held: set[str]) -> None:
    command = json.loads(fields[b"body"])
    service = stream.rsplit(":", 1)[1]
    inbox = f"sagactor:inbox:{service}"
    reply = {name: command.get(name) for name in
             ("command_id", "key", "saga_id", "step", "phase", "attempt", "service")}
    reply.update(protocol=1, result=None, reason=None, replayed=False, worker=me)
    pipe = client.pipeline(transaction=True)
    if command.get("protocol") != 1:
        reply.update(outcome="error", reason=f"unknown protocol {command.get('protocol')!r}")
    elif (stored := client.hget(inbox, command["key"])) is not None:
        reply.update(json.loads(stored), replayed=True)
    else:
        step, handler = command["step"], command["handler"]
        if step in holds and command["phase"] == "action" and step not in held:
            held.add(step)
            time.sleep(holds[step])
        client.rpush("plain-worker:runs", f"{service}:{handler}:{command['key']}")
        if handler.startswith("fail_"):
            reply.update(outcome="rejected", reason=f"{handler} says no")
        else:
            reply.update(outcome="ok", result={"handler": handler, "worker": me,
                                               "payload": command["payload"]})
        definitive = {"outcome": reply["outcome"], "result": reply["result"],
                      "reason": reply["reason"]}
        now = time.time()
        pipe.hset(inbox, command["key"], json.dumps(definitive))
        pipe.zadd(f"sagactor:inbox-times:{service}", {command["key"]: now})  # its retention
        if command["phase"] == "compensation":  # a late action is answered rejected
            action_key = command["key"].removesuffix(":compensation")
            pipe.hsetnx(inbox, action_key, json.dumps(
                {"outcome": "rejected", "result": None, "reason": "compensated before it ran"}))
            pipe.zadd(f"sagactor:inbox-times:{service}", {action_key: now}, nx=True)
    pipe.xadd(command["reply_to"], {"body": json.dumps(reply)})
    pipe.xack(stream, GROUP, entry_id)
    pipe.execute()


if __name__ == "__main__":
    main(sys.argv[1:])
