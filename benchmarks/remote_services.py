"""S12 (issue 17): S3's workload with every service remote — the four services in two worker
processes reached over Redis Streams — orchestrated on SQLite (one orchestrator process) and on
PostgreSQL (two member processes).

The scenario's process (``python -m benchmarks.child S12``) is the *coordinator*. For the
PostgreSQL variant it starts a private durable server (:mod:`benchmarks.pg_server`) and gives
it a history as S11 does (:func:`benchmarks.scale_out._prefill`: one member runs up to
:data:`PREFILL` sagas, its services in process, in a template database, then ``VACUUM
ANALYZE``). Then it runs rounds of two runs — SQLite, then PostgreSQL — and reports the median
run of each (3 rounds; one when given fewer than :data:`FEW` sagas, as ``--quick`` does). The
scenario's figure is the SQLite run's; the PostgreSQL run's is in the notes. Without
redis-server or redis-py the scenario is skipped (one line); without psycopg or PostgreSQL's
binaries only the PostgreSQL variant is, saying why; under ``CI=true`` either fails instead.

One run:

1. a new redis-server (:mod:`benchmarks.redis_server`: a free loopback port, a temporary
   directory, ``appendonly yes`` with ``appendfsync always`` — what a worker asks of its broker;
   ``S12_APPENDFSYNC=everysec`` to compare — and no RDB snapshots), stopped by its pid at the
   end of the run;
2. :data:`WORKERS` worker processes (``python -m benchmarks.remote_services worker``), each a
   :class:`sagas.remote.worker.Worker` hosting all four services of S3's flow with
   :data:`WORKER_CONCURRENCY` commands held at most (what ``saga worker FLOW --broker URL
   --concurrency N`` runs);
3. the orchestrators (``python -m benchmarks.remote_services orchestrator``): a
   :class:`sagas.Runtime` with ``broker=URL, remote="all"`` — on SQLite (``synchronous=normal``,
   S3's store) one process; on PostgreSQL (a copy of the template) two members, each waiting
   until the partitions are balanced and starting only sagas in partitions it holds (so the
   replies of its sagas come to the reply streams it reads); each warms up (one saga, then
   200) and says ready;
4. the coordinator reads the CPU time of the workers, redis-server and PostgreSQL (user +
   system from ``/proc``) and writes ``go``; each orchestrator runs its share of the batch
   exactly as S3 does (the 4-step flow, at most :data:`~benchmarks._common.CONCURRENCY` sagas
   in flight *per orchestrator*, ``Runtime.submit`` with ``on_end``), reading its own CPU
   time around it; once all have reported, the CPU times are read again;
5. checked: every saga completed; each service's handler ran exactly once per saga over the two
   workers (their counts), none rejected or compensated; on the broker, one command per saga
   per service, one inbox entry per saga per service, one reply per command, nothing pending
   in either consumer group, no dead letter; in the store, the sagas and their events (and,
   on PostgreSQL, no ``drive`` request and the run's events written by both members).

A run's figure is the sagas of the timed batches over the span from the first orchestrator's
start to the last one's end. CPU µs per saga: each orchestrator's over its own sagas, each
worker's, redis-server's and PostgreSQL's over all of them. The run also keeps the commands
redis-server ran during the batch (``CONFIG RESETSTAT`` at ``go``, ``INFO commandstats`` at the
end): calls per saga and redis-server's µs per call, by command.

Profiling: ``py-spy record --pid`` of an orchestrator or worker process while a run goes (their
pids are in ``ps``; ``--threads --idle`` shows what each thread waits for).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._common import (
    CONCURRENCY,
    FLOWS,
    WAIT_LIMIT,
    BenchmarkFailed,
    Result,
    expect,
    mean_in_flight,
    peak_rss_mib,
    sqlite_counts,
)
from .redis_server import FSYNC_POLICIES, BenchRedis, process_cpu_seconds
from .redis_server import binary as redis_binary
from .redis_server import unavailable as redis_unavailable
from .scale_out import (
    BALANCE_LIMIT,
    _await,
    _Base,
    _counts,
    _drive,
    _held_ids,
    _median,
    _Member,
    _say,
    _shares,
    _wait_balanced,
)

__all__ = ["FEW", "ROUNDS", "WORKERS", "WORKER_CONCURRENCY", "run_s12", "unavailable"]

ROUNDS = 3
"""Rounds of (SQLite, PostgreSQL), interleaved; the median run of each is reported."""

FEW = 5_000
"""Given fewer sagas than this (``--quick``), one round only."""

WORKERS = 2
"""Worker processes, each hosting the flow's four services."""

WORKER_CONCURRENCY = 100
"""Commands a worker holds at most (``saga worker --concurrency``): with two workers, room
for every command of S3's 200 sagas in flight."""

PG_MEMBERS = 2
"""Orchestrators (members) on PostgreSQL."""

PREFILL = 5_000
"""Sagas at most in the PostgreSQL template's history (S11's reason: plans on a store with
statistics)."""

WARM_UP = 200
"""Sagas each orchestrator runs before the timed batch (verified with the rest, not timed)."""

APPENDFSYNC_ENV = "S12_APPENDFSYNC"
"""The environment variable choosing redis-server's ``appendfsync`` (``always`` unless set:
what a worker asks of its broker; ``everysec`` or ``no`` to compare)."""

STEPS = ("first", "second", "third", "fourth")
FLOW_FILE = "bench_trivial.yaml"
PREFIX = "sagactor"  # the broker's stream prefix (sagas.remote.protocol.DEFAULT_PREFIX)


def unavailable() -> str | None:
    """What to install for S12 (one line), or ``None``: redis-server and redis-py. (Without
    psycopg or PostgreSQL's binaries only the PostgreSQL variant is left out, saying why.)"""
    return redis_unavailable()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def appendfsync() -> str:
    """redis-server's ``appendfsync`` for this run (:data:`APPENDFSYNC_ENV`)."""
    policy = os.environ.get(APPENDFSYNC_ENV, "always").strip().lower() or "always"
    if policy not in FSYNC_POLICIES:
        raise BenchmarkFailed(f"{APPENDFSYNC_ENV}={policy!r}: use one of "
                              f"{', '.join(FSYNC_POLICIES)}")
    return policy


# -- the worker process ----------------------------------------------------------------------------
def worker(broker: str, name: str, concurrency: int) -> None:
    """One worker process: serve, say ready, report the services' counts when asked, stop
    (finishing what it holds) when told."""
    from sagas.language.loader import load_flow
    from sagas.remote.worker import Worker

    from .services import counts

    flow = load_flow(FLOWS / FLOW_FILE)
    hosted = Worker(broker, [flow], concurrency=concurrency, name=name).start()
    try:
        _say("ready", pid=os.getpid(), services=list(hosted.services))
        _await("report")
        pools = hosted._pools  # the services' objects: their counts prove the handlers ran
        _say("counts", counts={s: counts(list(pools[s].instances)) for s in STEPS},
             answered=hosted.answered, held=hosted.held(), peak_rss_mib=round(peak_rss_mib(), 1))
        _await("stop")
    finally:
        hosted.stop(timeout=30)


# -- the orchestrator process ----------------------------------------------------------------------
def orchestrator(store: str, broker: str, members: int, sagas: int, prefix: str) -> None:
    """One orchestrator process: (on PostgreSQL, balance,) warm up, say ready, wait for ``go``,
    run the batch, report, wait for ``close``."""
    from sagas import Runtime

    with Runtime(store, broker=broker, remote="all") as runtime:
        flow = runtime.compile(FLOWS / FLOW_FILE).flow
        membership = runtime.membership
        held: list[int] = []
        pick: Callable[[str, int], list[str]]
        if membership is not None:
            held = _wait_balanced(runtime, members)
            pick = lambda p, n: _held_ids(membership, p, n)  # noqa: E731
        else:
            pick = lambda p, n: [f"{p}-{i}" for i in range(n)]  # noqa: E731
        warm = pick(f"{prefix}-warm", WARM_UP + 1)
        first = runtime.run(flow, {"n": 0}, warm[0], timeout=60)
        expect(f"warm-up saga {first.saga_id} status", first.status, "completed")
        warmed = _drive(runtime, flow, warm[1:])
        expect("warm-up statuses", dict(warmed.statuses), {"completed": WARM_UP})
        ids = pick(prefix, sagas)
        _say("ready", held=len(held), events_per_saga=len(first.history), pid=os.getpid())
        _await("go")
        batch = _drive(runtime, flow, ids)
        expect("statuses of the batch", dict(batch.statuses), {"completed": sagas})
        kept = membership is None or membership.held() == held
        _say("done", sagas=sagas, begin=batch.begin, end=batch.end, elapsed_s=batch.elapsed_s,
             cpu_s=batch.cpu_s, latencies_s=batch.latencies_s, max_in_flight=batch.max_in_flight,
             gc=batch.gc, kept_partitions=kept, peak_rss_mib=round(peak_rss_mib(), 1))
        _await("close")


# -- the coordinator -------------------------------------------------------------------------------
def _argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.remote_services", role, *args,
            "--gc", ",".join(str(x) for x in gc.get_threshold())]


def _start(argv: list[str], stderr_path: Path) -> _Member:
    with open(stderr_path, "wb") as stderr:
        return _Member(argv, stderr)


def _added(client: Any, stream: str) -> int:
    """Entries ever added to ``stream`` (``XINFO STREAM``'s ``entries-added``: the workers and
    orchestrators trim what they have acknowledged); 0 for no stream."""
    if not client.exists(stream):
        return 0
    return int(client.xinfo_stream(stream)["entries-added"])


def _broker_rows(redis: BenchRedis) -> dict[str, Any]:
    """What went through the broker: per service the commands added, those still pending,
    the inbox entries and the dead letters; over every reply stream the replies added and
    those not acknowledged."""
    client = redis.client()
    try:
        services = {}
        for name in STEPS:
            stream = f"{PREFIX}:commands:{name}"
            services[name] = {
                "commands": _added(client, stream),
                "pending": client.xpending(stream, f"{PREFIX}:workers")["pending"],
                "inbox": client.hlen(f"{PREFIX}:inbox:{name}"),
                "dead": _added(client, f"{PREFIX}:dead:{name}"),
            }
        replies = pending = streams = 0
        for stream in client.scan_iter(match=f"{PREFIX}:replies:*", count=1000):
            streams += 1
            replies += _added(client, stream)
            pending += client.xpending(stream, f"{PREFIX}:orchestrators")["pending"]
    finally:
        client.close()
    return {"services": services, "replies": replies, "replies_pending": pending,
            "reply_streams": streams}


def _stop_all(processes: list[_Member]) -> None:
    for p in processes:
        p.stop()


def _one_run(kind: str, sagas: int, label: str, workdir: Path, pg: Any = None,
             base: _Base | None = None) -> dict[str, Any]:
    """One run: a new redis-server, the workers, the orchestrators of ``kind`` (``sqlite``: one
    on a new SQLite file; ``postgres``: :data:`PG_MEMBERS` members on a copy of ``base``'s
    template in ``pg``); its figures."""
    binary = redis_binary()
    assert binary is not None
    members = 1 if kind == "sqlite" else PG_MEMBERS
    total = sagas + members * (WARM_UP + 1)
    dbname = f"s12_{label}"
    sqlite_path = workdir / f"{label}.db"
    if kind == "sqlite":
        store = f"sqlite:///{sqlite_path}?synchronous=normal"
    else:
        assert pg is not None and base is not None
        pg.create_database(dbname, template=base.template)
        store = pg.url(dbname)
    server = pg if kind == "postgres" else None  # whose CPU is counted
    workers: list[_Member] = []
    orchestrators: list[_Member] = []
    try:
        with BenchRedis(binary, appendfsync()) as redis:
            try:
                for i in range(WORKERS):
                    workers.append(_start(_argv("worker", "--broker", redis.url, "--name",
                                                f"{label}-w{i}", "--concurrency",
                                                str(WORKER_CONCURRENCY)),
                                          workdir / f"{label}-w{i}.stderr"))
                worker_pids = [w.expect("ready", 60)["pid"] for w in workers]
                for i, share in enumerate(_shares(sagas, members)):
                    orchestrators.append(_start(
                        _argv("orchestrator", "--store", store, "--broker", redis.url,
                              "--members", str(members), "--sagas", str(share),
                              "--prefix", f"{label}-o{i}"),
                        workdir / f"{label}-o{i}.stderr"))
                ready = [o.expect("ready", BALANCE_LIMIT + 120) for o in orchestrators]
                assert redis.pid is not None
                stats = redis.client()
                stats.config_resetstat()  # the commands counted from here: the batch's
                cpu_before = ([process_cpu_seconds(pid) for pid in worker_pids],
                              process_cpu_seconds(redis.pid), _pg_cpu(server))
                for o in orchestrators:
                    o.tell("go")
                done = [o.expect("done", WAIT_LIMIT) for o in orchestrators]
                commands = _command_stats(stats, sagas)
                stats.close()
                worker_cpu = [process_cpu_seconds(pid) - before
                              for pid, before in zip(worker_pids, cpu_before[0], strict=True)]
                redis_cpu = process_cpu_seconds(redis.pid) - cpu_before[1]
                pg_cpu = _pg_cpu(server) - cpu_before[2]
                for o in orchestrators:
                    o.tell("close")
                for o in orchestrators:
                    code = o.process.wait(60)
                    if code != 0:
                        raise BenchmarkFailed(f"orchestrator {o.process.pid} exited with "
                                              f"status {code}")
                reports = []
                for w in workers:
                    w.tell("report")
                    reports.append(w.expect("counts", 60))
                for w in workers:
                    w.tell("stop")
                for w in workers:
                    code = w.process.wait(60)
                    if code != 0:
                        raise BenchmarkFailed(f"worker {w.process.pid} exited with status "
                                              f"{code}")
                broker_rows = _broker_rows(redis)
                aof_mib = redis.aof_bytes() / 2**20
            except BaseException:
                _stop_all(orchestrators + workers)
                raise
        _check_services(reports, total)
        _check_broker(broker_rows, total)
        events_per_saga = ready[0]["events_per_saga"]
        expect("events per saga, orchestrator by orchestrator",
               {r["events_per_saga"] for r in ready}, {events_per_saga})
        if kind == "sqlite":
            rows = sqlite_counts(sqlite_path)
            expect("saga rows by status", rows["sagas"], {"completed": total})
            expect("event rows", rows["events"], total * events_per_saga)
            expect("inbox rows (the workers keep theirs on the broker)", rows["inbox"], 0)
            store_rows = {k: rows[k] for k in ("sagas", "events", "inbox")}
        else:
            assert base is not None
            store_rows = _counts(pg, dbname, base.events)
            expect("saga rows by status", store_rows["sagas"], {"completed": base.sagas + total})
            expect("event rows", store_rows["events"], base.events + total * events_per_saga)
            expect("inbox rows (the workers keep theirs on the broker)", store_rows["inbox"],
                   base.inbox)
            expect("drive requests (sagas handed to another member)", store_rows["requests"], 0)
            expect("members that wrote this run's events", store_rows["writing_members"],
                   members)
            expect("partitions kept through the batch", all(d["kept_partitions"] for d in done),
                   True)
    except BaseException:
        for path in sorted(workdir.glob(f"{label}-*.stderr")):
            tail = path.read_text(errors="replace").strip()[-2000:]
            if tail:
                print(f"--- {path.name}:\n{tail}", file=sys.stderr)
        raise
    finally:
        if kind == "postgres":
            pg.drop_database(dbname)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{sqlite_path}{suffix}")
    span = max(d["end"] for d in done) - min(d["begin"] for d in done)
    latencies = [x for d in done for x in d["latencies_s"]]
    per_saga = lambda seconds: round(seconds / sagas * 1e6, 1)  # noqa: E731
    return {
        "kind": kind,
        "orchestrators": members,
        "sagas": sagas,
        "span_s": span,
        "sagas_per_s": sagas / span,
        "latencies_s": latencies,
        "events_per_saga": events_per_saga,
        "cpu_us_per_saga": {
            "orchestrators": [round(d["cpu_s"] / d["sagas"] * 1e6, 1) for d in done],
            "workers": [per_saga(s) for s in worker_cpu],
            "redis": per_saga(redis_cpu),
            **({"postgres": per_saga(pg_cpu)} if server is not None else {}),
        },
        "cores": {
            "orchestrators": [round(d["cpu_s"] / span, 2) for d in done],
            "workers": [round(s / span, 2) for s in worker_cpu],
            "redis": round(redis_cpu / span, 2),
            **({"postgres": round(pg_cpu / span, 2)} if server is not None else {}),
        },
        "redis_commands": commands,
        "worker_commands": [sum(c["actions"] for c in r["counts"].values()) for r in reports],
        "max_in_flight": max(d["max_in_flight"] for d in done),
        "gc": done[0]["gc"],
        "peak_rss_mib": max([d["peak_rss_mib"] for d in done]
                            + [r["peak_rss_mib"] for r in reports]),
        "aof_mib": round(aof_mib, 1),
        "store": store_rows,
        "broker": broker_rows,
    }


def _command_stats(client: Any, sagas: int) -> dict[str, dict[str, float]]:
    """The commands redis-server ran since its statistics were reset, by name: calls per saga
    and µs per call (its own time, ``INFO commandstats``)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): {"per_saga": round(row["calls"] / sagas, 2),
                                            "us_per_call": round(row["usec_per_call"], 1)}
            for name, row in sorted(stats.items(), key=lambda kv: -kv[1]["calls"])
            if name.startswith("cmdstat_")}


def _pg_cpu(pg: Any) -> float:
    if pg is None:
        return 0.0
    from .pg_server import cpu_seconds

    return cpu_seconds(pg.pid)


def _check_services(reports: list[dict[str, Any]], total: int) -> None:
    """Each service's handler ran once per saga, over the workers; nothing left held."""
    for name in STEPS:
        summed = {key: sum(r["counts"][name][key] for r in reports)
                  for key in ("actions", "rejections", "compensations")}
        expect(f"calls to service {name!r} over the workers", summed,
               {"actions": total, "rejections": 0, "compensations": 0})
    expect("commands answered by the workers", sum(r["answered"] for r in reports),
           total * len(STEPS))
    expect("commands still held by the workers", [r["held"] for r in reports],
           [0] * len(reports))


def _check_broker(rows: dict[str, Any], total: int) -> None:
    """One command, one inbox entry per saga and service, one reply per command, nothing
    pending, no dead letter."""
    for name in STEPS:
        expect(f"broker: {name}'s commands, inbox entries, pending, dead letters",
               rows["services"][name],
               {"commands": total, "pending": 0, "inbox": total, "dead": 0})
    expect("broker: replies", rows["replies"], total * len(STEPS))
    expect("broker: replies not acknowledged", rows["replies_pending"], 0)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report keeps of one variant: the median run, every run's rate."""
    median = _median(runs)
    return {
        "sagas_per_s": round(median["sagas_per_s"], 1),
        "runs_sagas_per_s": [round(r["sagas_per_s"], 1) for r in runs],
        **{key: median[key] for key in (
            "orchestrators", "span_s", "cpu_us_per_saga", "cores", "worker_commands",
            "redis_commands",
            "max_in_flight", "peak_rss_mib", "aof_mib", "broker", "store")},
        "latency_ms": {"p50": round(statistics.median(median["latencies_s"]) * 1000, 3)},
    }


class _ProcessesResult(Result):
    """A :class:`Result` whose peak RSS is the largest of the orchestrators' and workers'."""

    def __init__(self, *args: Any, processes_peak_rss_mib: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processes_peak_rss_mib = processes_peak_rss_mib

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        document["peak_rss_mib"] = self.processes_peak_rss_mib
        return document


@contextlib.contextmanager
def _pg_server() -> Iterator[Any]:
    from .pg_server import BenchPostgres, binaries

    bin_dir = binaries()
    assert bin_dir is not None
    with BenchPostgres(bin_dir) as server:
        yield server


def run_s12(sagas: int) -> Result:
    """S12: ``sagas`` sagas per run, on SQLite and on PostgreSQL, median of interleaved
    rounds."""
    reason = unavailable()
    if reason is not None:
        raise BenchmarkFailed(("CI=true, but " if _in_ci() else "skipped: ") + reason)
    from .pg_server import SETTINGS as PG_SETTINGS
    from .pg_server import unavailable as pg_unavailable
    from .scale_out import _prefill

    no_pg = pg_unavailable()
    if no_pg is not None and _in_ci():
        raise BenchmarkFailed(f"CI=true, but {no_pg}")
    rounds = ROUNDS if sagas >= FEW else 1
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": []} if no_pg else {"sqlite": [],
                                                                           "postgres": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sagactor-s12-")))
        pg = base = None
        if no_pg is None:
            pg = stack.enter_context(_pg_server())
            base = _prefill(pg, min(sagas, PREFILL), workdir)
        for round_ in range(rounds):
            for kind in runs:
                runs[kind].append(_one_run(kind, sagas, f"r{round_}{kind[:2]}", workdir, pg,
                                           base))
        pg_settings = ({"skipped": no_pg} if pg is None
                       else {"version": pg.version, **PG_SETTINGS})
    sqlite = _median(runs["sqlite"])
    summaries = {kind: _summary(rs) for kind, rs in runs.items()}
    extra = {
        "rounds": rounds,
        "workers": WORKERS,
        "worker_concurrency": WORKER_CONCURRENCY,
        "concurrency_per_orchestrator": CONCURRENCY,
        "redis": {"appendonly": "yes", "appendfsync": appendfsync(), "save": ""},
        "postgres": pg_settings,
        "history_sagas": base.sagas if base is not None else 0,
        "events_per_saga": sqlite["events_per_saga"],
        "variants": summaries,
        "gc": sqlite["gc"],
    }
    verified = {"statuses": {"completed": sagas}, "events_per_saga": sqlite["events_per_saga"],
                "store_per_run": {k: _median(rs)["store"] for k, rs in runs.items()},
                "broker_per_run": {k: _median(rs)["broker"] for k, rs in runs.items()}}
    in_flight = {"limit": CONCURRENCY, "max": sqlite["max_in_flight"],
                 "mean": mean_in_flight(sagas, sqlite["span_s"], sqlite["latencies_s"])}
    return _ProcessesResult(sagas, sqlite["span_s"], sqlite["latencies_s"], verified,
                            extra=extra, in_flight=in_flight,
                            processes_peak_rss_mib=max(r["peak_rss_mib"] for rs in runs.values()
                                                       for r in rs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.remote_services",
                                     description="A worker or an orchestrator process of S12 "
                                                 "(started by it).")
    roles = parser.add_subparsers(dest="role", required=True)
    hosting = roles.add_parser("worker")
    hosting.add_argument("--broker", required=True)
    hosting.add_argument("--name", required=True)
    hosting.add_argument("--concurrency", type=int, required=True)
    driving = roles.add_parser("orchestrator")
    driving.add_argument("--store", required=True)
    driving.add_argument("--broker", required=True)
    driving.add_argument("--members", type=int, required=True)
    driving.add_argument("--sagas", type=int, required=True)
    driving.add_argument("--prefix", required=True)
    for sub in (hosting, driving):
        sub.add_argument("--gc", required=True, help="the collector's thresholds, a,b,c")
    args = parser.parse_args(argv)
    a, b, c = (int(x) for x in args.gc.split(","))
    gc.set_threshold(a, b, c)
    try:
        if args.role == "worker":
            worker(args.broker, args.name, args.concurrency)
        else:
            orchestrator(args.store, args.broker, args.members, args.sagas, args.prefix)
    except BenchmarkFailed as exc:
        print(f"S12 {args.role} FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
