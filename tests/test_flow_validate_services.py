"""``check_services=True``: validation imports the declared services and checks every handler.

Without it a mistyped class, a missing module, a module with a syntax error and an ``action``
that names no handler all passed validation, and users found out at ``saga run``. With it each
is one error at ``FILE:LINE:COL`` — the service's ``module:Class`` for what stops the import,
the step's ``action:`` / ``compensation:`` value for a handler the class lacks — and nothing of
the flow is imported without it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from sagas.errors import FlowErrors
from sagas.language.loader import load_flow, parse_flow

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "flows").glob("*.yaml"))

MODULES = {
    "svc_good": """
        from actors import Service, handles

        class Stock(Service):
            @handles("reserve")
            def reserve(self, command):
                return {}

            @handles("release")
            def release(self, command):
                return {}

        class NotAService:
            pass

        helper = 3
    """,
    "svc_syntax": "def broken(:\n    pass\n",
    "svc_raises": "raise RuntimeError('database unreachable\\nsecond line of the story')\n",
    "svc_exits": "import sys\nsys.exit(3)\n",
    "svc_needs_missing": "import svc_dependency_nobody_installed\n",
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The modules above in a directory on ``sys.path``, forgotten after the test."""
    for name, code in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


def messages(text: str, **options: object) -> list[str]:
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="flow.yaml", check_services=True, **options)
    return [error.format() for error in info.value.errors]


def flow_with(services: str, steps: str = "") -> str:
    return ("saga: demo\nservices:\n" + textwrap.indent(textwrap.dedent(services), "  ")
            + "steps:\n" + textwrap.dedent(steps or """\
                - name: reserve
                  service: stock
                  action: reserve
                  compensation: release
                """))


def test_a_handler_the_class_lacks_is_an_error_at_the_step_with_a_suggestion(modules):
    text = flow_with("stock: svc_good:Stock\n", """\
        - name: reserve
          service: stock
          action: reserv
          compensation: relese
        - name: again
          service: stock
          action: ship
          effects: none
        """)
    assert messages(text) == [
        "flow.yaml:7:11: service 'stock' (svc_good:Stock) has no handler 'reserv'; "
        "did you mean 'reserve'?",
        "flow.yaml:8:17: service 'stock' (svc_good:Stock) has no handler 'relese'; "
        "did you mean 'release'?",
        "flow.yaml:11:11: service 'stock' (svc_good:Stock) has no handler 'ship' "
        "(it handles: release, reserve)",
    ]


def test_handlers_inside_parallel_branches_and_choices_are_checked(modules):
    text = flow_with("stock: svc_good:Stock\n", """\
        - name: both
          parallel:
            left: [{name: a, service: stock, action: reserve, compensation: release}]
            right: [{name: b, service: stock, action: reserve, compensation: relase}]
        - name: pick
          choice:
            - when: {path: $.input.x, eq: 1}
              steps: [{name: c, service: stock, action: reserv, effects: none}]
        """)
    assert messages(text) == [
        "flow.yaml:8:70: service 'stock' (svc_good:Stock) has no handler 'relase'; "
        "did you mean 'release'?",
        "flow.yaml:12:49: service 'stock' (svc_good:Stock) has no handler 'reserv'; "
        "did you mean 'reserve'?",
    ]


@pytest.mark.parametrize(("path", "message"), [
    ("svc_nowhere:Stock", "cannot import svc_nowhere:Stock: ModuleNotFoundError: No module "
                          "named 'svc_nowhere'"),
    ("flows.shopp:Payment", "cannot import flows.shopp:Payment: ModuleNotFoundError: No module "
                            "named 'flows.shopp'; did you mean 'flows.shop'?"),
    ("svc_syntax:Stock", "cannot import svc_syntax:Stock: SyntaxError: invalid syntax "
                         "(svc_syntax.py, line 1)"),
    ("svc_raises:Stock", "cannot import svc_raises:Stock: RuntimeError: database unreachable"),
    ("svc_exits:Stock", "cannot import svc_exits:Stock: SystemExit: 3"),
    ("svc_needs_missing:Stock", "cannot import svc_needs_missing:Stock: ModuleNotFoundError: "
                                "No module named 'svc_dependency_nobody_installed'"),
    ("svc_good:Stok", "cannot import svc_good:Stok: 'svc_good' has no 'Stok'; "
                      "did you mean 'Stock'?"),
    ("svc_good:Stock.inner", "cannot import svc_good:Stock.inner: 'Stock' has no 'inner'"),
    ("svc_good:NotAService", "svc_good:NotAService is not a Service class (subclass "
                             "actors.Service and mark handlers with @handles)"),
    ("svc_good:helper", "svc_good:helper is not a Service class (subclass actors.Service and "
                        "mark handlers with @handles)"),
], ids=["missing-module", "missing-submodule", "syntax-error", "raises", "sys-exit",
        "missing-dependency", "missing-class", "missing-attribute", "plain-class", "not-a-class"])
def test_a_service_that_does_not_import_is_one_line_at_its_module_class(modules, path, message):
    expected = f"flow.yaml:3:10: service 'stock': {message}"
    assert messages(flow_with(f"stock: {path}\n")) == [expected]


def test_the_long_form_is_positioned_at_its_class(modules):
    text = flow_with("stock: {instances: 2,\n        class: svc_good:Stok}\n")
    assert messages(text) == ["flow.yaml:4:18: service 'stock': cannot import svc_good:Stok: "
                              "'svc_good' has no 'Stok'; did you mean 'Stock'?"]


def test_service_problems_come_with_every_other_problem_of_the_file(modules):
    text = flow_with("stock: svc_good:Stock\nother: svc_nowhere:X\n", """\
        - name: reserve
          service: stock
          action: reserv
          timeout: soon
        - name: Bad
          service: other
          action: a
        """)
    assert [m.split(": ", 1)[0] for m in messages(text)] == [
        "flow.yaml:4:10", "flow.yaml:8:11", "flow.yaml:9:12", "flow.yaml:10:9"]


def test_valid_services_and_the_shipped_flows_pass(modules):
    flow = parse_flow(flow_with("stock: svc_good:Stock\n"), check_services=True)
    assert [s.name for s in flow.steps] == ["reserve"]
    for path in SHIPPED:
        assert load_flow(path, strict=True, check_services=True).steps


def test_without_check_services_nothing_is_imported(modules):
    flow = parse_flow(flow_with("stock: svc_raises:Stock\n", """\
        - {name: a, service: stock, action: anything, effects: none}
        """))
    assert flow.services["stock"].import_path == "svc_raises:Stock"
    assert "svc_raises" not in sys.modules


def test_services_in_the_working_directory_are_found_and_sys_path_is_left_as_it_was(
        tmp_path, monkeypatch):
    # as from the `saga` console script: the working directory is not on sys.path
    (tmp_path / "svc_here.py").write_text(textwrap.dedent(MODULES["svc_good"]))
    (tmp_path / "flow.yaml").write_text(flow_with("stock: svc_here:Stock\n", """\
        - {name: a, service: stock, action: reserv, effects: none}
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    try:
        with pytest.raises(FlowErrors) as info:
            load_flow("flow.yaml", check_services=True)
        assert sys.path == before
    finally:
        sys.modules.pop("svc_here", None)
    assert [e.format() for e in info.value.errors] == [
        "flow.yaml:5:37: service 'stock' (svc_here:Stock) has no handler 'reserv'; "
        "did you mean 'reserve'?"]


def test_the_flows_own_directory_is_not_searched(tmp_path, monkeypatch):
    # `saga run` resolves module:Class from the working directory, not the flow's: neither may
    # validation, or it would pass flows that cannot run
    flows = tmp_path / "flows_elsewhere"
    flows.mkdir()
    (flows / "svc_beside.py").write_text(textwrap.dedent(MODULES["svc_good"]))
    (flows / "flow.yaml").write_text(flow_with("stock: svc_beside:Stock\n"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FlowErrors) as info:
        load_flow(flows / "flow.yaml", check_services=True)
    assert "No module named 'svc_beside'" in info.value.errors[0].message
    assert str(flows) not in sys.path and "svc_beside" not in sys.modules
