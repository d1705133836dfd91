"""The AuditTrail service: what a DPO, the regulator or a citizen's portal may ask.

An institution's DPO sees the requests its own institution made; the regulator sees all;
a citizen portal may ask who accessed one subject's data. Subjects given in a query are
hashed with the audit key before any lookup, so identifiers never reach the store. These
calls pass through the same authentication, policy and audit as every exchange.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.base import FetchContext
from gateway.audit import chain, inclusion
from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import AuditStore, Query
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.engine.call import Engine, StreamMethod, UnaryMethod
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pipeline import validation
from gateway.pipeline.exchange import fetch_or_unavailable
from gateway.pipeline.registries import Registries
from gateway.security.policy import Policy
from gateway.services.binding import service_handler

SERVICE = apb.DESCRIPTOR.services_by_name["AuditTrail"].full_name
MAX_PAGE = 1000
MAX_MESSAGE_BYTES = 1024 * 1024  # one QueryAccess response message, well under 4 MiB
# Entries of an access report that carry a proof, newest first (each ~1.5 KB; a report
# longer than this is a matter for the regulator's QueryAccess, not a citizen's page).
MAX_PROOFS = 1000


def _ts(at_us: int) -> Timestamp:
    return Timestamp(seconds=at_us // 1_000_000, nanos=(at_us % 1_000_000) * 1000)


MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the Timestamp range


def _us(stamp: Timestamp, present: bool, field: str) -> int:
    if not present:
        return 0
    if not (0 <= stamp.seconds <= MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        raise invalid(Reason.INVALID_DATE, f"{field} is outside the Timestamp range", field)
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def to_message(record: AuditRecord) -> apb.AccessRecord:
    return apb.AccessRecord(
        record_id=record.record_id,
        node=record.node,
        seq=record.seq,
        time=_ts(record.at_us),
        trace_id=record.trace_id,
        requester=record.requester,
        requester_sub=record.requester_sub,
        method=record.method,
        purpose=record.purpose,
        basis=record.basis,
        subject_hashes=record.subjects,
        fields=record.fields,
        decision=record.decision,
        reason=record.reason,
        request_hash=record.rh,
        response_hash=record.sh,
        jti=record.jti,
        part=record.part,
        latency_us=record.latency_us,
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def checkpoint_message(cp: Checkpoint) -> apb.Checkpoint:
    return apb.Checkpoint(
        node=cp.node,
        seq=cp.seq,
        hash=cp.hash,
        time=_ts(cp.at_us),
        kind=cp.kind,
        signature=cp.signature,
        first_seq=cp.first_seq,
        first_prev_hash=cp.first_prev_hash,
        root=cp.root,
        root_first=cp.root_first,
    )


def _messages(records: list[apb.AccessRecord], token: str) -> Iterator[apb.QueryAccessResponse]:
    """One page as stream messages of at most MAX_MESSAGE_BYTES each (records naming a
    whole batch's subjects are large; a client's default limit is 4 MiB), every one
    carrying the page's next token."""
    chunk: list[apb.AccessRecord] = []
    size = 0
    for record in records:
        length = record.ByteSize() + 8
        if chunk and size + length > MAX_MESSAGE_BYTES:
            yield apb.QueryAccessResponse(records=chunk, next_page_token=token)
            chunk, size = [], 0
        chunk.append(record)
        size += length
    yield apb.QueryAccessResponse(records=chunk, next_page_token=token)


def _reason(value: str) -> str:
    """A reason filter: one of the documented reasons (docs/errors.md), or none."""
    if value and value not in Reason.__members__:
        raise invalid(Reason.INVALID_REASON, "reason is not one of docs/errors.md's", "reason")
    return value


def _record_id(value: str) -> tuple[str, int]:
    """("", 0) for none; else the (node, seq) of "<node>:<seq>"."""
    if not value:
        return ("", 0)
    node, _, seq = value.rpartition(":")
    if not node or not seq.isdigit() or not 1 <= int(seq) < 2**63 or len(value) > 200:
        raise invalid(Reason.INVALID_RECORD_ID, "record_id is <node>:<seq>", "record_id")
    return (node, int(seq))


def _denied(message: str) -> ExchangeError:
    return ExchangeError(Reason.NOT_AN_AUDITOR, message)


class AuditTrailService:
    """Reads of the trail, limited by role."""

    def __init__(
        self,
        store: AuditStore,
        recorder: AuditRecorder,
        policy: Policy,
        jwks: Mapping[str, Any],
        registries: Registries | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.policy = policy
        self.jwks = jwks
        self.registries = registries

    def _scope(self, caller: str) -> str | None:
        """None: the caller sees every record (regulator); else only its own requests."""
        if self.policy.has_role(caller, "regulator"):
            return None
        if self.policy.has_role(caller, "dpo"):
            return caller
        raise _denied("only a DPO or the regulator may read the audit trail")

    def _subject(self, request: Any) -> str:
        if not request.HasField("subject"):
            return ""
        kind, key = validation.subject(request.subject)
        return self.recorder.subject(kind, key)

    def query(
        self, request: apb.QueryAccessRequest, ctx: FetchContext
    ) -> Iterator[apb.QueryAccessResponse]:
        own = self._scope(ctx.requester)
        size = request.page_size or 100
        if not 1 <= size <= MAX_PAGE:
            raise invalid(Reason.INVALID_PAGE, f"page_size is 1 to {MAX_PAGE}", "page_size")
        if own is not None and request.requester and request.requester != own:
            raise _denied("a DPO sees its own institution's requests only")
        query = Query(
            subject=self._subject(request),
            requester=own or request.requester,
            purpose=request.access_purpose,
            method=request.method,
            decision=request.decision,
            since_us=_us(request.since, request.HasField("since"), "since"),
            until_us=_us(request.until, request.HasField("until"), "until"),
            trace_id=request.trace_id,
            reason=_reason(request.reason),
            record=_record_id(request.record_id),
        )
        if query.until_us and query.since_us >= query.until_us:
            raise invalid(Reason.INVALID_DATE, "since must be before until", "since")
        return self._pages(query, size, request.page_token, request.max_pages or 10)

    def _pages(
        self, query: Query, size: int, token: str, pages: int
    ) -> Iterator[apb.QueryAccessResponse]:
        for _ in range(pages):
            try:
                records, token = self.store.query(query, size, token)
            except ValueError:
                raise invalid(
                    Reason.INVALID_PAGE, "page_token is not one we gave", "page_token"
                ) from None
            yield from _messages([to_message(r) for r in records], token)
            if not token:
                return

    def verify_integrity(
        self, request: apb.VerifyIntegrityRequest, ctx: FetchContext
    ) -> apb.VerifyIntegrityResponse:
        self._scope(ctx.requester)
        report = chain.verify(self.store.records(), self.store.checkpoints(), self.jwks)
        return apb.VerifyIntegrityResponse(
            ok=report.ok,
            records=report.records,
            checkpoints=report.checkpoints,
            nodes=report.nodes,
            findings=[
                apb.IntegrityFinding(node=f.node, seq=f.seq, kind=f.kind, detail=f.detail)
                for f in report.findings
            ],
        )

    def get_checkpoint(
        self, request: apb.GetCheckpointRequest, ctx: FetchContext
    ) -> apb.GetCheckpointResponse:
        self._scope(ctx.requester)
        latest: dict[str, Checkpoint] = {}
        for cp in self.store.checkpoints(request.node or None):
            if cp.node not in latest or cp.seq >= latest[cp.node].seq:
                latest[cp.node] = cp
        return apb.GetCheckpointResponse(
            checkpoints=[checkpoint_message(latest[n]) for n in sorted(latest)]
        )

    def access_report(
        self, request: apb.AccessReportRequest, ctx: FetchContext
    ) -> apb.AccessReportResponse:
        caller = ctx.requester
        if not (
            self.policy.has_role(caller, "citizen_portal")
            or self.policy.has_role(caller, "regulator")
        ):
            raise _denied("only a citizen portal or the regulator may ask an access report")
        if not request.HasField("subject"):
            raise invalid(Reason.MISSING_SUBJECT, "subject is required", "subject")
        since = _us(request.since, request.HasField("since"), "since")
        found: dict[str, AuditRecord] = {}
        subjects = self._report_subjects(request.subject, ctx)
        for subject in subjects:
            for record in self._all(Query(subject=subject, since_us=since)):
                found[record.record_id] = record
        ordered = sorted(found.values(), key=lambda r: (r.at_us, r.node, r.seq), reverse=True)
        prover = _Prover(self.store, frozenset(subjects)) if request.proofs else None
        return apb.AccessReportResponse(
            entries=[
                apb.AccessEntry(
                    institution=r.requester,
                    purpose=r.purpose,
                    basis=r.basis,
                    time=_ts(r.at_us),
                    fields=r.fields,
                    decision=r.decision,
                    record_id=r.record_id,
                    proof=prover.prove(r) if prover is not None and n < MAX_PROOFS else None,
                )
                for n, r in enumerate(ordered)
            ]
        )

    def _report_subjects(self, subject: Any, ctx: FetchContext) -> list[str]:
        """A person's report covers the person and their household: an exchange about the
        household disclosed its members' data (docs/audit.md, "What a report covers")."""
        kind, key = validation.subject(subject)
        hashes = [self.recorder.subject(kind, key)]
        if kind == "idcs" and self.registries is not None:
            link = fetch_or_unavailable(self.registries.memberships, [key], ctx).get(key)
            if link is not None:
                hashes.append(self.recorder.subject("household_id", link.household_id))
        return hashes

    def _all(self, query: Query) -> Iterator[AuditRecord]:
        """Every record a query matches, page after page (at most 100 pages)."""
        token = ""
        for _ in range(100):
            records, token = self.store.query(query, MAX_PAGE, token)
            yield from records
            if not token:
                return

    def handler(self, engine: Engine) -> grpc.GenericRpcHandler:
        """AuditTrail behind the engine's authentication, policy and audit."""
        return service_handler(
            engine,
            SERVICE,
            {
                "QueryAccess": StreamMethod(apb.QueryAccessRequest, self.query),
                "VerifyIntegrity": UnaryMethod(
                    apb.VerifyIntegrityRequest, self.verify_integrity, blocking=True
                ),
                "GetCheckpoint": UnaryMethod(
                    apb.GetCheckpointRequest, self.get_checkpoint, blocking=True
                ),
                "AccessReport": UnaryMethod(
                    apb.AccessReportRequest, self.access_report, blocking=True
                ),
            },
        )


class _Prover:
    """Inclusion proofs for one report: each checkpoint's leaves are read once.

    A proof hands the whole record, with the hashes of the request's and the response's
    bytes: those are unkeyed, so for a record that also names other persons (a batch) they
    could be matched against guessed IDCS. Such an entry gets no proof; only records about
    the report's own subjects (the person, their household) do (docs/audit-format.md §9)."""

    def __init__(self, store: AuditStore, own: frozenset[str]) -> None:
        self.store = store
        self.own = own
        self.trees: dict[str, list[tuple[Checkpoint, list[str]]]] = {}

    def prove(self, record: AuditRecord) -> apb.InclusionProof | None:
        if not set(record.subjects) <= self.own:
            return None
        found = self._tree(record)
        if found is None:
            return None
        proof = inclusion.build(record, *found)
        return apb.InclusionProof(
            record=to_message(record),
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            path=proof.path,
            checkpoint=proof.checkpoint,
        )

    def _tree(self, record: AuditRecord) -> tuple[Checkpoint, list[str]] | None:
        """The checkpoint that covers the record and its leaves; None if none does yet,
        or if the store no longer holds all its records (pruned since)."""
        known = self.trees.setdefault(record.node, [])
        for cp, leaves in known:
            if cp.root_first <= record.seq <= cp.seq:
                return cp, leaves
        covering = self.store.covering(record.node, record.seq)
        if covering is None:
            return None
        size = covering.seq - covering.root_first + 1
        rows = itertools.islice(self.store.records(record.node, covering.root_first - 1), size)
        leaves = [r.hash for r in rows if r.seq <= covering.seq]
        if len(leaves) != size:
            return None
        known.append((covering, leaves))
        return covering, leaves
