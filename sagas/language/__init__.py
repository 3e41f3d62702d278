"""The flow language: what a flow says and how it becomes a state machine.

YAML text (:mod:`._yaml`) is read and checked by the loader (:mod:`.loader`) into the model
(:mod:`.model`: a ``Flow`` of steps, choices with their conditions (:mod:`.conditions`) and
``$.`` paths (:mod:`.paths`)); the compiler (:mod:`.compiler`) turns a flow into a
``CompiledFlow``: its state machine and routes, from which :mod:`.plan` says what each failure
would undo and :mod:`.graph` draws the diagram. :mod:`.service_classes` resolves the
``module:Class`` a flow names. Nothing here starts a thread or touches a store.
"""
