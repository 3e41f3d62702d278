"""The engine: what runs sagas.

The pure core (:mod:`.core`) decides, event by event, what a saga does next; shards
(:mod:`.shard`) are the actors that own sagas, commit their events to the store and send
commands; the runtime (:mod:`.runtime`) wires shards, services (:mod:`.services`), triggers
(:mod:`.triggers`) and the event bus together and is the API (``sagas.Runtime``).
"""
