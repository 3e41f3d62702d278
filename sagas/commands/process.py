"""The process a command runs in: its logging and garbage collector, and a stdout whose
reader has gone away."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_process", "silence_stdout"]


LOG_FORMAT = "human"
"""The command's log format (``--log-format``), as :func:`configure_process` set it."""


def configure_process(debug: bool, log_format: str = "human") -> None:
    """Set up a command's process: the library logs, but a command reports errors as one line
    and an exit code, so human logs are shown only with ``debug``; ``json`` logs (one object a
    line on stderr, the sagas' events included: :mod:`sagas.observe.logs`) are on at INFO. The
    garbage collector gets the thresholds an application that runs sagas wants
    (:func:`sagas.engine.gc_tuning.tune_gc`)."""
    global LOG_FORMAT
    from ..observe.logs import configure_logging

    LOG_FORMAT = log_format
    level = logging.DEBUG if debug else logging.INFO if log_format == "json" else \
        logging.CRITICAL
    configure_logging(log_format, level)
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
