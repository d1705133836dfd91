"""DCI envelopes as a partner's system writes and signs them (tests of gateway/dci/)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.dci import signature
from gateway.security import pki

PURPOSE = "ASD_ELIGIBILITY"


def envelope(
    items: list[dict[str, Any]], sender: str = "ANSS", action: str = "search"
) -> dict[str, Any]:
    header = {
        "version": "1.0.0",
        "message_id": uuid.uuid4().hex,
        "message_ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "sender_id": sender,
        "receiver_id": "jisr",
        "total_count": len(items),
    }
    message = {"transaction_id": uuid.uuid4().hex, "search_request": items}
    return {"header": header, "message": message}


def item(kind: str, value: str, purpose: str | None = PURPOSE) -> dict[str, Any]:
    criteria: dict[str, Any] = {
        "query_type": "idtype-value",
        "query": {"type": kind, "value": value},
    }
    if purpose is not None:
        criteria["authorize"] = {"purpose": {"code": purpose}}
    return {
        "reference_id": uuid.uuid4().hex,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "search_criteria": criteria,
    }


def signed(pki_dir: Path, body: dict[str, Any], institution: str = "ANSS") -> dict[str, Any]:
    files = pki.load_institution(pki_dir, institution)
    key = load_pem_private_key(files.signing_key.read_bytes(), None)
    value = signature.sign(
        body["header"], body["message"], sender_id=institution, kid=files.kid,
        key=key, created=int(time.time()),  # type: ignore[arg-type]
    )  # fmt: skip
    return {"signature": value, **body}
