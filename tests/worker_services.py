"""A service for the worker's tests, and a way to run a worker with test settings.

:class:`Probe` does what its command's payload says, and first leaves a line in the file
``payload["log"]`` (``<pid> <key> <phase>``), so a test counts the runs of a handler across
processes: ``sleep`` seconds, ``hold_first`` (block for an hour on the first run of its key:
a worker stuck in it, to be killed), ``exit`` (``os._exit(1)``: a poison command),
``reject`` (a business no) or ``fail`` (an error).

``python -m tests.worker_services FLOW --broker URL [--max-deliveries N] [--claim-idle S]
[--name NAME]`` (in the checkout) runs a worker as ``saga worker`` does (its ready line,
a graceful SIGTERM), with the settings the command does not offer.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from actors import Rejected, Service, handles

PROBE_FLOW = """\
saga: probe_flow
services:
  probe: {class: tests.worker_services:Probe, instances: 2}
  other: tests.worker_services:Probe
steps:
  - {name: first, service: probe, action: act, compensation: undo}
  - {name: second, service: other, action: act, compensation: undo}
"""


REPLIES = "sagactor:replies:7"


def command(key: str, log: Path, *, service: str = "probe", attempt: int = 1,
            protocol: int = 1, **payload: Any) -> dict[str, Any]:
    """A command of the wire protocol to ``service`` (a compensation if ``key`` ends with
    ``:compensation``), its payload telling :class:`Probe` what to do; replies go to
    :data:`REPLIES`."""
    saga_id, step, *rest = key.split(":")
    phase = "compensation" if rest else "action"
    return {"protocol": protocol, "command_id": f"{key}#{attempt}", "key": key,
            "saga_id": saga_id, "step": step, "phase": phase, "attempt": attempt,
            "service": service, "handler": "undo" if rest else "act",
            "payload": {"log": str(log), **payload}, "result": None, "reply_to": REPLIES,
            "deadline": None, "traceparent": None, "tracestate": None}


def send(client: Any, message: dict[str, Any], service: str = "probe") -> str:
    """XADD ``message`` to ``service``'s command stream, as an orchestrator does."""
    return client.xadd(f"sagactor:commands:{service}",
                       {"body": json.dumps(message)})


def poison(client: Any, message: dict[str, Any], deliveries: int,
           service: str = "probe") -> str:
    """XADD ``message`` and make it look delivered ``deliveries`` times already (to a consumer
    ``ghost`` that never answers, as if that many workers had died running it): the next
    worker to claim it dead-letters it if that is more than its ``max_deliveries``. Call it
    while no other command of the stream is undelivered. The command entry's id."""
    stream = f"sagactor:commands:{service}"
    group = "sagactor:workers"
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception as exc:  # the group is there already
        if "BUSYGROUP" not in str(exc):
            raise
    entry = send(client, message, service)
    client.xreadgroup(group, "ghost", {stream: ">"}, count=1)
    client.xclaim(stream, group, "ghost", 0, [entry], retrycount=deliveries)
    return entry


def replies(client: Any) -> list[dict[str, Any]]:
    """The replies on :data:`REPLIES`, oldest first."""
    return [json.loads(fields["body"]) for _, fields in client.xrange(REPLIES)]


def runs(log: Path) -> list[list[str]]:
    """The runs ``log`` records: ``[pid, key, phase]`` each."""
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


class Probe(Service):
    @handles("act")
    def act(self, command: Any) -> dict[str, Any]:
        return self._run(command)

    @handles("undo")
    def undo(self, command: Any) -> dict[str, Any]:
        return self._run(command)

    def _run(self, command: Any) -> dict[str, Any]:
        payload = command.payload
        log = Path(payload["log"])
        before = runs(log)
        with log.open("a") as out:
            out.write(f"{os.getpid()} {command.key} {command.phase}\n")
        if payload.get("exit"):
            os._exit(1)
        if payload.get("hold_first") and not any(run[1] == command.key for run in before):
            time.sleep(3600)
        time.sleep(payload.get("sleep", 0))
        if payload.get("reject"):
            raise Rejected(payload["reject"])
        if payload.get("fail"):
            raise RuntimeError(payload["fail"])
        return {"pid": os.getpid(), "key": command.key}


def main(argv: list[str]) -> None:
    import argparse

    from sagas.commands.worker import load_worker_flows, run_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("flows", nargs="+")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--services", default=None)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--claim-idle", type=float, default=2.0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    run_worker(load_worker_flows(args.flows), args.broker,
               lambda line: print(line, file=sys.stderr, flush=True), services=args.services,
               name=args.name, max_deliveries=args.max_deliveries, claim_idle=args.claim_idle)
    sys.exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
