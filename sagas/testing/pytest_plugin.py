"""A pytest plugin (registered on install): the ``saga_env`` fixture.

::

    def test_out_of_stock(saga_env):
        result = saga_env.run("flows/order_inventory.yaml", {...})
        assert result.status == "compensated"

``saga_env`` is a :class:`~sagas.testing.SagaTestEnvironment` on the memory store, closed after
the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._environment import SagaTestEnvironment


@pytest.fixture
def saga_env() -> Iterator[SagaTestEnvironment]:
    """A runtime on virtual time with fault injection (``saga_env.faults``)."""
    with SagaTestEnvironment() as env:
        yield env
