"""The memory store's ownership (:class:`~sagas.stores.Ownership`): an owner is alive while
it is registered on this store object, until :meth:`~sagas.stores.SagaStore.close`; any other
owner is dead."""

from __future__ import annotations

from collections.abc import Sequence

from sagas.stores._checks import check_owner as _check_owner
from sagas.stores._port import TERMINAL

from ._state import _OWNER, _SAGA_ID, _age, _ids, _Saga, _State, _with_owner


class _Ownership(_State):
    """The owners registered on this store object: a set of ids."""

    def __init__(self) -> None:
        super().__init__()
        self._owners: set[str] = set()

    def _forget(self) -> None:
        super()._forget()
        self._owners.clear()

    def register_owner(self, owner: str) -> None:
        _check_owner(owner)
        with self._lock:
            self._check_open()
            self._owners.add(owner)

    def owner_alive(self, owner: str) -> bool:
        """Whether ``owner`` is registered on this store object."""
        _check_owner(owner)
        with self._lock:
            self._check_open()
            return owner in self._owners

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> list[str]:
        """Takes the sagas whose owner is unset or not registered on this store object."""
        _check_owner(owner)
        wanted = None if saga_ids is None else set(_ids(saga_ids))
        with self._lock:
            self._check_open()
            live = self._owners | {owner}
            sagas = self._sagas
            adopted: list[_Saga] = []
            for status, ids in self._by_status.items():
                if status in TERMINAL and not (include_failed and status == "failed"):
                    continue
                for saga_id in ids if wanted is None else ids.keys() & wanted:
                    entry = sagas[saga_id]
                    if entry[_OWNER] is None or entry[_OWNER] not in live:
                        sagas[saga_id] = _with_owner(entry, owner)
                        adopted.append(entry)
        adopted.sort(key=_age)
        return [e[_SAGA_ID] for e in adopted]
