"""Services in other processes: the wire protocol over Redis Streams (:mod:`.protocol`), the
worker that hosts services for orchestrators elsewhere, and the orchestrator's side of it."""
