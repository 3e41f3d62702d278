"""The longer ``--help`` texts of the ``saga`` commands, kept here so that ``cli.py`` stays
the thin table of options it is. Click dedents them as it does docstrings."""

from __future__ import annotations

__all__ = [
    "CANCEL_HELP",
    "DATA_FILE_HELP",
    "DEAD_LETTERS_ALL_HELP",
    "DEAD_LETTERS_HELP",
    "DEAD_LETTERS_HELPS",
    "DEAD_LETTERS_SERVICE_HELP",
    "INPUT_FILE_HELP",
    "KIND_HELP",
    "LEASE_TTL_HELP",
    "LOG_FORMAT_HELP",
    "MEMBERS_HELP",
    "METRICS_HELP",
    "NO_IMPORT_HELP",
    "PUBLISH_HELP",
    "REMOTE_HELP",
    "REPLAY_DB_HELP",
    "RETRY_HELP",
    "SAGA_ID_HELP",
    "SEND_HELP",
    "SERVE_HELP",
    "SERVE_HTTP_HELP",
    "STUCK_HELP",
    "TEST_EXAMPLES_HELP",
    "TEST_HELP",
    "TEST_INPUT_HELP",
    "TOKEN_FILE_HELP",
    "UI_HELP",
    "VALIDATE_HELP",
    "WORKER_HELP",
]

TEST_INPUT_HELP = ("An example input (repeatable). Without any, inputs reaching every route (the "
                   "happy path, each choice branch, each business rejection) are searched for "
                   "from the input schema, the choices' conditions and the services' constants.")
TEST_EXAMPLES_HELP = ("The budget of runs with faults. Default: every single fault point and "
                      "recovery pair along every route, then 400 more (pairs and random "
                      "schedules). A budget too small for the single faults is reported.")
NO_IMPORT_HELP = ("Do not import the services' modules (for flows whose services are not "
                  "installed here, or whose code you do not want to run); every other check still"
                  " runs.")
INPUT_FILE_HELP = ("The saga input from a file ('-': standard input): one JSON document, or JSON "
                   "Lines (one input per line; a batch takes them in turn).")
SAGA_ID_HELP = ("Choose the saga id (a business key, [A-Za-z0-9_.-]{1,128}). Running an id that "
                "exists with the same input returns that saga; nothing runs twice.")
LEASE_TTL_HELP = ("On PostgreSQL: how long a member's leases last unless renewed (about how long "
                  "a dead member's sagas wait for another). Env: SAGA_LEASE_TTL.")
PUBLISH_HELP = ("Publish every saga event to this broker's stream sagactor:events:<flow>. Env: "
                "SAGA_PUBLISH.")
DATA_FILE_HELP = ("The event's data from a file ('-': standard input), for data too big for a "
                  "command line.")
KIND_HELP = ("How it fails: rejected (a business no), or its attempts run out on errors or "
             "timeouts.")
REPLAY_DB_HELP = ("Keep each counterexample found in the directory PATH and try the kept ones "
                  "first next time (default: nothing is kept, nothing replayed).")
UI_HELP = """The web console: the sagas of a store, filtered and live; one saga's timeline and
    its flow's diagram with the step it is on marked; retry and cancel (one, or every saga a
    filter matches), written to the store for the process that drives each; dead letters with
    --broker. Also an HTTP JSON API under /api/ with the CLI's --json shapes.

    Binds 127.0.0.1:8080 by default; any other address needs a token, from SAGA_UI_TOKEN or
    --token-file (never the command line, which ps shows). Exit 0 when stopped, 2 for a bad
    --http or token or a missing web extra, 5 if the store cannot be used.
    """
STUCK_HELP = ("Report retry_forever sagas compensating for longer than S seconds "
              "(default: 3600).")
SERVE_HTTP_HELP = ("Serve the web console (as saga ui) there too, over the same store, and the "
                   "dead letters of --broker; any address but 127.0.0.1 needs a token.")
TOKEN_FILE_HELP = "A file whose first line is the console's token (else SAGA_UI_TOKEN)."
LOG_FORMAT_HELP = ("Logs on stderr: human (shown with --debug only) or json (one object a line "
                   "with saga_id, step, event and trace_id, at INFO: saga serve logs every saga "
                   "event). Env: SAGA_LOG_FORMAT.")
METRICS_HELP = ("Serve Prometheus metrics on http://HOST:PORT/metrics and readiness on "
                "/healthz (the metrics extra). Env: SAGA_METRICS.")
REMOTE_HELP = ("Services whose commands go to workers through --broker (never imported here): "
               "names, or all. Env: SAGA_REMOTE.")

VALIDATE_HELP = ("Check flow files: syntax, structure, names, paths, recovery semantics, and "
                 """services.

    Imports each declared service (module:Class, found as `saga run` finds it) and checks
    that every action and compensation names one of its handlers; importing runs the
    module's code (--no-import skips it). Prints "ok: NAME vN (K steps)" per valid file;
    warnings and errors go to stderr as FILE:LINE:COL: message. Exits 2 if any is invalid.
    """)

MEMBERS_HELP = """Show who drives a shared (PostgreSQL) store's sagas, and which sagas nobody does.

    Each member's partitions (as ranges), epochs, last renewal, host and pid, and flows it
    runs; then the sagas in flight in a partition nobody holds or of a flow their member
    cannot run. A SQLite store usually has no members. Exit 5 if the store cannot be used.
    """

RETRY_HELP = """Re-drive a failed saga from where it stopped, after a person fixed the cause.

    A saga parked on a compensation resumes that compensation; one that failed forward
    recovery drives forward again. The saga's owner does it if it is alive; otherwise this
    command does. Exit as `run`: 0 completed, 1 compensated, 3 failed.
    """

CANCEL_HELP = """Cancel a running saga: before the pivot it is rolled back, after it, it carries on.

    A terminal saga is left as it is. Exit as `run`: 0 completed, 1 compensated, 3 failed.
    """

SEND_HELP = """Send EVENT to the saga that waits (or will wait) for it with this --key.

    The event is kept in the store until a saga's wait_for step consumes it, so it may be sent
    before the saga gets there, and from any shell: the process driving the saga picks it up.
    Exit 0 when recorded or already recorded (--id), 2 for a malformed event, 5 if the store
    cannot be used.
    """

SERVE_HELP = """Drive a store's sagas; start a saga of each FLOW for every event of its trigger.

    Each `saga send EVENT --key K --data JSON` of a FLOW's trigger (from any shell, even while
    nothing served it) starts one saga with the data as input and the id `<flow>.<id>`, never
    two for one event or id. Sagas whose owner is gone are finished too. On PostgreSQL it is a
    member (see `saga members`): it drives its share of the store's partitions, takes a dead
    member's over within seconds, gives its share back when stopped, and needs no trigger
    (with no FLOW, it runs the flows the stored sagas name). Prints `started <saga id>` per
    saga; exit 0 when stopped, 2 for a flow without a trigger on SQLite, or an --http address
    it cannot use (any but loopback without a token), before anything starts.
    """

TEST_HELP = """Property-test FLOW with its declared services under faults.

    Every route the inputs reach runs without faults, with every single fault point along it
    (each fault kind on each action and compensation; persistent faults; a crash after each
    event), then with pairs of faults and random schedules (README: Testing your flows). The
    first run that breaks a guarantee, the plan, the snapshots or an @invariant is shrunk and
    printed with its history, the faults marked; exit 1. Nothing is written here.
    """

WORKER_HELP = """Host the FLOWs' services for orchestrators that reach them through a Redis broker.

    A dead worker's commands are claimed by another within about 3 s; one delivered over 5
    times is dead-lettered and answered as an error. Ctrl-C or SIGTERM finishes what it holds,
    then exits 0. Exit 2 for an unknown service or a flow that won't load, 6 if the broker
    cannot be used (unreachable, refusing the password, redis-py missing).
    """

DEAD_LETTERS_HELP = """The commands a broker's workers gave up on: list, replay or purge them.

    A worker dead-letters a command delivered too many times (its handler crashed or hung
    its workers) to sagactor:dead:<service>, and answers it error: its saga counted a failed
    attempt and went on by its retry policy. Exit 0; 2 for an unknown entry id or a usage
    error; 6 if the broker cannot be used.
    """

DEAD_LETTERS_HELPS = {
    "list": """List the dead letters of --service, or of every service that has some.

    Entry id, service, saga id, step, phase, attempt, handler, deliveries, reason, worker and
    when; --json gives the command's body too.
    """,
    "replay": """Put dead letters back on their service's command stream, and delete them.

    The command is added again with the same body, so with the same idempotency key. Its
    saga was answered error when it was dead-lettered and has gone on since (its reply to the
    replay is ignored): if the saga's retry of the step was answered, or the step was
    compensated, the worker answers the replay from its inbox without running the handler;
    otherwise the handler runs and its outcome, if definitive, is kept for the saga's next
    attempt (or for `saga retry`). A dead letter that is no command cannot be replayed
    (exit 2; --all skips it, and says so). Each is moved in one transaction: never on both
    streams.
    """,
    "purge": """Delete dead letters (their sagas were answered error already).""",
}

DEAD_LETTERS_ALL_HELP = "Every dead letter (of --service, or of every service)."

DEAD_LETTERS_SERVICE_HELP = "Only this service's dead letters (default: every service's)."
