"""Versioned schema migrations of the audit store, one ordered list per backend.

Each store applies the versions its database lacks when it opens, one migration per
transaction, recording each in `audit_schema_migrations` (prefixed because the consent
store, and any other Jisr store, may share one PostgreSQL schema, each with its own version
line); the runner is gateway/storage/migrations.py. A database migrated by newer code is
refused rather than misread. Never edit a released migration: append a new version (for
both backends). docs/audit-storage.md explains the tables.
"""

from __future__ import annotations

from gateway.storage.migrations import Migration, VersionLine

MIGRATIONS_TABLE = "audit_schema_migrations"

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "audit records (append-only but for pruning), subject index, checkpoints",
        (
            # A rowid table (rows with many subjects are large); (node, seq) is the chain.
            """
            CREATE TABLE audit_record (
                node TEXT NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 1),
                at_us INTEGER NOT NULL,
                trace_id TEXT NOT NULL,
                requester TEXT NOT NULL,
                requester_sub TEXT NOT NULL,
                method TEXT NOT NULL,
                purpose TEXT NOT NULL,
                basis TEXT NOT NULL,
                subjects TEXT NOT NULL,
                fields TEXT NOT NULL,
                decision TEXT NOT NULL,
                reason TEXT NOT NULL,
                rh TEXT NOT NULL,
                sh TEXT NOT NULL,
                jti TEXT NOT NULL,
                part INTEGER NOT NULL,
                latency_us INTEGER NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (node, seq)
            )
            """,
            # The cross-replica replay check: a second use of (requester, jti, part) fails.
            """
            CREATE UNIQUE INDEX audit_record_replay
                ON audit_record (requester, jti, part) WHERE jti <> ''
            """,
            "CREATE INDEX audit_record_by_time ON audit_record (at_us, node, seq)",
            """
            CREATE INDEX audit_record_by_requester
                ON audit_record (requester, at_us, node, seq)
            """,
            """
            CREATE INDEX audit_record_by_trace
                ON audit_record (trace_id) WHERE trace_id <> ''
            """,
            # "Who looked at my household": one row per distinct subject of a record, keyed
            # by the subject's 64-bit key (store_common.subject_key), not its 64-character
            # text: a third of the size and of the insert cost (bulk batches name thousands
            # of subjects per record). Queries re-check the record's subjects for the text.
            """
            CREATE TABLE audit_subject (
                subject_key INTEGER NOT NULL,
                node TEXT NOT NULL,
                seq INTEGER NOT NULL,
                PRIMARY KEY (subject_key, node, seq)
            ) WITHOUT ROWID
            """,
            # Holds a row only inside a prune transaction: the one time DELETE is allowed.
            "CREATE TABLE audit_pruning (active INTEGER NOT NULL)",
            """
            CREATE TRIGGER audit_record_no_update BEFORE UPDATE ON audit_record
            BEGIN SELECT RAISE(ABORT, 'audit_record is append-only: UPDATE refused'); END
            """,
            """
            CREATE TRIGGER audit_record_no_delete BEFORE DELETE ON audit_record
            WHEN NOT EXISTS (SELECT 1 FROM audit_pruning)
            BEGIN SELECT RAISE(ABORT, 'audit_record is append-only: DELETE refused'); END
            """,
            """
            CREATE TABLE audit_checkpoint (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                node TEXT NOT NULL,
                seq INTEGER NOT NULL,
                hash TEXT NOT NULL,
                at_us INTEGER NOT NULL,
                kind TEXT NOT NULL,
                first_seq INTEGER NOT NULL,
                first_prev_hash TEXT NOT NULL,
                signature TEXT NOT NULL
            )
            """,
            "CREATE INDEX audit_checkpoint_by_node ON audit_checkpoint (node, id)",
            """
            CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
            BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only: UPDATE refused'); END
            """,
            """
            CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
            BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only: DELETE refused'); END
            """,
        ),
    ),
    # Searches by decision (a DPO's or the regulator's "refusals", with or without a
    # reason), newest first: without it they scanned audit_record_by_time and filtered,
    # the whole trail for a rare reason (p95 0.44 s for the console's search at 1,000,000
    # records; bench/audit_search.py, docs/performance.md).
    Migration(
        2,
        "audit records by decision, newest first",
        ("CREATE INDEX audit_record_by_decision ON audit_record (decision, at_us, node, seq)",),
    ),
    # A checkpoint signs the Merkle root of the records since the writer's previous one,
    # so that one record's inclusion is proved without the others (docs/audit-format.md
    # §9); the proof looks up the checkpoint that covers a seq.
    Migration(
        3,
        "checkpoints sign a Merkle root of their records",
        (
            "ALTER TABLE audit_checkpoint ADD COLUMN root TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE audit_checkpoint ADD COLUMN root_first INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX audit_checkpoint_by_seq ON audit_checkpoint (node, seq)",
            "CREATE INDEX audit_checkpoint_by_tree ON audit_checkpoint (node, root_first)"
            " WHERE root <> ''",
        ),
    ),
    # The subject index in two tiers: a batch of 1,000 households put 1,000 random keys
    # into an index of millions, a page written for each, which cost more than the rest
    # of the batch and grew with the trail. New rows go to a small table whose pages stay
    # few, moved into the large one in key order now and then (store_common.MERGE_ROWS),
    # so that each of its pages is written once for many rows; searches read both.
    Migration(
        4,
        "the subject index's recent tier",
        (
            """
            CREATE TABLE audit_subject_recent (
                subject_key INTEGER NOT NULL,
                node TEXT NOT NULL,
                seq INTEGER NOT NULL,
                PRIMARY KEY (subject_key, node, seq)
            ) WITHOUT ROWID
            """,
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "audit records (append-only but for pruning), subject index, checkpoints",
        (
            # Text that is sorted or paged on is COLLATE "C" (bytewise, as in SQLite), so
            # both backends return the same order whatever the database's locale.
            """
            CREATE TABLE audit_record (
                node text COLLATE "C" NOT NULL,
                seq bigint NOT NULL CHECK (seq >= 1),
                at_us bigint NOT NULL,
                trace_id text NOT NULL,
                requester text COLLATE "C" NOT NULL,
                requester_sub text NOT NULL,
                method text NOT NULL,
                purpose text NOT NULL,
                basis text NOT NULL,
                subjects text NOT NULL,
                fields text NOT NULL,
                decision text NOT NULL,
                reason text NOT NULL,
                rh text NOT NULL,
                sh text NOT NULL,
                jti text COLLATE "C" NOT NULL,
                part integer NOT NULL,
                latency_us bigint NOT NULL,
                prev_hash text NOT NULL,
                hash text NOT NULL,
                PRIMARY KEY (node, seq)
            )
            """,
            """
            CREATE UNIQUE INDEX audit_record_replay
                ON audit_record (requester, jti, part) WHERE jti <> ''
            """,
            "CREATE INDEX audit_record_by_time ON audit_record (at_us, node, seq)",
            """
            CREATE INDEX audit_record_by_requester
                ON audit_record (requester, at_us, node, seq)
            """,
            """
            CREATE INDEX audit_record_by_trace
                ON audit_record (trace_id) WHERE trace_id <> ''
            """,
            """
            CREATE TABLE audit_subject (
                subject_key bigint NOT NULL,
                node text COLLATE "C" NOT NULL,
                seq bigint NOT NULL,
                PRIMARY KEY (subject_key, node, seq)
            )
            """,
            # store_common.subject_key in SQL (pruning finds index rows from records'
            # subjects).
            """
            CREATE FUNCTION audit_subject_key(subject text) RETURNS bigint
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
                SELECT ('x' || left(encode(sha256(convert_to(subject, 'UTF8')), 'hex'), 16))
                    ::bit(64)::bigint
            $$
            """,
            # Statement-level guards (one check per statement, not per row): UPDATE and
            # TRUNCATE are always refused, DELETE unless the transaction did
            # SET LOCAL jisr.pruning = 'on' (what prune_before does).
            """
            CREATE FUNCTION audit_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_record'
                        AND coalesce(current_setting('jisr.pruning', true), '') = 'on' THEN
                    RETURN NULL;
                END IF;
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """,
            """
            CREATE TRIGGER audit_record_append_only
                BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_record
                FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()
            """,
            """
            CREATE TABLE audit_checkpoint (
                id bigserial PRIMARY KEY,
                node text COLLATE "C" NOT NULL,
                seq bigint NOT NULL,
                hash text NOT NULL,
                at_us bigint NOT NULL,
                kind text NOT NULL,
                first_seq bigint NOT NULL,
                first_prev_hash text NOT NULL,
                signature text NOT NULL
            )
            """,
            "CREATE INDEX audit_checkpoint_by_node ON audit_checkpoint (node, id)",
            """
            CREATE TRIGGER audit_checkpoint_append_only
                BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoint
                FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()
            """,
        ),
    ),
    # As SQLite's version 2 (the planner took a parallel scan of the table and a sort).
    Migration(
        2,
        "audit records by decision, newest first",
        ("CREATE INDEX audit_record_by_decision ON audit_record (decision, at_us, node, seq)",),
    ),
    # As SQLite's version 3.
    Migration(
        3,
        "checkpoints sign a Merkle root of their records",
        (
            "ALTER TABLE audit_checkpoint ADD COLUMN root text NOT NULL DEFAULT ''",
            "ALTER TABLE audit_checkpoint ADD COLUMN root_first bigint NOT NULL DEFAULT 0",
            "CREATE INDEX audit_checkpoint_by_seq ON audit_checkpoint (node, seq)",
            "CREATE INDEX audit_checkpoint_by_tree ON audit_checkpoint (node, root_first)"
            " WHERE root <> ''",
        ),
    ),
    # As SQLite's version 4.
    Migration(
        4,
        "the subject index's recent tier",
        (
            """
            CREATE TABLE audit_subject_recent (
                subject_key bigint NOT NULL,
                node text COLLATE "C" NOT NULL,
                seq bigint NOT NULL,
                PRIMARY KEY (subject_key, node, seq)
            )
            """,
        ),
    ),
)

SQLITE_LINE = VersionLine("audit", MIGRATIONS_TABLE, SQLITE)
POSTGRES_LINE = VersionLine("audit", MIGRATIONS_TABLE, POSTGRES)
