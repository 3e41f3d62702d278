"""Test-wide configuration: hypothesis profiles, nothing else.

``ci`` is loaded when the ``CI`` environment variable is set: 300 examples per property (the
properties of ``test_flow_loader_any_text.py`` set their own 2,000 under CI, see
``FUZZ_EXAMPLES`` there). ``dev`` (the default) keeps the suite fast locally.
``HYPOTHESIS_PROFILE=name`` overrides the choice. A test that needs its own budget sets
``@settings(max_examples=...)``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

# Installed, the package registers its pytest plugin (the `saga_env` fixture) by entry point;
# importing the fixture here makes it available from a plain checkout too.
from sagas.testing.pytest_plugin import saga_env  # noqa: E402, F401
