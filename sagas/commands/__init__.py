"""What the ``saga`` commands do, without the argument parsing and exit codes of ``cli.py``.

Running a batch of sagas with a concurrency limit (:mod:`.batch`), reading inputs
(:mod:`.inputs`), printing timelines, tables and plans (:mod:`.render`), stopping gracefully on
a signal (:mod:`.interrupts`).
"""
