"""The process a command runs in: its logging and garbage collector, and a stdout whose
reader has gone away."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_process", "silence_stdout"]


def configure_process(debug: bool) -> None:
    """Set up a command's process: the library logs, but a command reports errors as one line
    and an exit code, so logs are shown only with ``debug``; the garbage collector gets the
    thresholds an application that runs sagas wants (:func:`sagas.engine.gc_tuning.tune_gc`)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..engine.gc_tuning import tune_gc

    tune_gc()


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone (``saga list | head -1``), so
    flushing it at exit raises no second ``BrokenPipeError``."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
