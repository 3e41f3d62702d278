"""The import direction stays honest: cli → sagas → actors; the pure core imports no IO.

Checked statically, from each module's own import statements (what it imports at runtime, not
under TYPE_CHECKING), so a stray import fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sagas

ROOT = Path(__file__).resolve().parent.parent
PURE_CORE = ("sagas/engine/core.py", "sagas/language/compiler.py", "sagas/language/model.py",
             "sagas/language/paths.py", "sagas/events.py", "sagas/language/plan.py",
             "sagas/language/loader.py", "sagas/language/_yaml.py", "sagas/errors.py",
             "sagas/language/graph.py", "sagas/language/conditions.py")

# The groups of `sagas` and what each may import of the others: the layout reads as the
# pipeline (flow text -> language -> engine, over stores and the bus), and no arrow points back.
GROUP_MAY_IMPORT = {
    "sagas.errors": set(),
    "sagas.events": {"sagas.errors"},
    "sagas.language": {"sagas.errors", "sagas.events"},
    "sagas.stores": {"sagas.errors", "sagas.events"},
    "sagas.bus": {"sagas.errors", "sagas.events", "sagas.stores"},
    "sagas.audit": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores"},
    "sagas.remote": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores",
                     "sagas.bus"},
    "sagas.engine": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores",
                     "sagas.bus", "sagas.remote"},
    "sagas.testing": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores",
                      "sagas.bus", "sagas.audit", "sagas.engine", "sagas.remote"},
    "sagas.observe": {"sagas.errors", "sagas.events", "sagas.stores", "sagas.language",
                      "sagas.engine", "sagas.remote"},
    "sagas.commands": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores",
                       "sagas.bus", "sagas.audit", "sagas.engine", "sagas.remote",
                       "sagas.testing", "sagas.observe", "sagas.web"},
    # the web console: a front end over the store and the commands' reading functions, as
    # cli.py is; sagas.commands.ui serves it (importing it only when it does)
    "sagas.web": {"sagas.errors", "sagas.events", "sagas.language", "sagas.stores",
                  "sagas.audit", "sagas.engine", "sagas.remote", "sagas.commands"},
}


def runtime_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            else:
                found.add(node.module or "")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", modules("actors"), ids=lambda p: str(p.relative_to(ROOT)))
def test_actors_import_nothing_of_sagas_flows_or_cli(path):
    assert {top(m) for m in runtime_imports(path)} & {"sagas", "flows", "cli"} == set()


@pytest.mark.parametrize("name", PURE_CORE)
def test_the_pure_core_imports_neither_pykka_nor_stores_nor_actors(name):
    imported = runtime_imports(ROOT / name)
    assert {top(m) for m in imported} & {"pykka", "actors", "sqlite3", "threading",
                                         "time", "uuid", "socket"} == set(), imported
    assert not any(m.startswith("sagas.stores") or m.startswith("sagas.engine.runtime")
                   or m.startswith("sagas.engine.shard") for m in imported), imported


@pytest.mark.parametrize("path", modules("sagas"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sagas_never_import_cli_or_flows(path):
    assert {top(m) for m in runtime_imports(path)} & {"cli", "flows"} == set()


@pytest.mark.parametrize("path", modules("flows"), ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_use_the_public_api_only(path):
    for name in runtime_imports(path):
        if top(name) in ("actors", "sagas"):
            assert name in ("actors", "sagas", "sagas.testing"), f"{path}: imports {name}"


def test_stores_import_only_the_port_and_errors():
    for path in modules("sagas/stores"):
        for name in runtime_imports(path):
            if top(name) == "sagas":
                assert name in ("sagas.errors", "sagas.events") or \
                    name.startswith("sagas.stores"), f"{path}: imports {name}"


def test_public_exports_of_sagas_are_pinned():
    assert sorted(sagas.__all__) == sorted([
        "BadStoreUrl", "CompiledFlow", "DefinitionUnavailable", "Flow", "FlowError",
        "FlowErrors", "FlowWarning", "IdConflict", "InputError", "LeaseLost", "Plan",
        "RetryPolicy",
        "Runtime", "SagaResult", "SagaTimeout", "SagactorError", "SeqConflict", "ServiceSpec",
        "Step", "StoreError", "StoreMissing", "StoreUnavailable", "Submitted", "UnknownSaga",
        "__version__",
        "Delivery", "EventBus", "Subscriber", "Subscription",
        "compile_flow", "load_flow", "parse_flow", "plan", "plans"])
    for name in sagas.__all__:
        assert hasattr(sagas, name)


def test_running_a_saga_does_not_import_hypothesis():
    """Services mark invariants with `sagas.testing.invariant`: that import must stay free."""
    import subprocess
    import sys

    code = ("import sys, flows.shop, flows.bank, flows.travel; from sagas import Runtime; "
            "from sagas.testing import invariant; "
            "assert 'hypothesis' not in sys.modules, 'hypothesis was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _private_parts(name: str) -> list[int]:
    return [i for i, part in enumerate(name.split("."))
            if part.startswith("_") and not part.startswith("__")]


@pytest.mark.parametrize("path", [*modules("sagas"), *modules("actors"), *modules("flows"),
                                  ROOT / "cli.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_packages_private_modules(path):
    """A private module (``_name``) is imported only from inside the package that holds it:
    ``sagas.stores._port`` by ``sagas.stores.*``, never by ``sagas.bus`` or ``cli``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    importer = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    for name in runtime_imports(path):
        for index in _private_parts(name):
            owner = ".".join(name.split(".")[:index])  # the package the private module is in
            assert importer == owner or importer.startswith(owner + "."), \
                f"{importer} imports {name}, private to {owner}"


def _group(name: str) -> str:
    return ".".join(name.split(".")[:2])


@pytest.mark.parametrize("path", [p for p in modules("sagas") if p.parent != ROOT / "sagas"
                                  or p.name != "__init__.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_groups_of_sagas_import_only_the_groups_below_them(path):
    """``sagas/__init__`` is the public face and may import anything; every other module
    belongs to a group (``sagas.language``, ``sagas.engine``, ...) and imports only the groups
    :data:`GROUP_MAY_IMPORT` lists for it."""
    own = _group(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert own in GROUP_MAY_IMPORT, f"{path}: {own} is not a known group of sagas"
    for name in runtime_imports(path):
        other = _group(name)
        if top(name) == "sagas" and other != own and other != "sagas":
            assert other in GROUP_MAY_IMPORT[own], f"{own} imports {name}"


def test_every_module_of_sagas_is_in_a_group():
    loose = sorted(p.name for p in (ROOT / "sagas").glob("*.py"))
    assert loose == ["__init__.py", "audit.py", "errors.py", "events.py"]
