"""Run one scenario in this process: ``python -m benchmarks.child ID [--quick | --sagas N]``.

``python -m benchmarks`` runs every scenario this way, each in its own process, so that peak RSS
is per scenario. Run it yourself to profile one scenario, e.g.
``py-spy record -o s1.svg -- python -m benchmarks.child S1``. Writes the result as JSON to
``--out`` (or stdout); exits 1 with one line on stderr when the scenario cannot prove its work.

Every scenario, the baselines included, runs with the collector thresholds the ``saga`` CLI
uses (:func:`sagas.engine.gc_tuning.tune_gc`); ``--default-gc`` keeps CPython's defaults instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

from sagas.engine.gc_tuning import tune_gc

from ._common import BenchmarkFailed
from .scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child",
                                     description="Run one benchmark scenario in this process.")
    parser.add_argument("scenario", choices=[s.id for s in SCENARIOS])
    parser.add_argument("--quick", action="store_true", help="the --quick number of sagas")
    parser.add_argument("--sagas", type=int, help="this many sagas instead")
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector thresholds (the CLI's are the default)")
    args = parser.parse_args(argv)
    if not args.default_gc:
        tune_gc()
    scenario = next(s for s in SCENARIOS if s.id == args.scenario)
    sagas = args.sagas if args.sagas is not None else scenario.sagas(args.quick)
    if sagas < 1:
        parser.error("--sagas must be at least 1")
    begin = time.perf_counter()
    try:
        result = scenario.load()(sagas)
    except BenchmarkFailed as exc:
        print(f"{scenario.id} FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"{scenario.id} FAILED: it raised (traceback above)", file=sys.stderr)
        return 1
    document = {"id": scenario.id, "title": scenario.title, **result.to_json(),
                "wall_s": round(time.perf_counter() - begin, 2)}
    text = json.dumps(document, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
