"""One audit record and one checkpoint: what a DPO reads and what the chain hashes.

Each gateway process (node) keeps its own chain: record n's `prev_hash` is record n-1's
`hash`, and `hash` is the lowercase hex SHA-256 of the record's canonical encoding
(`canonical_bytes`, specified in docs/audit-format.md): every field but `hash`, in a fixed
order, as UTF-8 tokens separated by NUL bytes. Every N records or T seconds the node signs
a checkpoint (node, seq, hash) with the gateway's key, so an administrator who rewrites the
database cannot forge the chain's head without the key. Subjects appear only as keyed
hashes (HMAC-SHA256 with the gateway's audit key): never a raw IDCS or household id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, fields, replace

GENESIS = ""  # prev_hash of a chain's first record
ENCODING_TAG = "jisr-audit-v1"  # first token of every canonical encoding (its version)
SEPARATOR = "\0"  # between tokens; no token may contain it
REPLACEMENT = "\ufffd"  # what `sealed` puts in place of a NUL or an unpaired surrogate


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One exchange (or one batch of a stream), permitted or denied."""

    node: str  # the gateway process whose chain holds this record
    seq: int  # 1, 2, ... within the node's chain
    at_us: int  # microseconds since the epoch (UTC)
    trace_id: str  # W3C trace id (hex), "" when the exchange was not traced
    requester: str  # institution id from the client certificate
    requester_sub: str  # the token's pseudonymous `sub`, "" if no token was readable
    method: str  # full gRPC method name
    purpose: str
    basis: str  # statute reference, consent id(s), or "" for a denial before policy
    subjects: tuple[str, ...]  # keyed hashes (subject_hash) of the persons/households asked about
    fields: tuple[str, ...]  # fields disclosed (empty on a denial)
    decision: str  # "permit" or "deny"
    reason: str  # stable reason of a denial (or of per-item failures in a batch), else ""
    rh: str  # request hash (base64url SHA-256), as in the receipt
    sh: str  # response hash, "" when nothing was answered
    jti: str  # the request token's jti ("" if none was readable)
    part: int  # 0 for a unary call; batch position + 1 in a stream; 0 for a stream's close
    latency_us: int
    prev_hash: str = GENESIS
    hash: str = ""

    @property
    def record_id(self) -> str:
        """Stable id quoted in receipts: `<node>:<seq>`."""
        return f"{self.node}:{self.seq}"

    def canonical(self) -> bytes:
        """The bytes `hash` is computed over (ValueError if no such encoding exists)."""
        return canonical_bytes(self)

    def sealed(self) -> AuditRecord:
        """This record with its hash computed (prev_hash must already be set).

        A NUL or an unpaired surrogate in a text field (a partner's token can carry one in
        `sub`) has no canonical encoding; it is replaced by U+FFFD first, so that sealing
        never fails and what is stored is exactly what was hashed.
        """
        return _seal(self, self.seq, self.prev_hash)


def canonical_bytes(r: AuditRecord) -> bytes:
    """The canonical encoding of `r` (every field but `hash`), as docs/audit-format.md says.

    The UTF-8 encoding of these tokens joined by NUL (U+0000), in this order:
    "jisr-audit-v1", node, seq, at_us, trace_id, requester, requester_sub, method, purpose,
    basis, the number of subjects, each subject, the number of fields, each field,
    decision, reason, rh, sh, jti, part, latency_us, prev_hash; integers in decimal
    (ASCII, "-" for a negative, no leading zeros). ValueError if a token contains a NUL
    (the encoding would be ambiguous) or is not encodable (an unpaired surrogate).
    """
    return _encode(r, r.seq, r.prev_hash)


def _encode(r: AuditRecord, seq: int, prev_hash: str) -> bytes:
    """`canonical_bytes` of `r` placed at `seq` after `prev_hash`."""
    subjects = r.subjects
    disclosed = r.fields
    text = SEPARATOR.join(
        [
            ENCODING_TAG,
            r.node,
            str(seq),
            str(r.at_us),
            r.trace_id,
            r.requester,
            r.requester_sub,
            r.method,
            r.purpose,
            r.basis,
            str(len(subjects)),
            *subjects,
            str(len(disclosed)),
            *disclosed,
            r.decision,
            r.reason,
            r.rh,
            r.sh,
            r.jti,
            str(r.part),
            str(r.latency_us),
            prev_hash,
        ]
    )
    # 20 fixed tokens and one per subject and field: exactly that many separators minus
    # one, else some token holds a NUL and two different records could share this text.
    if text.count(SEPARATOR) != 19 + len(subjects) + len(disclosed):
        raise ValueError(f"audit record {r.node}:{seq}: a text field contains a NUL character")
    return text.encode()


def digest_or_error(r: AuditRecord) -> str | Exception:
    """What `r.hash` must be, or the error that says `r` has no canonical encoding: the
    verification reports the one or the other (chain.record_links, store_common.row_links)."""
    try:
        return record_hash(r)
    except (ValueError, TypeError) as exc:
        return exc


def record_hash(r: AuditRecord) -> str:
    """What `r.hash` must be: hex SHA-256 of `canonical_bytes(r)`."""
    return hashlib.sha256(canonical_bytes(r)).hexdigest()


def _seal(r: AuditRecord, seq: int, prev_hash: str) -> AuditRecord:
    """`r` at `seq` after `prev_hash`, with its hash: one constructor call, as `link` runs
    once per exchange (dataclasses.replace would cost twice as much)."""
    try:
        data = _encode(r, seq, prev_hash)
    except ValueError:
        r = _clean(r)
        data = _encode(r, seq, prev_hash)
    return AuditRecord(
        r.node,
        seq,
        r.at_us,
        r.trace_id,
        r.requester,
        r.requester_sub,
        r.method,
        r.purpose,
        r.basis,
        r.subjects,
        r.fields,
        r.decision,
        r.reason,
        r.rh,
        r.sh,
        r.jti,
        r.part,
        r.latency_us,
        prev_hash,
        hashlib.sha256(data).hexdigest(),
    )


_UNENCODABLE = re.compile("[\0\ud800-\udfff]")  # NUL, and surrogates (never paired in a str)


def _clean_text(value: str) -> str:
    return _UNENCODABLE.sub(REPLACEMENT, value)


def _clean(r: AuditRecord) -> AuditRecord:
    changes: dict[str, object] = {}
    for f in fields(r):
        value = getattr(r, f.name)
        if isinstance(value, str):
            changes[f.name] = _clean_text(value)
        elif isinstance(value, tuple):
            changes[f.name] = tuple(_clean_text(v) for v in value)
    return replace(r, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: node's chain had `seq` records ending in `hash` at `at_us`.

    `kind` is "periodic", or "prune" when records before `first_seq` were removed by
    retention: the chain then starts at `first_seq`, whose prev_hash is `first_prev_hash`
    (both are only meaningful for a prune checkpoint).
    """

    node: str
    seq: int
    hash: str
    at_us: int
    kind: str = "periodic"
    first_seq: int = 1
    first_prev_hash: str = GENESIS
    # The Merkle tree root (gateway/audit/merkle.py) over the hashes of records
    # root_first..seq: what a proof that one record is included is checked against, without
    # the other records (docs/audit-format.md §9). "" (and 0) on a prune checkpoint and on
    # checkpoints signed before trees existed, whose signed payload has neither field.
    root: str = ""
    root_first: int = 0
    signature: str = ""  # compact JWS (typ "jisr-checkpoint+jwt") over the fields above

    def claims(self) -> dict[str, object]:
        """The signed payload: every field but the signature (and the tree's two while
        there is no tree, so that checkpoints signed before trees existed still verify)."""
        data = asdict(self)
        data.pop("signature")
        if not self.root:
            data.pop("root")
            data.pop("root_first")
        return data


def subject_hash(key: bytes, kind: str, value: str) -> str:
    """The keyed hash of a subject ("idcs" or "household_id") as audit records hold it."""
    return hmac.digest(key, f"{kind}:{value}".encode(), "sha256").hex()  # one-shot: 4x cheaper


def link(prev_seq: int, prev_hash: str, draft: AuditRecord) -> AuditRecord:
    """`draft` placed after (prev_seq, prev_hash) in its node's chain, sealed."""
    return _seal(draft, prev_seq + 1, prev_hash)
