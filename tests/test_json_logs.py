"""JSON logs (``sagas.observe.logs``): one object a line with the same first keys, extra fields
of a record, tracebacks; the event listener logs a saga's progress with its id, step and event
type; the human format stays the commands' ``LEVEL logger: message``."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import Faults
from sagas import Runtime
from sagas.observe.logs import (
    EVENT_LOGGER,
    JsonFormatter,
    configure_logging,
    event_log_listener,
)
from sagas.remote.protocol import saga_trace_id

ROOT = Path(__file__).resolve().parent.parent
ORDER_FLOW = str(ROOT / "flows" / "order_inventory.yaml")
CORE = ["ts", "level", "logger", "message", "saga_id", "step", "event", "trace_id"]


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Root logging as ``--log-format json`` sets it, into a buffer; put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    configure_logging("json", "INFO", stream=buffer)
    yield buffer
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def parsed(buffer: io.StringIO) -> list[dict]:
    lines = buffer.getvalue().splitlines()
    objects = [json.loads(line) for line in lines]  # every line parses on its own
    for line, obj in zip(lines, objects, strict=True):
        assert isinstance(obj, dict), line
        assert list(obj)[:len(CORE)] == CORE, line
    return objects


def test_a_log_line_is_one_json_object_with_the_fields(json_lines):
    logging.getLogger("sagas.engine.shard").warning("shard %d: slow commit", 3)
    logging.getLogger("mine").info("charged", extra={"saga_id": "o-1", "step": "charge",
                                                     "event": "step.succeeded",
                                                     "amount": 500, "tags": ("a", "b"),
                                                     "when": object()})
    plain, about_saga = parsed(json_lines)
    assert plain["level"] == "WARNING" and plain["logger"] == "sagas.engine.shard"
    assert plain["message"] == "shard 3: slow commit"
    assert plain["ts"].endswith("Z") and "T" in plain["ts"]
    assert [plain[k] for k in ("saga_id", "step", "event", "trace_id")] == [None] * 4
    assert about_saga["saga_id"] == "o-1" and about_saga["step"] == "charge"
    assert about_saga["event"] == "step.succeeded"
    assert about_saga["trace_id"] == saga_trace_id("o-1")  # derived from the saga id
    assert about_saga["amount"] == 500 and about_saga["tags"] == ["a", "b"]
    assert about_saga["when"].startswith("<object object")  # str() of what JSON cannot hold
    assert "levelname" not in about_saga and "args" not in about_saga


def test_a_given_trace_id_is_kept_and_a_traceback_is_one_field(json_lines):
    log = logging.getLogger("mine")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("it broke", extra={"saga_id": "o-2", "trace_id": "abc"})
    (line,) = parsed(json_lines)
    assert line["trace_id"] == "abc" and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback") and "ValueError: bad" in line["exception"]
    assert "\n" not in json_lines.getvalue().rstrip("\n")  # one line all the same


def test_the_event_listener_logs_a_sagas_progress(json_lines):
    faults = Faults().add("create_shipment", kind="reject", saga_id="refused")
    with Runtime(faults=faults, listeners=[event_log_listener]) as runtime:
        runtime.run(ORDER_FLOW, {"order_id": "1", "sku": "widget", "qty": 1, "amount": 5},
                    "shipped")
        result = runtime.run(ORDER_FLOW, {"order_id": "2", "sku": "widget", "qty": 1,
                                          "amount": 5}, "refused")
    events = [line for line in parsed(json_lines) if line["logger"] == EVENT_LOGGER]
    assert {line["level"] for line in events} == {"INFO"}
    refused = [line for line in events if line["saga_id"] == "refused"]
    assert [line["event"] for line in refused] == [e.type for e in result.history]
    assert [line["step"] for line in refused] == [e.step for e in result.history]
    assert [line["seq"] for line in refused] == [e.seq for e in result.history]
    assert {line["trace_id"] for line in refused} == {saga_trace_id("refused")}
    failed = next(line for line in refused if line["event"] == "step.failed")
    assert failed["step"] == "create_shipment" and failed["kind"] == "rejected"
    assert failed["error"] == "injected rejection" and failed["attempt"] == 1
    assert failed["message"] == ("saga refused: step.failed create_shipment (attempt 1): "
                                 "injected rejection")
    assert not any("payload" in line or "output" in line or "input" in line
                   for line in events)  # only what says why, never the data itself
    shipped = [line["event"] for line in events if line["saga_id"] == "shipped"]
    assert shipped[0] == "saga.started" and shipped[-1] == "saga.completed"


def test_the_event_listener_costs_nothing_when_info_is_off():
    logger = logging.getLogger(EVENT_LOGGER)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        with Runtime(listeners=[event_log_listener]) as runtime:
            runtime.run(ORDER_FLOW, {"order_id": "1", "sku": "widget", "qty": 1, "amount": 5})
        assert seen == []
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_formats_and_levels_are_checked():
    with pytest.raises(ValueError, match="log format 'xml' is not one of human, json"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="log level 'loud' is not one of"):
        configure_logging("json", "loud")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_json_goes_to_stderr_and_human_is_as_the_commands_had_it():
    prelude = "import logging; from sagas.observe import configure_logging; "
    proc = run(prelude + "configure_logging('json', 'INFO'); "
               "logging.getLogger('a').info('hello'); logging.getLogger('a').debug('no')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert json.loads(line)["message"] == "hello"
    proc = run(prelude + "configure_logging('human', logging.INFO); "
               "logging.getLogger('a.b').warning('careful %s', 1)")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "WARNING a.b: careful 1\n")
    # configured again: the handler it installed is replaced, not doubled
    proc = run(prelude + "configure_logging('human'); configure_logging('json'); "
               "configure_logging('json', 'DEBUG'); logging.getLogger('a').debug('once')")
    assert len(proc.stderr.splitlines()) == 1 and json.loads(proc.stderr)["level"] == "DEBUG"


def test_importing_the_logs_imports_neither_prometheus_nor_opentelemetry():
    proc = run("import sys, sagas.observe; from sagas.observe import configure_logging; "
               "configure_logging('json'); "
               "assert 'prometheus_client' not in sys.modules, 'prometheus_client'; "
               "assert not [m for m in sys.modules if m.startswith('opentelemetry')]")
    assert proc.returncode == 0, proc.stderr


def test_the_formatter_alone():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m %s", ("a",), None)
    record.saga_id = "s-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "m a" and line["trace_id"] == saga_trace_id("s-1")
    assert line["step"] is None and line["event"] is None
