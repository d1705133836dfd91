"""The one storage layer under the consent and audit stores.

- `sqlite.py`: an SQLite file in WAL mode shared by threads and processes (pooled readers,
  writers serialised under one process lock, read-only opens that create nothing);
- `postgres.py`: the PostgreSQL connection pool, failing fast while the database is down
  and serving again soon after it returns;
- `migrations.py`: versioned schema migrations, one runner for every store and backend.

It knows nothing of what is stored: the stores (consent/, gateway/audit/) bring their
tables, statements and migrations. So it imports only the standard library and the
PostgreSQL driver, and `postgres.py` only when a store uses PostgreSQL (an embedded
deployment never loads the driver).
"""
