"""PostgreSQL for the bench: probe the server, and a schema of the bench's own per run.

The bench never touches a schema it did not create: it makes `jisr_bench_<random>`, points
the stores at it with the URL's `options=-csearch_path=<schema>` (libpq passes it to the
server; the stores' docs say so), and drops it with everything in it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PROBE_TIMEOUT_S = 3


def probe(url: str) -> str | None:
    """None if a server answers at `url` within PROBE_TIMEOUT_S, else why not."""
    try:
        psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S, autocommit=True).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def with_schema(url: str, schema: str) -> str:
    """`url` with `options=-csearch_path=<schema>` added."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    others = [(k, v) for k, v in query if k != "options"]
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={schema}"])
    encoded = urlencode([*others, ("options", options)], quote_via=quote)
    return urlunsplit(parts._replace(query=encoded))


@contextmanager
def schema(url: str, label: str) -> Iterator[str]:
    """A new, empty schema, dropped (CASCADE) afterwards, whatever happens; yields its URL."""
    name = f"jisr_bench_{label}_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(name)
    with psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    try:
        yield with_schema(url, name)
    finally:
        with psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))


def server_cpu_s() -> float:
    """CPU seconds used so far by every local process named `postgres` (the server and its
    backends, whoever they serve: other sessions' queries count too). 0 if none is local."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / tick
