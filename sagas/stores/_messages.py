"""What both SQL backends (SQLite, PostgreSQL) say, in the same words, when a store cannot do
what it is asked: each a :class:`~sagas.errors.StoreUnavailable` of one line that names the
store (its file's path, or its URL with the password masked: whatever the caller passes)."""

from __future__ import annotations

from sagas.errors import StoreUnavailable

__all__ = ["closed", "missing_definition", "registered_elsewhere"]


def closed(store: object) -> StoreUnavailable:
    """The error of a store used once it is closed."""
    return StoreUnavailable(f"saga store {store} is closed")


def missing_definition(store: object, saga_id: str, sha256: str) -> StoreUnavailable:
    """The error for a saga whose definition (flow text) is missing."""
    return StoreUnavailable(
        f"saga store {store} is damaged: the definition {sha256} of saga {saga_id!r} is missing"
    )


def registered_elsewhere(store: object, owner: str) -> StoreUnavailable:
    """The error of ``register_owner`` for an owner a live runtime registered."""
    return StoreUnavailable(
        f"saga store {store}: owner {owner!r} is already registered by a live runtime"
    )
