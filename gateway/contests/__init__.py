"""Contest cases: a citizen contests one access that the audit trail recorded.

Law 09-08 has the accessing institution's DPO answer a citizen's request and the CNDP
receive complaints; a contest case carries one such request from the citizen's portal to
the DPO and, failing an answer or an answer the citizen accepts, to the CNDP.

- `cases.py`: the state machine, pure (who may do what to a case, and when);
- `store.py`, `store_sqlite.py`, `store_postgres.py`, `migrations.py`: where cases and
  their append-only histories are kept, on SQLite or PostgreSQL.

It imports only gateway.base and gateway.storage: the services, the console and the portal
call it, never the other way round.
"""
