"""Where hypothesis keeps its files when ``saga test`` runs: not the working directory."""

from __future__ import annotations

__all__ = ["private_hypothesis_home"]


def private_hypothesis_home() -> None:
    """Hypothesis keeps caches (e.g. unicode tables) in ``.hypothesis/`` under the working
    directory: point it at the user's cache directory instead."""
    import os
    from pathlib import Path

    from hypothesis import configuration

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = Path(base) / "sagactor" / "hypothesis"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="sagactor-hypothesis-"))
    configuration.set_hypothesis_home_dir(str(home))
