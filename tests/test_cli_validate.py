"""`saga validate` checks the services a flow names (unless --no-import), and refuses what
is not a flow file without reading it all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sagas.language.loader import MAX_FLOW_BYTES
from tests.support import saga_cli

ROOT = Path(__file__).resolve().parent.parent
ORDER = (ROOT / "flows" / "order_inventory.yaml").read_text()
def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return saga_cli("validate", *args, cwd=cwd, timeout=60)


def flow(tmp_path: Path, name: str, *changes: tuple[str, str]) -> Path:
    text = ORDER
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


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
