"""S11 (issue 16): S3's workload on PostgreSQL, driven by one member and by two members, each
a process of its own.

The scenario's process (``python -m benchmarks.child S11``) is the *coordinator*. It starts a
private, durable PostgreSQL server (:mod:`benchmarks.pg_server`: the scale-out research's
settings, ``fsync`` and ``synchronous_commit`` on) and gives the store a history: one member
runs as many sagas as a run does in a template database, which is then vacuumed and analyzed
(:func:`_prefill` says why). Then it runs rounds of two runs — one member, then two — each on
a new copy of that template, and reports the median run of each (3 rounds; one when given
fewer than :data:`FEW` sagas, as ``--quick`` does).

One run of ``k`` members:

1. the coordinator copies the template into a new database, then starts ``k`` member
   processes (``python -m benchmarks.scale_out --url ...``);
2. each member opens a :class:`sagas.Runtime` on the store (a member of it, by default on
   PostgreSQL) and waits until the partitions are balanced: it holds ``64 / k`` of the
   store's 64 partitions and every partition is held. It then picks saga ids
   (``{prefix}-{n}``) that fall in partitions it holds, so that it drives every saga it
   starts itself (a saga started in another member's partition is handed over through the
   store, a slower path this scenario does not measure), warms up (one saga, then a batch of
   200) and says it is ready;
3. once every member is ready, the coordinator reads PostgreSQL's CPU time (the postmaster and
   its children, from ``/proc``) and tells them all to go (a line on each one's stdin);
4. each member runs its share of the batch exactly as S3 does (the 4-step flow, at most
   :data:`~benchmarks._common.CONCURRENCY` sagas in flight *per member*, ``Runtime.submit``
   with ``on_end``), reads its own CPU time (``time.process_time``: every thread of the
   process) around it, checks its statuses and the calls its services counted, and reports;
5. once every member reported, the coordinator reads PostgreSQL's CPU time again, tells the
   members to close (not before: a member that leaves gives its partitions to the others,
   which would then claim them mid-batch), and checks the store's rows beyond the template's:
   sagas by status, events (the events of one saga times the sagas), inbox replies (4 per
   saga), no ``drive`` request at all (every saga was driven where it started), and the run's
   events written by ``k`` members.

A run's figure is the sagas of the timed batches over the span from the first member's start
to the last one's end (a system-wide monotonic clock); its latencies are those of every
member's sagas. CPU µs per saga: each member's CPU over its own sagas, PostgreSQL's over all.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._common import (
    CONCURRENCY,
    FLOWS,
    WAIT_LIMIT,
    BenchmarkFailed,
    GcTimer,
    Result,
    expect,
    mean_in_flight,
    peak_rss_mib,
)
from .pg_server import SETTINGS, BenchPostgres, binaries, cpu_seconds, unavailable

__all__ = ["FEW", "ROUNDS", "run_s11"]

ROUNDS = 3
"""Rounds of (one member, two members), interleaved; the median run of each is reported."""

FEW = 5_000
"""Given fewer sagas than this (``--quick``), one round only."""

MEMBERS = (1, 2)
"""The numbers of member processes compared."""

WARM_UP = 200
"""Sagas each member runs before the timed batch (verified with the rest, not timed)."""

BALANCE_LIMIT = 30.0
"""Seconds a member may wait for the partitions to be balanced."""

PREFILL = True
"""Whether the runs start from a store holding a history (see :func:`_prefill`), as a store in
use does, rather than from an empty one."""

STEPS = ("first", "second", "third", "fourth")
INBOX_PER_SAGA = len(STEPS)  # one definitive reply per action (the happy path)
ROOT = Path(__file__).resolve().parent.parent


# -- the member process ----------------------------------------------------------------------------
def _say(kind: str, **facts: Any) -> None:
    """One line to the coordinator."""
    sys.stdout.write(json.dumps({kind: facts}) + "\n")
    sys.stdout.flush()


def _await(word: str) -> None:
    """Block until the coordinator writes ``word`` on stdin."""
    line = sys.stdin.readline()
    if line.strip() != word:
        raise BenchmarkFailed(f"expected {word!r} from the coordinator, got {line!r}")


def _held_ids(membership: Any, prefix: str, count: int) -> list[str]:
    """``count`` ids ``{prefix}-{n}`` whose partitions this member holds."""
    ids: list[str] = []
    n = 0
    while len(ids) < count:
        saga_id = f"{prefix}-{n}"
        if membership.holds(membership.partition_of(saga_id)):
            ids.append(saga_id)
        n += 1
    return ids


def _wait_balanced(runtime: Any, members: int) -> list[int]:
    """Poll until this member holds its fair share and every partition is held; the held."""
    membership = runtime.membership
    if membership is None:
        raise BenchmarkFailed("the runtime on PostgreSQL is not a member")
    total = membership.partitions
    share = {total // members, -(-total // members)}
    deadline = time.monotonic() + BALANCE_LIMIT
    while True:
        held = membership.held()
        if len(held) in share:
            leases = runtime.store.leases()
            owners = {info.member for info in leases if info.held}
            if len(leases) == total and all(info.held for info in leases) \
                    and len(owners) == members:
                return held
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"partitions not balanced between {members} members after "
                                  f"{BALANCE_LIMIT:.0f}s: this one holds {len(held)}")
        time.sleep(0.1)


@dataclass
class _Timed:
    sagas: int
    begin: float  # time.monotonic(), comparable across processes
    end: float
    elapsed_s: float
    cpu_s: float
    latencies_s: list[float]
    statuses: Counter[str]
    max_in_flight: int
    gc: dict[str, Any] = field(default_factory=dict)


def _drive(runtime: Any, flow: Any, ids: list[str]) -> _Timed:
    """S3's batch over the given ids (as :func:`benchmarks._common.drive`, which numbers its
    own ids): a feeder thread submits, at most :data:`CONCURRENCY` in flight, ``on_end``
    releases a slot. The process's CPU time is read around it."""
    total = len(ids)
    slots = threading.BoundedSemaphore(CONCURRENCY)
    lock = threading.Lock()
    finished = threading.Event()
    begun: dict[str, float] = {}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    state = {"done": 0, "in_flight": 0, "max": 0}
    errors: list[BaseException] = []
    submitted: list[Any] = []

    def on_end(saga_id: str, status: str, reason: str | None) -> None:
        now = time.perf_counter()
        with lock:
            latencies.append(now - begun.pop(saga_id))
            statuses[status] += 1
            state["in_flight"] -= 1
            state["done"] += 1
            if state["done"] == total:
                finished.set()
        slots.release()

    def feeder() -> None:
        try:
            for n, saga_id in enumerate(ids):
                if not slots.acquire(timeout=WAIT_LIMIT) or errors:
                    return
                with lock:
                    state["in_flight"] += 1
                    state["max"] = max(state["max"], state["in_flight"])
                    begun[saga_id] = time.perf_counter()
                submitted.append(runtime.submit(flow, {"n": n}, saga_id, on_end=on_end))
        except BaseException as exc:
            errors.append(exc)
            finished.set()

    thread = threading.Thread(target=feeder, name="bench-feeder", daemon=True)
    gc.collect()
    with GcTimer() as collector:
        cpu = time.process_time()
        begin, start = time.monotonic(), time.perf_counter()
        thread.start()
        ended = finished.wait(WAIT_LIMIT) if total else True
        elapsed = time.perf_counter() - start
        end = time.monotonic()
        cpu = time.process_time() - cpu
    thread.join(1.0)
    for item in submitted:
        refused = item.exception()
        if refused is not None:
            errors.append(refused)
            break
    if errors:
        raise BenchmarkFailed(f"starting a saga failed: {errors[0]!r}") from errors[0]
    if not ended:
        raise BenchmarkFailed(f"only {state['done']} of {total} sagas ended within "
                              f"{WAIT_LIMIT:.0f}s")
    return _Timed(total, begin, end, elapsed, cpu, latencies, statuses, state["max"],
                  collector.report(elapsed))


def _service_counts(runtime: Any, flow: Any) -> dict[str, dict[str, int]]:
    from .services import counts

    return {name: counts(runtime.instances(flow.services[name].import_path)) for name in STEPS}


def member(url: str, members: int, sagas: int, prefix: str) -> None:
    """One member process: balance, warm up, say ready, wait for ``go``, run the batch, report,
    wait for ``close``."""
    from sagas import Runtime

    with Runtime(url) as runtime:
        flow = runtime.compile(FLOWS / "bench_trivial.yaml").flow
        held = _wait_balanced(runtime, members)
        membership = runtime.membership
        warm = _held_ids(membership, f"{prefix}-warm", WARM_UP + 1)
        first = runtime.run(flow, {"n": 0}, warm[0], timeout=60)
        expect(f"warm-up saga {first.saga_id} status", first.status, "completed")
        events_per_saga = len(first.history)
        warmed = _drive(runtime, flow, warm[1:])
        expect("warm-up statuses", dict(warmed.statuses), {"completed": WARM_UP})
        ids = _held_ids(membership, prefix, sagas)
        before = _service_counts(runtime, flow)
        _say("ready", held=len(held), events_per_saga=events_per_saga)
        _await("go")
        batch = _drive(runtime, flow, ids)
        held_after = membership.held()  # type: ignore[union-attr]
        expect("statuses of the batch", dict(batch.statuses), {"completed": sagas})
        after = _service_counts(runtime, flow)
        for name in STEPS:
            delta = {key: after[name][key] - before[name][key] for key in after[name]}
            expect(f"calls to service {name!r} in the batch", delta,
                   {"actions": sagas, "rejections": 0, "compensations": 0})
        _say("done", sagas=sagas, begin=batch.begin, end=batch.end, elapsed_s=batch.elapsed_s,
             cpu_s=batch.cpu_s, latencies_s=batch.latencies_s, max_in_flight=batch.max_in_flight,
             gc=batch.gc, held=len(held), held_after=len(held_after),
             kept_partitions=held_after == held, peak_rss_mib=round(peak_rss_mib(), 1),
             pid=os.getpid())
        _await("close")


# -- the coordinator -------------------------------------------------------------------------------
class _Member:
    """A member process seen from the coordinator: its stdin, a queue of its stdout's lines."""

    def __init__(self, argv: list[str], stderr: IO[bytes]) -> None:
        self.process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=stderr, text=True,
                                        bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkFailed(f"member {self.process.pid}: no {kind!r} within "
                                      f"{timeout:.0f}s") from None
            if line is None:
                raise BenchmarkFailed(f"member {self.process.pid} exited (status "
                                      f"{self.process.wait()}) before saying {kind!r}")
            if line.startswith("{"):  # not a profiler's chatter (py-spy record -- ...)
                break
        message = json.loads(line)
        if kind not in message:
            raise BenchmarkFailed(f"member {self.process.pid}: expected {kind!r}, got {line!r}")
        facts: dict[str, Any] = message[kind]
        return facts

    def tell(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Kill it if it is still running (a failed run)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass(frozen=True)
class _Base:
    """What a run's database holds before its members start: the template it is copied from
    (``None``: an empty store) and that template's rows."""

    template: str | None = None
    sagas: int = 0
    events: int = 0
    inbox: int = 0


def _counts(server: BenchPostgres, dbname: str, after_position: int) -> dict[str, Any]:
    """The store's rows: sagas by status, events, inbox replies, requests, and how many
    members wrote the events past ``after_position``."""
    with server.admin(dbname) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM sagactor.sagas GROUP BY status")
                        .fetchall())
        events = db.execute("SELECT count(*) FROM sagactor.events").fetchone()[0]
        inbox = db.execute("SELECT count(*) FROM sagactor.inbox").fetchone()[0]
        requests = db.execute("SELECT count(*) FROM sagactor.requests").fetchone()[0]
        by_member = db.execute("SELECT count(DISTINCT member) FROM sagactor.events "
                               "WHERE position > %s", (after_position,)).fetchone()[0]
    return {"sagas": statuses, "events": events, "inbox": inbox, "requests": requests,
            "writing_members": by_member}


def _shares(total: int, members: int) -> list[int]:
    return [total // members + (1 if i < total % members else 0) for i in range(members)]


def _one_run(server: BenchPostgres, members: int, sagas: int, label: str, workdir: Path,
             base: _Base, *, keep: bool = False) -> dict[str, Any]:
    """One run of ``members`` member processes on a new database (a copy of ``base``'s
    template, or an empty store); its figures. The database is dropped unless ``keep``."""
    from sagas.stores import open_store

    dbname = f"s11_{label}"
    server.create_database(dbname, template=base.template)
    url = server.url(dbname)
    if base.template is None:
        open_store(url).close()  # the schema, made once before the members race to make it
    running: list[_Member] = []
    try:
        for i, share in enumerate(_shares(sagas, members)):
            argv = [sys.executable, "-m", "benchmarks.scale_out", "--url", url,
                    "--members", str(members), "--sagas", str(share),
                    "--prefix", f"{label}-m{i}",
                    "--gc", ",".join(str(x) for x in gc.get_threshold())]
            stderr = open(workdir / f"{label}-m{i}.stderr", "wb")  # noqa: SIM115
            with stderr:
                running.append(_Member(argv, stderr))
        ready = [m.expect("ready", BALANCE_LIMIT + 60) for m in running]
        pg_before = cpu_seconds(server.pid)  # type: ignore[arg-type]
        for m in running:
            m.tell("go")
        done = [m.expect("done", WAIT_LIMIT) for m in running]
        pg_cpu = cpu_seconds(server.pid) - pg_before  # type: ignore[arg-type]
        for m in running:
            m.tell("close")
        for m in running:
            code = m.process.wait(60)
            if code != 0:
                raise BenchmarkFailed(f"member {m.process.pid} exited with status {code}")
        events_per_saga = ready[0]["events_per_saga"]
        expect("events per saga, member by member", {r["events_per_saga"] for r in ready},
               {events_per_saga})
        added = sagas + members * (WARM_UP + 1)
        rows = _counts(server, dbname, base.events)
        expect("saga rows by status", rows["sagas"], {"completed": base.sagas + added})
        expect("event rows", rows["events"], base.events + added * events_per_saga)
        expect("inbox rows", rows["inbox"], base.inbox + added * INBOX_PER_SAGA)
        expect("drive requests (sagas handed to another member)", rows["requests"], 0)
        expect("members that wrote this run's events", rows["writing_members"], members)
    except BaseException:
        for m in running:
            m.stop()
        for path in sorted(workdir.glob(f"{label}-m*.stderr")):
            tail = path.read_text(errors="replace").strip()[-2000:]
            if tail:
                print(f"--- {path.name}:\n{tail}", file=sys.stderr)
        server.drop_database(dbname)
        raise
    if not keep:
        server.drop_database(dbname)
    span = max(d["end"] for d in done) - min(d["begin"] for d in done)
    latencies = [x for d in done for x in d["latencies_s"]]
    return {
        "members": members,
        "sagas": sagas,
        "database": dbname,
        "span_s": span,
        "sagas_per_s": sagas / span,
        "latencies_s": latencies,
        "events_per_saga": events_per_saga,
        "member_sagas_per_s": [round(d["sagas"] / d["elapsed_s"], 1) for d in done],
        "member_cpu_us_per_saga": [round(d["cpu_s"] / d["sagas"] * 1e6, 1) for d in done],
        "member_cores": [round(d["cpu_s"] / span, 2) for d in done],
        "postgres_cpu_us_per_saga": round(pg_cpu / sagas * 1e6, 1),
        "postgres_cores": round(pg_cpu / span, 2),
        "event_rows_per_s": round(sagas * events_per_saga / span),
        "max_in_flight": max(d["max_in_flight"] for d in done),
        "gc": done[0]["gc"],
        "held": [d["held"] for d in done],
        "kept_partitions": all(d["kept_partitions"] for d in done),
        "peak_rss_mib": max(d["peak_rss_mib"] for d in done),
        "store": rows,
    }


def _prefill(server: BenchPostgres, sagas: int, workdir: Path) -> _Base:
    """A template database holding a history: ``sagas`` sagas run by one member (as a run
    does), then ``VACUUM ANALYZE`` (what autovacuum does to a store in use). Every run starts
    from a copy of it.

    Why: on an empty store the planner has no statistics for the first minute (autovacuum
    looks every minute and analyzes a table once a tenth of it changed), and the plans it
    caches for the store's prepared statements while the tables are small stay in use as they
    grow. The services' inbox look-ups (``key = ANY(...)``) and the headers' update
    (``UPDATE sagas ... FROM unnest(...)``) were then seen reading the whole table at every
    commit, so that a batch slowed down as it went and its figure depended on its size
    (BENCHMARKS.md, issue 16). A store in use has statistics, and plans that use the indexes.
    """
    run = _one_run(server, 1, sagas, "template", workdir, _Base(), keep=True)
    name = run["database"]
    with server.admin(name) as db:
        db.execute("VACUUM ANALYZE")
    rows = run["store"]
    return _Base(template=name, sagas=sum(rows["sagas"].values()), events=rows["events"],
                 inbox=rows["inbox"])


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["sagas_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report keeps of one number of members: the median run, every run's rate."""
    median = _median(runs)
    return {
        "sagas_per_s": round(median["sagas_per_s"], 1),
        "runs_sagas_per_s": [round(r["sagas_per_s"], 1) for r in runs],
        **{key: median[key] for key in (
            "span_s", "member_sagas_per_s", "member_cpu_us_per_saga", "member_cores",
            "postgres_cpu_us_per_saga", "postgres_cores", "event_rows_per_s", "max_in_flight",
            "held", "kept_partitions", "peak_rss_mib")},
        "latency_ms": {"p50": round(statistics.median(median["latencies_s"]) * 1000, 3)},
    }


class _MembersResult(Result):
    """A :class:`Result` whose peak RSS is the members' (the coordinator only waits)."""

    def __init__(self, *args: Any, members_peak_rss_mib: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members_peak_rss_mib = members_peak_rss_mib

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        document["peak_rss_mib"] = self.members_peak_rss_mib
        return document


@contextlib.contextmanager
def _server() -> Iterator[BenchPostgres]:
    reason = unavailable()
    if reason is not None:
        ci = os.environ.get("CI", "").lower() == "true"
        raise BenchmarkFailed(("CI=true, but " if ci else "skipped: ") + reason)
    bin_dir = binaries()
    assert bin_dir is not None
    with BenchPostgres(bin_dir) as server:
        yield server


def run_s11(sagas: int) -> Result:
    """S11: ``sagas`` sagas per run, by one member and by two, median of interleaved rounds."""
    rounds = ROUNDS if sagas >= FEW else 1
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in MEMBERS}
    with _server() as server, tempfile.TemporaryDirectory(prefix="sagactor-s11-") as tmp:
        base = _prefill(server, sagas, Path(tmp)) if PREFILL else _Base()
        for round_ in range(rounds):
            for k in MEMBERS:
                runs[k].append(_one_run(server, k, sagas, f"r{round_}k{k}", Path(tmp), base))
        version = server.version
    one = _median(runs[1])
    summaries = {str(k): _summary(runs[k]) for k in MEMBERS}
    extra = {
        "rounds": rounds,
        "concurrency_per_member": CONCURRENCY,
        "postgres": {"version": version, **SETTINGS},
        "events_per_saga": one["events_per_saga"],
        "history_sagas": base.sagas,
        "members": summaries,
        "two_vs_one": round(summaries["2"]["sagas_per_s"] / summaries["1"]["sagas_per_s"], 3),
        "gc": one["gc"],
    }
    verified = {"statuses": {"completed": sagas}, "events_per_saga": one["events_per_saga"],
                "store_per_run": {str(k): _median(runs[k])["store"] for k in MEMBERS},
                "drive_requests": 0}
    in_flight = {"limit": CONCURRENCY, "max": one["max_in_flight"],
                 "mean": mean_in_flight(sagas, one["span_s"], one["latencies_s"])}
    return _MembersResult(sagas, one["span_s"], one["latencies_s"], verified, extra=extra,
                          in_flight=in_flight,
                          members_peak_rss_mib=max(r["peak_rss_mib"] for rs in runs.values()
                                                   for r in rs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out",
                                     description="One member process of S11 (started by it).")
    parser.add_argument("--url", required=True)
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--sagas", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--gc", required=True, help="the collector's thresholds, a,b,c")
    args = parser.parse_args(argv)
    a, b, c = (int(x) for x in args.gc.split(","))
    gc.set_threshold(a, b, c)
    try:
        member(args.url, args.members, args.sagas, args.prefix)
    except BenchmarkFailed as exc:
        print(f"S11 member FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
