"""``sagas.engine.gc_tuning``: the opt-in collector thresholds the CLI uses."""

from __future__ import annotations

import gc
import subprocess
import sys

from sagas.engine.gc_tuning import THROUGHPUT_THRESHOLDS, tune_gc


def test_tune_gc_sets_the_thresholds_and_returns_the_previous_ones():
    before = gc.get_threshold()
    try:
        assert tune_gc() == before
        assert gc.get_threshold() == THROUGHPUT_THRESHOLDS
        assert tune_gc((1000, 5, 5)) == THROUGHPUT_THRESHOLDS
        assert gc.get_threshold() == (1000, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_importing_the_library_changes_nothing():
    code = "import gc, sagas, sagas.engine.gc_tuning, actors; print(gc.get_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "(700, 10, 10)"  # CPython's defaults


def test_the_cli_opts_in():
    code = ("import gc, sys; from click.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.main, ['validate', 'flows/order_inventory.yaml']); "
            "print(r.exit_code, gc.get_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == f"0 {THROUGHPUT_THRESHOLDS}"
