"""Consent artefacts: the collecting institution's signed statement of a citizen's consent.

A compact JWS (`typ: jisr-consent+jwt`) by the consent collector's own signing key, checked
against the same trust store and key rules as request tokens (pinned algorithm, key of the
signer's institution only, revoked keys refused). The gateway stores the artefact with the
record, so anyone can later re-verify who attested the consent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from consent.model import SubjectKind, UseCap
from gateway.base.errors import Reason
from gateway.base.jws import Keys, TokenError, signed_claims

ARTEFACT_TYP = "jisr-consent+jwt"
ACTIONS = frozenset({"grant", "revoke"})
UINT32_MAX = 2**32 - 1
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the Timestamp range


class ArtefactError(Exception):
    """An artefact the gateway must refuse, with a stable reason and, where one claim is at
    fault, that claim as the request field (`artefact.exp`)."""

    def __init__(self, reason: Reason, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Artefact:
    """The verified content of a consent artefact."""

    action: str  # "grant" or "revoke"
    collected_by: str
    jti: str
    subject_kind: SubjectKind
    subject: str
    grantor: str
    grantee: str
    purposes: tuple[str, ...]
    scopes: tuple[str, ...]
    valid_from: int
    valid_until: int
    use_cap: UseCap | None
    collection_method: str
    consent_id: str  # for "revoke": the consent revoked; for "grant": ""
    token: str


def sign(claims: dict[str, Any], key: Any, kid: str, alg: str) -> str:
    """A collector's artefact (used by SDKs, the CLI and tests)."""
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": ARTEFACT_TYP, "kid": kid})


def _strs(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, f"{name} must be a list of codes")
    return tuple(sorted(set(value)))


def _str(claims: dict[str, Any], name: str, required: bool = True) -> str:
    value = claims.get(name, "" if not required else None)
    if not isinstance(value, str) or (required and not value):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, f"{name} must be a string")
    return value


def _int(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, f"{name} must be a whole number")
    return value


def verify(
    token: str,
    *,
    caller: str,
    collectors: Sequence[str],
    trust: Keys,
    revokers: Sequence[str] = (),
) -> Artefact:
    """Check signature and content; the signer must be the caller and a consent collector,
    or, for a revocation, one of `revokers` (citizens' portals: a citizen withdraws a
    consent where they are signed in, without going back to the counter that took it)."""
    try:
        claims, _ = signed_claims(token, ARTEFACT_TYP, caller, trust)
    except TokenError as exc:
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, exc.message) from None
    if claims.get("iss") != caller:
        raise ArtefactError(
            Reason.CONSENT_ARTEFACT_INVALID, "the artefact's iss is not the calling institution"
        )
    action = _str(claims, "act")
    if action not in ACTIONS:
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, "act must be grant or revoke")
    if caller not in collectors and not (action == "revoke" and caller in revokers):
        raise ArtefactError(
            Reason.NOT_A_CONSENT_COLLECTOR, "this institution may not collect consents"
        )
    if action == "revoke":
        return _revocation(claims, caller, token)
    kind = _str(claims, "sub_kind")
    if kind not in (SubjectKind.HOUSEHOLD, SubjectKind.PERSON):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, "sub_kind must be household or person")
    valid_from, valid_until = _int(claims, "nbf"), _int(claims, "exp")
    if not (0 <= valid_from <= MAX_SECONDS and 0 <= valid_until <= MAX_SECONDS):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, "nbf and exp must be valid times")
    if valid_until <= valid_from:
        # Said as the counter clerk meets it: `jisr consent grant --days 0` sets exp = nbf.
        raise ArtefactError(
            Reason.CONSENT_ARTEFACT_INVALID,
            "a consent must end after it starts: its end (exp) is not after its start (nbf);"
            " with `jisr consent grant`, give --days 1 or more",
            "artefact.exp",
        )
    return Artefact(
        action=action,
        collected_by=caller,
        jti=_str(claims, "jti"),
        subject_kind=SubjectKind(kind),
        subject=_str(claims, "sub"),
        grantor=_str(claims, "grantor"),
        grantee=_str(claims, "grantee"),
        purposes=_strs(claims, "purposes"),
        scopes=_strs(claims, "scopes"),
        valid_from=valid_from,
        valid_until=valid_until,
        use_cap=_use_cap(claims.get("use_cap")),
        collection_method=_str(claims, "method"),
        consent_id="",
        token=token,
    )


def _revocation(claims: dict[str, Any], caller: str, token: str) -> Artefact:
    return Artefact(
        action="revoke",
        collected_by=caller,
        jti=_str(claims, "jti"),
        subject_kind=SubjectKind.HOUSEHOLD,
        subject="",
        grantor=_str(claims, "grantor"),
        grantee="",
        purposes=(),
        scopes=(),
        valid_from=0,
        valid_until=0,
        use_cap=None,
        collection_method=_str(claims, "method"),
        consent_id=_str(claims, "cid"),
        token=token,
    )


def _use_cap(value: Any) -> UseCap | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ArtefactError(Reason.CONSENT_ARTEFACT_INVALID, "use_cap must be an object")
    uses, period = value.get("max_uses"), value.get("period_s")
    if not (isinstance(uses, int) and isinstance(period, int)) or not (
        _positive(uses) and _positive(period)
    ):
        raise ArtefactError(
            Reason.CONSENT_ARTEFACT_INVALID, "use_cap needs positive max_uses and period_s"
        )
    return UseCap(max_uses=uses, period_s=period)


def _positive(value: Any) -> bool:
    """A whole number that fits the uint32 fields of the wire form."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= UINT32_MAX
