"""``open_store(url, create=False)`` opens only a store that exists (issue 13): a read-only
command on a mistyped path says ``no saga store at PATH`` (exit code 5) and creates nothing —
no directory, no file, no -wal or -shm."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sagas.errors import StoreMissing, StoreUnavailable
from sagas.stores import MemoryStore, SqliteStore, open_store
from sagas.stores.contract import JOIN_TIMEOUT, new_saga


def _tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _missing(url: str) -> StoreMissing:
    with pytest.raises(StoreMissing) as caught:
        open_store(url, create=False)
    return caught.value


def test_a_store_in_a_directory_that_does_not_exist_is_missing_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    path = tmp_path / "no" / "such" / "dir" / "x.db"
    error = _missing(f"sqlite:///{path}")
    assert str(error) == f"no saga store at {path}"
    assert isinstance(error, StoreUnavailable)  # the CLI's exit 5
    assert error.path == str(path)
    assert _tree(tmp_path) == []


def test_a_missing_file_in_a_directory_that_exists_is_missing_and_nothing_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".saga").mkdir()
    assert str(_missing("sqlite:///.saga/sagas.db")) == "no saga store at .saga/sagas.db"
    assert _tree(tmp_path) == [".saga"]


def test_an_empty_file_is_no_store_and_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"")
    _missing(f"sqlite:///{path}")
    assert _tree(tmp_path) == ["x.db"] and path.read_bytes() == b""


def test_an_existing_store_opens_as_usual(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
    store = open_store(f"sqlite:///{path}?synchronous=full", create=False)
    try:
        assert isinstance(store, SqliteStore) and store.synchronous == "full"
        assert [h.saga_id for h in store.list()] == ["s"]
    finally:
        store.close()
    with pytest.raises(StoreUnavailable, match="directory"):
        open_store(f"sqlite:///{tmp_path}", create=False)  # there, but no store: not "missing"


def test_memory_is_unaffected() -> None:
    assert isinstance(open_store("memory://", create=False), MemoryStore)


def test_creating_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "new" / "x.db"
    open_store(f"sqlite:///{path}").close()
    assert path.is_file()


def test_sqlite_never_recreates_a_file_deleted_while_the_store_is_open(tmp_path: Path) -> None:
    # every connection opens the file with mode=rw: a thread's new read connection finds it
    # gone and says so, rather than starting an empty database in its place
    path = tmp_path / "x.db"
    failures: list[BaseException] = []

    def read() -> None:
        try:
            store.list()
        except BaseException as err:
            failures.append(err)

    with SqliteStore(path) as store:
        store.create(new_saga("s"))
        for name in os.listdir(tmp_path):
            if name.startswith("x.db") and name != "x.db.owners":
                os.unlink(tmp_path / name)
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(JOIN_TIMEOUT)
        assert [type(e) for e in failures] == [StoreUnavailable]
        assert "cannot be opened" in str(failures[0])
        assert _tree(tmp_path) == []
    assert _tree(tmp_path) == []
