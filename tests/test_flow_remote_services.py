"""Services declared without a Python class (``{remote: true, handlers: [...]}``): served by
workers in other processes or languages, checked against their declared handlers when the
flow loads (nothing is imported), and refused in one line where no broker reaches them."""

from __future__ import annotations

import pytest

from sagas import FlowErrors, Runtime, parse_flow
from sagas.errors import DefinitionUnavailable

FLOW = """\
saga: pay_remote
services:
  payment: {remote: true, handlers: [charge, refund]}
  ledger: {remote: true, handlers: [record]}
steps:
  - name: charge
    service: payment
    action: charge
    compensation: refund
  - name: record
    service: ledger
    action: record
    effects: none
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(FlowErrors) as caught:
        parse_flow(text, source="<f>")
    return [e.message for e in caught.value.errors]


def test_a_class_less_service_loads_with_its_handlers_and_imports_nothing():
    flow = parse_flow(FLOW, source="<f>", check_services=True)  # nothing to import
    spec = flow.services["payment"]
    assert spec.remote and spec.import_path == ""
    assert spec.handlers == frozenset({"charge", "refund"})
    assert not flow.services["ledger"].handlers - {"record"}


def test_a_step_naming_an_undeclared_handler_is_one_error_with_a_suggestion():
    (message,) = _errors(FLOW.replace("action: record", "action: recrod"))
    assert message == ("remote service 'ledger' declares no handler 'recrod'; did you mean "
                       "'record'? (its handlers: record)")
    (message,) = _errors(FLOW.replace("compensation: refund", "compensation: undo"))
    assert "declares no handler 'undo'" in message and "charge, refund" in message


@pytest.mark.parametrize(("service", "expected"), [
    ("{remote: true, handlers: [charge, refund], class: 'm:C'}", "has no 'class'"),
    ("{remote: true, handlers: [charge, refund], instances: 2}", "has no 'instances'"),
    ("{remote: false, handlers: [charge, refund]}", "'remote' must be true"),
    ("{remote: true, handlers: []}", "non-empty list of handler names"),
    ("{remote: true}", "missing required key 'handlers'"),
    ("{remote: true, handlers: [charge, charge, refund]}", "listed twice"),
    ("{class: 'flows.bank:Payments', handlers: [charge, refund]}", "needs 'remote: true'"),
])
def test_malformed_remote_declarations_are_refused_in_one_line(service, expected):
    messages = _errors(FLOW.replace("{remote: true, handlers: [charge, refund]}", service))
    assert any(expected in m for m in messages), messages


def test_without_a_broker_a_class_less_service_is_refused_in_one_line():
    with Runtime() as runtime, pytest.raises(DefinitionUnavailable) as caught:
        runtime.start(parse_flow(FLOW, source="<f>"), {})
    assert str(caught.value) == ("service 'payment' has no Python class: workers run it; give "
                                 "their broker (--broker redis://..., SAGA_BROKER)")
