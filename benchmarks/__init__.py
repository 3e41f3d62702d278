"""sagactor's benchmark suite (issue 6).

Run it with ``python -m benchmarks [--quick] [--json PATH] [--only S1,S3,...] [--markdown]``.

Every scenario runs in its own subprocess (``python -m benchmarks.child ID``), so its peak RSS is
its own; the parent prints one table — scenario, sagas/s, p50 / p99 latency, peak RSS, ratio to
the bare-pykka baseline measured in the same run — and writes it as JSON. Each scenario checks
that it did its work (side effects counted in the services, statuses, log rows in the durable
stores) and fails loudly otherwise. See BENCHMARKS.md for a run and what the profiles showed.

Modules: :mod:`benchmarks.scenarios` (the registry), :mod:`benchmarks.child` (one scenario in
this process), :mod:`benchmarks._common` (driving and verifying), one module per family
(:mod:`benchmarks.baselines` B0-B1, :mod:`benchmarks.actor_runtime` S1-S4 and S8,
:mod:`benchmarks.harness` S5, :mod:`benchmarks.inflight` S6, :mod:`benchmarks.recovery` S7), and
:mod:`benchmarks.services` with the flows in ``benchmarks/flows/``.
"""
