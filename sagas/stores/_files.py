"""Private files: what a store creates on disk is its user's only.

A store's files hold saga inputs and outputs, so a new file is created ``0600`` and a new
directory ``0700`` whatever the umask, which can only take more away (a stricter umask is
respected, never widened). The modes of files and directories that exist already are never
changed: their owner chose them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_DIRECTORY", "PRIVATE_FILE", "create_private_file", "make_private_dirs"]

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


def make_private_dirs(path: Path) -> None:
    """Create directory ``path`` and its missing parents, each ``0700`` (less under a stricter
    umask); those that exist are left as they are. ``OSError`` if one cannot be made."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIRECTORY)
        except FileExistsError:
            if not os.path.isdir(directory):  # a file, or a dangling link, in the way
                raise


def create_private_file(path: Path) -> bool:
    """Create ``path`` as an empty ``0600`` file (less under a stricter umask) if nothing is
    there; whether it did. An existing file, or a link, is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True
