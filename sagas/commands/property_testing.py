"""``saga test``: what the command does around :func:`sagas.testing.test_flow`.

``sagas.testing`` imports hypothesis, which a command that runs sagas must not pay for, so
the command imports it itself, on its own path; this module reads the flow and the example
inputs it is given, and says what its report means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..engine.inputs import validate_input
from ..language.loader import load_flow
from ..language.model import Flow
from .inputs import parse_json

if TYPE_CHECKING:  # sagas.testing imports hypothesis: for type checkers only
    from ..testing import FlowTestReport

__all__ = ["coverage_warning", "flow_test_status", "load_flow_and_examples", "run_flow_test"]


def load_flow_and_examples(flow_path: str, texts: Sequence[str]) -> tuple[Flow, list[Any]]:
    """The flow at ``flow_path`` and the example inputs given as JSON ``texts`` (``--input``),
    each valid for it; ``InputError`` for one that is not."""
    flow = load_flow(flow_path)
    examples = [parse_json(text, "--input") for text in texts]
    for example in examples:
        validate_input(flow, example)
    return flow, examples


def coverage_warning(report: FlowTestReport, budget: int | None) -> str | None:
    """What a report that did not try every single fault point should warn about: a
    ``budget`` (``--examples``) too small, or no input at all; ``None`` if it is complete."""
    if report.complete:
        return None
    if report.routes:
        return (f"warning: only {report.singles_tried} of {report.singles_total} single-fault "
                f"points were tried within --examples {budget}")
    return "warning: no input could be made from the flow's input schema; give --input"


def flow_test_status(report: FlowTestReport) -> str:
    """``ok`` if every run kept every property, else ``counterexample``."""
    return "ok" if report.ok else "counterexample"


def run_flow_test(flow_path: str, texts: Sequence[str], *, examples: int | None, seed: int,
                  handler_timeout: float, replay: str | None) -> tuple[str, str | None, str]:
    """``saga test``: the report's text, its coverage warning (or ``None``) and its status.
    Imports :mod:`sagas.testing` (and hypothesis) now, for this command only."""
    from ..testing import private_hypothesis_home, test_flow
    from .interrupts import graceful_stop

    private_hypothesis_home()
    flow, parsed = load_flow_and_examples(flow_path, texts)
    with graceful_stop():
        report = test_flow(flow, examples=examples, seed=seed, input_examples=parsed,
                           handler_timeout=handler_timeout, replay=replay, exit_if_stuck=True)
    return report.describe(), coverage_warning(report, examples), flow_test_status(report)
