"""The public surface of ``actors``: pinned exports, py.typed, and the layering rule."""

from __future__ import annotations

import ast
from pathlib import Path

import actors

PACKAGE = Path(actors.__file__).parent

EXPORTS = {
    # services
    "Service", "handles", "subscribes", "Rejected",
    # messages
    "Command", "Reply", "Replies", "Deliver", "StoredReply", "Teller", "Phase", "Outcome",
    "freeze", "thaw", "action_key", "compensation_key", "check_topics",
    # fast JSON for message bodies
    "dumps_compact", "loads_compact",
    # mailboxes
    "fast_inbox",
    # inbox
    "InboxStore", "MemoryInbox", "Dispatcher",
    # pools and supervision
    "ServicePool", "DeadLetters", "DeadLetter",
    # faults
    "Fault", "FaultInjector", "FaultKind", "Faults",
    # time
    "Clock", "SystemClock", "VirtualClock", "Scheduler", "TimerHandle", "ThreadScheduler",
    "VirtualScheduler", "make_scheduler",
    # quiescence
    "Activity", "CountingRef",
    # errors
    "ActorError", "ServiceDefinitionError", "ActorUnavailable", "CallTimeout", "CallFailed",
    "SchedulerStopped", "SettleTimeout",
}  # fmt: skip


def test_all_is_pinned():
    assert set(actors.__all__) == EXPORTS
    assert len(actors.__all__) == len(EXPORTS)


def test_every_export_resolves():
    for name in actors.__all__:
        assert getattr(actors, name) is not None, name


def test_py_typed_marker_is_shipped():
    assert (PACKAGE / "py.typed").is_file()


def test_errors_share_one_root():
    for name in (
        "ServiceDefinitionError",
        "ActorUnavailable",
        "CallTimeout",
        "CallFailed",
        "SchedulerStopped",
        "SettleTimeout",
    ):
        assert issubclass(getattr(actors, name), actors.ActorError), name
    assert issubclass(actors.CallTimeout, TimeoutError)
    assert not issubclass(actors.Rejected, actors.ActorError)  # raised by users, not by us


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_actors_imports_nothing_of_the_layers_above():
    for path in sorted(PACKAGE.glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            assert top not in {"sagas", "flows", "cli"}, f"{path.name} imports {module}"


def test_every_module_uses_postponed_annotations():
    for path in sorted(PACKAGE.glob("*.py")):
        assert "from __future__ import annotations" in path.read_text(), path.name


def test_modules_are_private_behind_the_package():
    public = [p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("_")]
    assert public == []
