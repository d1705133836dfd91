"""Databases for store tests and the bench: an SQLite file, or a fresh PostgreSQL schema
per test (or per bench step).

The rule for PostgreSQL: with `CI=true` its tests must run, and a server that does not
answer is a failure (a silent skip would let CI pass without ever testing the backend
production uses). Elsewhere they are skipped, saying why, only when no server answers at
`JISR_TEST_DATABASE_URL` (default below).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from consent.model import ConsentRecord
from consent.store import ConsentStore, open_store
from consent.store_common import COLUMN_LIST, COLUMNS, to_row
from gateway.storage.postgres import describe
from tests.support import processes

URL_ENV = "JISR_TEST_DATABASE_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PROBE_TIMEOUT_S = 3


class PostgresUnavailableError(RuntimeError):
    """CI requires PostgreSQL and none answers."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def configured_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


@functools.cache
def probe(url: str) -> str | None:
    """None if a server answers at `url`, else why not (probed once per URL and session)."""
    try:
        psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S, autocommit=True).close()
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def postgres_url() -> str | None:
    """The test server's URL; None if none answers, except in CI where that raises."""
    url = configured_url()
    error = probe(url)
    if error is None:
        return url
    if in_ci():
        raise PostgresUnavailableError(
            f"CI=true: PostgreSQL tests must run, but no server answers at {describe(url)} "
            f"({URL_ENV}): {error}"
        )
    return None


def require_postgres() -> str:
    """For fixtures: the server's URL, else skip with the reason (fail in CI)."""
    try:
        url = postgres_url()
    except PostgresUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    if url is None:
        pytest.skip(
            f"no PostgreSQL answers at {describe(configured_url())}: set {URL_ENV} "
            "or start a server (with CI=true this is a failure, not a skip)"
        )
    return url


def with_schema(url: str, schema: str) -> str:
    """`url` with `options=-csearch_path=<schema>` added (libpq passes it to the server)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    others = [(k, v) for k, v in query if k != "options"]
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={schema}"])
    encoded = urlencode([*others, ("options", options)], quote_via=quote)
    return urlunsplit(parts._replace(query=encoded))


@contextmanager
def postgres_schema(url: str | None = None, prefix: str = "jisr_test") -> Iterator[str]:
    """A new, empty schema `<prefix>_<random>` on the test server (or `url`'s), dropped
    with everything in it afterwards, whatever happens; yields its URL."""
    base = url or require_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    name = sql.Identifier(schema)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    try:
        yield with_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


@dataclass
class ConsentDatabase:
    """One consent database under test, and direct SQL on it (what a DBA, or an attacker
    with database access, could do behind the store's back)."""

    backend: str  # "sqlite" or "postgresql"
    data_dir: Path
    url: str | None  # None for SQLite
    stores: list[ConsentStore] = field(default_factory=list)

    def open(self) -> ConsentStore:
        """A new store on this database, as another gateway process would open it."""
        store = open_store(self.url, self.data_dir)
        self.stores.append(store)
        return store

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (placeholders `?` on both backends)."""
        if self.url is None:
            conn = sqlite3.connect(self.data_dir / "consent.sqlite", isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def load(self, records: Sequence[ConsentRecord]) -> None:
        """Insert `records` in one transaction behind the store's back (its schema made by
        a store), then on PostgreSQL ANALYZE, as autovacuum would gather on a large table."""
        rows = [to_row(r) for r in records]
        if self.url is None:
            marks = ", ".join("?" * len(COLUMNS))
            insert = f"INSERT INTO consent_revision ({COLUMN_LIST}) VALUES ({marks})"
            with closing(sqlite3.connect(self.data_dir / "consent.sqlite")) as conn, conn:
                conn.executemany(insert, rows)
            return
        copy_in = f"COPY consent_revision ({COLUMN_LIST}) FROM STDIN"
        with psycopg.connect(self.url) as pg, pg.cursor() as cur, cur.copy(copy_in) as copy:
            for row in rows:
                copy.write_row(row)
        self.sql("ANALYZE consent_revision")

    def bypass_append_only(self) -> None:
        """Disable the triggers that refuse UPDATE and DELETE of a revision."""
        if self.url is None:
            self.sql("DROP TRIGGER consent_revision_no_update")
            self.sql("DROP TRIGGER consent_revision_no_delete")
        else:
            self.sql("ALTER TABLE consent_revision DISABLE TRIGGER USER")

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


@contextmanager
def consent_database(backend: str, data_dir: Path) -> Iterator[ConsentDatabase]:
    """An empty consent database of that backend; its stores are closed afterwards."""
    if backend == "sqlite":
        db = ConsentDatabase(backend, data_dir, None)
        try:
            yield db
        finally:
            db.close()
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    with postgres_schema() as url:
        db = ConsentDatabase(backend, data_dir, url)
        try:
            yield db
        finally:
            db.close()


def target_of(url: str) -> tuple[str, int]:
    """The (host, port) a PostgreSQL URL connects to (for a test's TCP proxy)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    return str(params.get("host") or "localhost"), int(params.get("port") or 5432)


def through(url: str, host: str, port: int) -> str:
    """`url` connecting to host:port instead, user, database and options unchanged (to put
    a test's TCP proxy between a store and the server)."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def gateway_on(
    backend: str,
    registry_dir: Path,
    pki_dir: Path,
    folder: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[processes.Proc, str | None]]:
    """`processes.serve` with its stores on `backend` ("sqlite" files in `folder`/state, or a
    fresh PostgreSQL schema): the gateway and the schema's URL (None for SQLite), the
    gateway stopped before its schema is dropped."""
    with for_backend(backend) as url:
        more = {"JISR_DATABASE_URL": url} if url else {}
        proc = processes.serve(registry_dir, pki_dir, folder, *args, env={**(env or {}), **more})
        try:
            yield proc, url
        finally:
            proc.stop()


def for_backend(backend: str) -> AbstractContextManager[str | None]:
    """A fresh PostgreSQL schema's URL for "postgresql", None (SQLite files) otherwise: the
    `with` of a fixture parametrised over both stores."""
    return postgres_schema() if backend == "postgresql" else nullcontext()


class _Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_Closable)


@dataclass
class StoreDatabase(Generic[S]):
    """One store's database under test (an SQLite file in `state_dir`, or the PostgreSQL
    schema of `url`), the stores opened on it as gateway processes would, and direct SQL
    on it (what a DBA, or an attacker with database access, could do behind their back)."""

    backend: str  # "sqlite" or "postgresql"
    state_dir: Path
    url: str | None  # None for SQLite
    opener: Callable[[str | None, Path], S]
    file_name: str  # the SQLite file in state_dir
    stores: list[S] = field(default_factory=list)

    def open(self) -> S:
        """A new store on this database, as another gateway process would open it."""
        store = self.opener(self.url, self.state_dir)
        self.stores.append(store)
        return store

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (placeholders `?` on both backends)."""
        if self.url is None:
            conn = sqlite3.connect(self.state_dir / self.file_name, isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


@contextmanager
def store_database(
    backend: str, state_dir: Path, opener: Callable[[str | None, Path], S], file_name: str
) -> Iterator[StoreDatabase[S]]:
    """A store's database on `backend` (a fresh PostgreSQL schema, or SQLite files in
    `state_dir`), its stores closed at the end: the body of a fixture parametrised over
    both backends."""
    with for_backend(backend) as url:
        database = StoreDatabase(backend, state_dir, url, opener, file_name)
        try:
            yield database
        finally:
            database.close()
