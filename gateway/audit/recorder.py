"""Turns what the exchange knows into audit records, and waits until each is durable.

Subjects are hashed here with the gateway's audit key: the raw IDCS or household id never
reaches the writer, the store, or a DPO's screen.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.audit.record import AuditRecord, subject_hash
from gateway.audit.writer import APPEND_TIMEOUT_S, AuditWriter, Pending

KEY_FILE = "audit.key"
MALFORMED = "malformed:"  # prefix of the hash of an identifier that is not well formed


def load_or_create_key(pki_dir: Path) -> bytes:
    """The gateway's audit HMAC key (32 random bytes, 0600), created on first start."""
    path = pki_dir / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 32:
        raise ValueError(f"{path}: an audit key is at least 32 bytes")
    return key


class AuditRecorder:
    """One gateway process's access to its audit chain."""

    def __init__(
        self, writer: AuditWriter, key: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        self.writer = writer
        self._key = key
        self._clock = clock

    def subjects(self, keys: Iterable[tuple[str, str]]) -> tuple[str, ...]:
        """Keyed hashes of ("idcs" | "household_id", value) pairs, deduplicated, sorted."""
        # Deduplicated before hashing: a batch names most households it then reads.
        return tuple(sorted({subject_hash(self._key, kind, value) for kind, value in set(keys)}))

    def subject(self, kind: str, value: str) -> str:
        return subject_hash(self._key, kind, value)

    def malformed(self, kind: str, text: str) -> str:
        """The keyed hash of an identifier that is not well formed, marked as such.

        A probe with a mistyped or made-up id is still a probe: the record names it, by
        the hash of its raw text (under another label than a valid id's, so the two can
        never be confused), prefixed `malformed:`."""
        return MALFORMED + subject_hash(self._key, f"raw-{kind}", text)

    def record(self, **fields: Any) -> str:
        """Append one record and return its id once durable (AuditUnavailable otherwise)."""
        pending = self.submit(**fields)
        pending.wait(APPEND_TIMEOUT_S)
        return pending.outcome().record_id

    def submit(
        self,
        *,
        requester: str,
        sub: str,
        method: str,
        purpose: str,
        basis: str,
        subjects: tuple[str, ...],
        fields: tuple[str, ...],
        decision: str,
        reason: str,
        rh: str,
        sh: str,
        jti: str,
        part: int,
        started: float,
        trace_id: str = "",
    ) -> Pending:
        """Queue one record; its `outcome()` is the record once durable."""
        now = self._clock()
        draft = AuditRecord(
            node=self.writer.node,
            seq=0,
            at_us=int(now * 1_000_000),
            trace_id=trace_id,
            requester=requester,
            requester_sub=sub,
            method=method,
            purpose=purpose,
            basis=basis,
            subjects=subjects,
            fields=fields,
            decision=decision,
            reason=reason,
            rh=rh,
            sh=sh,
            jti=jti,
            part=part,
            latency_us=max(0, int((now - started) * 1_000_000)),
        )
        return self.writer.submit(draft)
