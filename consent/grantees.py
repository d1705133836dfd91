"""Which institutions a consent may name as grantee, and for which purposes.

A consent only ever matters through a policy grant whose basis is `consent`: the gateway
checks it for (grantee, purpose) on such a grant and on nothing else. So the policy, the
document the CNDP authorises and a DPO reads, decides what a consent may name: a grantee
holding at least one consent-based grant, and purposes of those grants. A consent naming
anything else could never be used, and recording it would tell the citizen at the
counter that something was agreed which the gateway will never honour.

The trust store is not the reference: it says who can connect, not who may receive data,
and an institution's keys may be issued after its citizens' consents are collected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from gateway.base.errors import Reason, invalid

GRANTEE_FIELD = "artefact.grantee"
PURPOSES_FIELD = "artefact.purposes"


class Grant(Protocol):
    """What of a policy grant decides a consent's grantees (gateway/security/policy.py's
    Grant): consent/ reads the policy's grants, it does not depend on the policy."""

    @property
    def institution(self) -> str: ...

    @property
    def purpose(self) -> str: ...

    @property
    def consent_based(self) -> bool: ...


def consent_purposes(grants: Iterable[Grant]) -> dict[str, frozenset[str]]:
    """Each institution holding a consent-based grant, and the purposes of those grants."""
    purposes: dict[str, set[str]] = {}
    for grant in grants:
        if grant.consent_based:
            purposes.setdefault(grant.institution, set()).add(grant.purpose)
    return {who: frozenset(codes) for who, codes in purposes.items()}


def check(grantee: str, purposes: Sequence[str], allowed: Mapping[str, frozenset[str]]) -> None:
    """Refuse a consent whose grantee or a purpose no consent-based grant allows.

    Messages list what is allowed instead of repeating what was given: a value typed into
    the wrong field at a counter may be an IDCS, which never goes into a message.
    """
    codes = allowed.get(grantee)
    if codes is None:
        known = ", ".join(sorted(allowed)) or "none"
        raise invalid(
            Reason.UNKNOWN_GRANTEE,
            "the grantee is not an institution the policy lets receive data under a"
            f" citizen's consent (those are: {known})",
            GRANTEE_FIELD,
        )
    if not set(purposes) <= codes:
        raise invalid(
            Reason.UNKNOWN_PURPOSE,
            f"{grantee} may receive data under a citizen's consent only for"
            f" {', '.join(sorted(codes))}; every purpose of the consent must be one of those",
            PURPOSES_FIELD,
        )
