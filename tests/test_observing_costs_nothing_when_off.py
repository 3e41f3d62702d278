"""With tracing, metrics and the console off (the default), running sagas loads none of
their libraries: OpenTelemetry, prometheus-client, Starlette and uvicorn stay unimported
whether they are installed or not (issue 18: "nothing is imported or costs anything when the
extra is absent or tracing is off"). Each in a fresh interpreter, so what other tests
imported does not count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "flows" / "order_inventory.yaml")
ORDER = '{"order_id": "o-1", "sku": "widget", "qty": 1, "amount": 5}'
OPTIONAL = ("opentelemetry", "prometheus_client", "starlette", "uvicorn")
CHECK = textwrap.dedent(f"""
    loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set({OPTIONAL!r}))
    assert not loaded, loaded
""")


def _run(code: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "SAGA_"))}  # nothing asks for tracing or metrics
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ["run", FLOW, "--input", ORDER],
    ["run", FLOW, "--input", ORDER, "--count", "20", "--concurrency", "5"],
    ["run", FLOW, "--input", ORDER, "--fail", "create_shipment", "--json"],
], ids=["one", "batch", "compensated"])
def test_saga_run_imports_no_tracing_metrics_or_web_library(args, tmp_path):
    _run(textwrap.dedent(f"""
        import sys
        import cli
        try:
            cli.main({[*args, "--store", f"sqlite:///{tmp_path}/sagas.db"]!r})
        except SystemExit as ended:
            assert ended.code in (0, 1), ended.code
    """) + CHECK, tmp_path)


def test_a_runtime_driving_sagas_imports_no_tracing_metrics_or_web_library(tmp_path):
    _run(textwrap.dedent(f"""
        import sys
        from sagas import Runtime, load_flow
        flow = load_flow({FLOW!r})
        with Runtime("sqlite:///{tmp_path}/sagas.db") as runtime:
            for n in range(10):
                runtime.start(flow, {{"order_id": f"o-{{n}}", "sku": "widget", "qty": 1,
                                     "amount": 5}}, f"off-{{n}}")
            assert all(runtime.wait(f"off-{{n}}", timeout=60).status == "completed"
                       for n in range(10))
    """) + CHECK, tmp_path)
