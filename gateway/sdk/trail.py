"""The audit trail from a DPO's, the regulator's or a citizen portal's desk: who accessed
what, when, for which purpose, on which basis, and whether the trail is intact.

Every call here is an exchange like any other: signed by the caller's key, checked
against the policy (a DPO reads its own institution's requests, the regulator all; an
access report is for citizen portals and the regulator), recorded in the trail it reads,
and answered with a receipt that the SDK verifies before returning anything. Subjects are
sent as identifiers and hashed by the gateway with its audit key: the trail itself never
holds an IDCS or a household id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.base.wire import AUDIT_TRAIL
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.sdk.client import Answer, JisrClient, subject

M = TypeVar("M", bound=Message)

# The purposes the shipped policy grants: DPOs and the regulator read the trail for the
# first; citizen portals and the regulator ask access reports for the second.
AUDIT_PURPOSE = "DATA_PROTECTION_AUDIT"
REPORT_PURPOSE = "CITIZEN_ACCESS_REQUEST"
# Records per message; the gateway streams up to MAX_PAGES messages per call.
PAGE_SIZE = 100
MAX_PAGES = 10


@dataclass(frozen=True)
class AccessQuery:
    """Which records to list; empty filters match everything.

    `who`: an IDCS or household id (the gateway hashes it); `requester`: the institution
    that asked; `purpose`: the purpose it asked for; `method`: a full method path
    (`/jisr.v1.RegistryExchange/GetPersonStatus`); `decision`: "permit" or "deny";
    `reason`: a refusal's reason; `since`/`until`: a time range (until excluded)."""

    who: str = ""
    requester: str = ""
    purpose: str = ""
    method: str = ""
    decision: str = ""
    reason: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    record_id: str = ""  # one record, "<node>:<seq>"

    def message(
        self, purpose: str, page_size: int, token: str, max_pages: int = MAX_PAGES
    ) -> apb.QueryAccessRequest:
        request = apb.QueryAccessRequest(
            purpose=purpose,
            requester=self.requester,
            access_purpose=self.purpose,
            method=self.method,
            decision=self.decision,
            reason=self.reason,
            page_size=page_size,
            page_token=token,
            max_pages=max_pages,
            record_id=self.record_id,
        )
        if self.who:
            request.subject.CopyFrom(subject(self.who))
        if self.since is not None:
            request.since.CopyFrom(timestamp(self.since))
        if self.until is not None:
            request.until.CopyFrom(timestamp(self.until))
        return request


class Trail:
    """The AuditTrail service through one client (its institution's credentials)."""

    def __init__(self, client: JisrClient, purpose: str = AUDIT_PURPOSE) -> None:
        self.client = client
        self.purpose = purpose

    def query(
        self, query: AccessQuery, limit: int | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[apb.AccessRecord]:
        """Matching records, newest first, `limit` at most: as many calls as it takes,
        each one's receipt verified before its records are yielded."""
        token, given = "", 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - given))
            # Never ask for pages past the limit: the gateway reads each from the store.
            pages = MAX_PAGES if limit is None else min(MAX_PAGES, -(-(limit - given) // size))
            answer = self.client.stream(
                "QueryAccess",
                query.message(self.purpose, size, token, pages),
                apb.QueryAccessResponse,
                self.purpose,
                AUDIT_TRAIL,
            )
            for page in answer.messages:
                for record in page.records:
                    if limit is not None and given >= limit:
                        return
                    given += 1
                    yield record
                token = page.next_page_token
            if not token or not answer.messages or (limit is not None and given >= limit):
                return

    def report(
        self, who: str, since: dt.datetime | None = None, *, proofs: bool = False
    ) -> Answer[apb.AccessReportResponse]:
        """A citizen's access report: every access to the person's or household's data
        (a person's covers their household: an answer about it disclosed theirs). Ask it
        through a Trail opened for REPORT_PURPOSE. With `proofs`, entries that a signed
        checkpoint covers carry the proof of their inclusion (`proof_document`)."""
        request = apb.AccessReportRequest(purpose=self.purpose, subject=subject(who), proofs=proofs)
        if since is not None:
            request.since.CopyFrom(timestamp(since))
        return self._call("AccessReport", request, apb.AccessReportResponse)

    def verify_integrity(self) -> Answer[apb.VerifyIntegrityResponse]:
        """The gateway recomputes every chain and checks every checkpoint's signature."""
        request = apb.VerifyIntegrityRequest(purpose=self.purpose)
        return self._call("VerifyIntegrity", request, apb.VerifyIntegrityResponse)

    def checkpoints(self, node: str = "") -> Answer[apb.GetCheckpointResponse]:
        """The latest signed checkpoint of `node`, or of every node."""
        request = apb.GetCheckpointRequest(purpose=self.purpose, node=node)
        return self._call("GetCheckpoint", request, apb.GetCheckpointResponse)

    def _call(self, name: str, request: Message, response_type: type[M]) -> Answer[M]:
        return self.client.call(name, request, response_type, self.purpose, AUDIT_TRAIL)


def proof_document(proof: apb.InclusionProof) -> dict[str, Any]:
    """An entry's proof as `jisr audit check-proof` reads it (docs/audit-format.md §9):
    the record under the names of a bundle's records.jsonl."""
    r = proof.record
    record = {
        "node": r.node,
        "seq": r.seq,
        "at_us": r.time.seconds * 1_000_000 + r.time.nanos // 1000,
        "trace_id": r.trace_id,
        "requester": r.requester,
        "requester_sub": r.requester_sub,
        "method": r.method,
        "purpose": r.purpose,
        "basis": r.basis,
        "subjects": list(r.subject_hashes),
        "fields": list(r.fields),
        "decision": r.decision,
        "reason": r.reason,
        "rh": r.request_hash,
        "sh": r.response_hash,
        "jti": r.jti,
        "part": r.part,
        "latency_us": r.latency_us,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }
    return {
        "record": record,
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "path": list(proof.path),
        "checkpoint": proof.checkpoint,
    }


def timestamp(value: dt.datetime) -> Timestamp:
    """A Timestamp of an aware datetime (a naive one is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp
