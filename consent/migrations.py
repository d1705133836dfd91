"""Versioned schema migrations of the consent store, one ordered list per backend.

Each store applies the versions its database lacks when it opens, one migration per
transaction, recording each in `consent_schema_migrations` (prefixed because every Jisr
store may share one PostgreSQL schema, and each keeps its own version line); the runner is
gateway/storage/migrations.py. A database migrated by newer code is refused rather than
misread. Never edit a released migration: append a new version.
"""

from __future__ import annotations

from gateway.storage.migrations import Migration, VersionLine

MIGRATIONS_TABLE = "consent_schema_migrations"

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "consent revisions (append-only), subject index, use counters",
        (
            """
            CREATE TABLE consent_revision (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                consent_id TEXT NOT NULL,
                revision INTEGER NOT NULL CHECK (revision >= 1),
                subject_kind TEXT NOT NULL CHECK (subject_kind IN ('household', 'person')),
                subject TEXT NOT NULL,
                grantor TEXT NOT NULL,
                grantee TEXT NOT NULL,
                purposes TEXT NOT NULL,
                scopes TEXT NOT NULL,
                valid_from INTEGER NOT NULL,
                valid_until INTEGER NOT NULL,
                use_cap_max_uses INTEGER,
                use_cap_period_s INTEGER,
                status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
                collected_by TEXT NOT NULL,
                collection_method TEXT NOT NULL,
                artefact TEXT NOT NULL,
                recorded_at INTEGER NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                UNIQUE (consent_id, revision),
                CHECK ((use_cap_max_uses IS NULL) = (use_cap_period_s IS NULL)),
                CHECK ((revision = 1) = (prev_hash = ''))
            )
            """,
            """
            CREATE INDEX consent_revision_by_subject
                ON consent_revision (subject_kind, subject, grantee)
            """,
            """
            CREATE TRIGGER consent_revision_no_update BEFORE UPDATE ON consent_revision
            BEGIN SELECT RAISE(ABORT, 'consent_revision is append-only: UPDATE refused'); END
            """,
            """
            CREATE TRIGGER consent_revision_no_delete BEFORE DELETE ON consent_revision
            BEGIN SELECT RAISE(ABORT, 'consent_revision is append-only: DELETE refused'); END
            """,
            """
            CREATE TABLE consent_use (
                consent_id TEXT NOT NULL,
                window_start INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (consent_id, window_start)
            ) WITHOUT ROWID
            """,
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "consent revisions (append-only), subject index, use counters",
        (
            # consent_id sorts bytewise (COLLATE "C"), as in SQLite, so pages come in the
            # same order on both backends whatever the database's locale.
            """
            CREATE TABLE consent_revision (
                seq bigserial PRIMARY KEY,
                consent_id text COLLATE "C" NOT NULL,
                revision integer NOT NULL CHECK (revision >= 1),
                subject_kind text NOT NULL CHECK (subject_kind IN ('household', 'person')),
                subject text NOT NULL,
                grantor text NOT NULL,
                grantee text NOT NULL,
                purposes text NOT NULL,
                scopes text NOT NULL,
                valid_from bigint NOT NULL,
                valid_until bigint NOT NULL,
                use_cap_max_uses bigint,
                use_cap_period_s bigint,
                status text NOT NULL CHECK (status IN ('active', 'revoked')),
                collected_by text NOT NULL,
                collection_method text NOT NULL,
                artefact text NOT NULL,
                recorded_at bigint NOT NULL,
                prev_hash text NOT NULL,
                hash text NOT NULL,
                UNIQUE (consent_id, revision),
                CHECK ((use_cap_max_uses IS NULL) = (use_cap_period_s IS NULL)),
                CHECK ((revision = 1) = (prev_hash = ''))
            )
            """,
            """
            CREATE INDEX consent_revision_by_subject
                ON consent_revision (subject_kind, subject, grantee)
            """,
            """
            CREATE FUNCTION consent_revision_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'consent_revision is append-only: % refused', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """,
            """
            CREATE TRIGGER consent_revision_append_only
                BEFORE UPDATE OR DELETE ON consent_revision
                FOR EACH ROW EXECUTE FUNCTION consent_revision_append_only()
            """,
            """
            CREATE TRIGGER consent_revision_no_truncate
                BEFORE TRUNCATE ON consent_revision
                FOR EACH STATEMENT EXECUTE FUNCTION consent_revision_append_only()
            """,
            """
            CREATE TABLE consent_use (
                consent_id text NOT NULL,
                window_start bigint NOT NULL,
                count bigint NOT NULL,
                PRIMARY KEY (consent_id, window_start)
            )
            """,
        ),
    ),
)

SQLITE_LINE = VersionLine("consent", MIGRATIONS_TABLE, SQLITE)
POSTGRES_LINE = VersionLine("consent", MIGRATIONS_TABLE, POSTGRES)
