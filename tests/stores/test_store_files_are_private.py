"""Everything a SQLite store creates on disk is its user's only (issue 13): directories 0700,
files 0600 (the database, its -wal and -shm, lock files), under any umask; a stricter umask
is respected, and the modes of what exists already are never changed.

The umask is per process: each case runs in a child Python process, so this one's is left
alone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sagas.stores import SqliteStore
from sagas.stores.contract import JOIN_TIMEOUT, new_saga

ROOT = Path(__file__).resolve().parents[2]

OPEN_AND_WRITE = """
import json, os, sys
from pathlib import Path
from sagas.stores import open_store

db, root, umask = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3], 8)
os.umask(umask)

def modes():
    found = {}
    for where, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(where, name)
            found[os.path.relpath(path, root)] = os.stat(path).st_mode
    return found

store = open_store(f"sqlite:///{db}")
store.register_owner("rt")
store.send_event("Paid", "o-1", {"n": 1}, sent_at=1.0)  # a write: -wal and -shm
open_ = modes()
store.close()
print(json.dumps({"open": open_, "closed": modes()}))
"""

HELPERS = """
import json, os, sys
from pathlib import Path
from sagas.stores._files import create_private_file, make_private_dirs

root, umask = Path(sys.argv[1]), int(sys.argv[2], 8)
os.umask(umask)
make_private_dirs(root / "a" / "b")
create_private_file(root / "a" / "b" / "f")
print(json.dumps({name: os.stat(root / name).st_mode for name in ("a", "a/b", "a/b/f")}))
"""


def _run(script: str, *args: object) -> dict[str, int]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=JOIN_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


def _modes(found: dict[str, int]) -> dict[str, str]:
    """Each path's kind and permission bits, e.g. ``"dir 0o700"``."""
    return {
        path: f"{'dir' if stat.S_ISDIR(mode) else 'file'} {oct(stat.S_IMODE(mode))}"
        for path, mode in found.items()
    }


@pytest.mark.parametrize("umask", ["022", "002", "000", "077"])
def test_every_file_of_a_new_store_is_0600_and_every_directory_0700(
    tmp_path: Path, umask: str
) -> None:
    found = _run(OPEN_AND_WRITE, tmp_path / "new" / "a" / "s.db", tmp_path, umask)
    assert _modes(found["open"]) == {
        "new": "dir 0o700",
        "new/a": "dir 0o700",
        "new/a/s.db": "file 0o600",
        "new/a/s.db-wal": "file 0o600",
        "new/a/s.db-shm": "file 0o600",
        "new/a/s.db.owners": "dir 0o700",
        "new/a/s.db.owners/rt.lock": "file 0o600",
    }
    assert _modes(found["closed"]) == {
        "new": "dir 0o700",
        "new/a": "dir 0o700",
        "new/a/s.db": "file 0o600",
        "new/a/s.db.owners": "dir 0o700",
    }


def test_files_sqlite_makes_later_are_private_whoever_opens_the_store(tmp_path: Path) -> None:
    # -wal and -shm go when the last connection closes and come back with the next: SQLite
    # gives them the database file's mode, whatever the umask of the process that opens it
    path = tmp_path / "s.db"
    _run(OPEN_AND_WRITE, path, tmp_path, "022")
    found = _run(OPEN_AND_WRITE, path, tmp_path, "000")
    assert set(_modes(found["open"]).values()) == {"file 0o600", "dir 0o700"}
    assert {"s.db-wal", "s.db-shm", "s.db.owners/rt.lock"} <= set(found["open"])


def test_a_stricter_umask_is_respected(tmp_path: Path) -> None:
    assert _modes(_run(HELPERS, tmp_path, "277")) == {
        "a": "dir 0o500",
        "a/b": "dir 0o500",
        "a/b/f": "file 0o400",
    }


def test_the_modes_of_what_exists_are_kept(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
    (shared / "s.db.owners").mkdir()
    for where, mode in ((shared, 0o755), (path, 0o640), (shared / "s.db.owners", 0o750)):
        where.chmod(mode)
    found = _run(OPEN_AND_WRITE, path, tmp_path, "022")
    assert _modes(found["open"]) == {
        "shared": "dir 0o755",
        "shared/s.db": "file 0o640",
        "shared/s.db-wal": "file 0o640",  # SQLite's rule: the database file's mode
        "shared/s.db-shm": "file 0o640",
        "shared/s.db.owners": "dir 0o750",
        "shared/s.db.owners/rt.lock": "file 0o600",  # new: private
    }


def test_a_store_is_created_where_a_link_points(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "s.db").symlink_to(tmp_path / "data" / "s.db")
    found = _run(OPEN_AND_WRITE, tmp_path / "s.db", tmp_path, "022")
    assert _modes(found["closed"])["data/s.db"] == "file 0o600"
    with SqliteStore(tmp_path / "data" / "s.db") as store:
        assert store.events_after()[0].key == "o-1"
