"""`saga validate`: ``ok: NAME vN (K steps)`` for each valid flow file; every problem as one
``FILE:LINE:COL: message`` line on stderr and exit 2 — an invalid flow, a file that is not a flow
(missing, a directory, binary, empty, not UTF-8; refused without reading it all), a warning under
``--strict``, and the services a flow names (imported and checked unless ``--no-import``).

Most tests drive ``cli.main`` with click's ``CliRunner`` (stdout and stderr apart); the others
run the real program in a subprocess, where a traceback or a stray print would show.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import main
from sagas.language.loader import MAX_FLOW_BYTES, load_flow
from tests.support import one_clear_line, saga_cli

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
ORDER = str(FLOWS / "order_inventory.yaml")
ORDER_TEXT = (FLOWS / "order_inventory.yaml").read_text()
SHIPPED = sorted(FLOWS.glob("*.yaml"))
WARNING_FLOW = Path(__file__).resolve().parent / "flows" / "warnings" / \
    "no_compensation_before_pivot.yaml"
INVALID_FLOW = Path(__file__).resolve().parent / "flows" / "invalid" / "duplicate_step_name.yaml"


def saga(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return saga_cli("validate", *args, cwd=cwd, timeout=60)


def flow(tmp_path: Path, name: str, *changes: tuple[str, str]) -> Path:
    text = ORDER_TEXT
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


# -- flow files ------------------------------------------------------------------------------------
def test_validate_every_shipped_flow() -> None:
    result = saga("validate", *map(str, SHIPPED))
    assert result.exit_code == 0, result.output
    expected = []
    for path in SHIPPED:
        flow = load_flow(path)
        expected.append(f"ok: {flow.name} v{flow.version} ({len(flow.steps)} steps)")
    assert result.stdout.splitlines() == expected
    assert result.stderr == ""
    assert "ok: order_inventory v1 (4 steps)" in expected


def test_validate_one_step_says_step(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("saga: one\nversion: 7\nservices: {s: a.b:C}\n"
                    "steps: [{name: a, service: s, action: x, effects: none}]\n")
    result = saga("validate", "--no-import", str(path))  # a.b:C is not a module here
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: one v7 (1 step)\n"


def _write(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.yaml"
    if kind == "directory":
        return tmp_path
    path = tmp_path / f"{kind}.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        path.write_bytes("saga: caf\xe9\n".encode("latin-1"))
    elif kind == "control":  # binary without NUL bytes, valid UTF-8
        path.write_bytes(b"saga: demo\x01\x02\x1b\n")
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "empty", "latin1",
                                  "control"])
def test_validate_an_unreadable_file_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind)
    result = saga("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_clear_line(result.stderr)
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+: \S.*", line), line
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_unreadable_files_in_a_real_process(tmp_path: Path) -> None:
    for kind in ("missing", "directory", "binary", "empty"):
        path = _write(tmp_path, kind)
        done = validate(str(path), cwd=ROOT)
        assert done.returncode == 2, (kind, done.stderr)
        assert done.stdout == ""
        line = one_clear_line(done.stderr)
        assert line.startswith(f"{path}:1:1: "), line


def test_validate_an_invalid_flow_prints_file_line_column() -> None:
    result = saga("validate", str(INVALID_FLOW))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_clear_line(result.stderr) == (
        f"{INVALID_FLOW}:9:11: duplicate step name 'reserve' (first at line 5)")


def test_validate_reports_every_file_and_fails_if_one_is_invalid() -> None:
    result = saga("validate", ORDER, str(INVALID_FLOW), str(FLOWS / "trip_booking.yaml"))
    assert result.exit_code == 2
    assert result.stdout.splitlines() == ["ok: order_inventory v1 (4 steps)",
                                          "ok: trip_booking v1 (5 steps)"]
    assert one_clear_line(result.stderr).startswith(f"{INVALID_FLOW}:9:11: ")


def test_validate_strict_turns_a_warning_into_exit_2() -> None:
    relaxed = saga("validate", str(WARNING_FLOW))
    assert relaxed.exit_code == 0, relaxed.output
    assert relaxed.stdout == "ok: demo v1 (2 steps)\n"
    assert one_clear_line(relaxed.stderr).startswith(
        f"{WARNING_FLOW}:6:5: warning: step 'reserve' has no compensation")

    strict = saga("validate", "--strict", str(WARNING_FLOW))
    assert strict.exit_code == 2
    assert strict.stdout == ""
    assert one_clear_line(strict.stderr).startswith(
        f"{WARNING_FLOW}:6:5: step 'reserve' has no compensation")

    shipped = saga("validate", "--strict", *map(str, SHIPPED))
    assert shipped.exit_code == 0, shipped.output


def test_validate_needs_a_file() -> None:
    result = saga("validate")
    assert result.exit_code == 2


# -- the services a flow names ---------------------------------------------------------------------
def test_a_mistyped_class_module_action_and_compensation_are_errors_at_their_place(tmp_path):
    path = flow(tmp_path, "typos.yaml",
                ("flows.shop:Payment", "flows.shop:Paymnt"),
                ("inventory: flows.shop:Inventory", "inventory: flows.shopp:Inventory"),
                ("action: create_shipment", "action: create_shipmnt"),
                ("compensation: release", "compensation: relase"))
    proc = validate(str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith(f"{path}:6:") and "'Paymnt'" in line
               and "did you mean 'Payment'" in line for line in lines), lines
    assert any(line.startswith(f"{path}:5:") and "flows.shopp" in line
               and "did you mean 'flows.shop'" in line for line in lines), lines
    assert any("has no handler 'create_shipmnt'; did you mean 'create_shipment'?" in line
               for line in lines), lines
    compensation = flow(tmp_path, "compensation.yaml", ("compensation: release",
                                                        "compensation: relase"))
    proc = validate(str(compensation), cwd=tmp_path)
    assert proc.returncode == 2
    assert "has no handler 'relase'; did you mean 'release'?" in proc.stderr
    assert all(line.count(":") >= 3 for line in proc.stderr.strip().splitlines())


def test_no_import_lints_a_flow_whose_services_are_not_installed(tmp_path):
    path = flow(tmp_path, "elsewhere.yaml", ("flows.shop:Payment", "billing.service:Payment"))
    assert validate(str(path), cwd=tmp_path).returncode == 2
    relaxed = validate("--no-import", str(path), cwd=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    assert relaxed.stdout.startswith("ok: order_inventory v1")


def test_a_device_that_never_ends_is_refused_without_reading_it_all(tmp_path):
    proc = validate("/dev/zero", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "/dev/zero:1:1: file too large for a flow (more than " \
                                  f"{MAX_FLOW_BYTES} bytes)"
