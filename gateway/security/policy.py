"""Purpose-based access policy: who may call which method, for which purpose, and see what.

A data file grants, per (institution, method, purpose), a legal basis (a statute reference
or `consent`) and the fields of the method's response that may be disclosed. Everything
not granted is denied. The file also names the institutions holding the roles later
features check (consent collection, audit access, citizen access reports).

A `[limits.X]` table may give institution X a rate of calls (a token bucket: a sustained
`calls_per_second` and a `burst`) and a daily quota (`calls_per_day`), which the gateway's
door enforces before any work.

The file is validated once at start and every error names the file and the field at
fault. Deciding is then a dictionary lookup: no I/O, nothing parsed per request.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor

from gateway.base import event_types
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1 import transparency_pb2 as tpb
from gateway.security import projection
from gateway.security.projection import FieldTree

CONSENT = "consent"
"""The basis of a grant that holds only while the citizen's consent is active."""

ROLES = frozenset({"consent_collector", "dpo", "regulator", "citizen_portal"})
"""Roles the policy may assign; each is checked by the feature that needs it."""

_INSTITUTION = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
_PURPOSE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
_SCOPE = re.compile(r"[a-z][a-z0-9_]{1,31}")


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file and field at fault."""


@dataclass(frozen=True, slots=True)
class Method:
    """A gRPC method a grant may name, and the message whose fields its answers disclose."""

    service: str
    name: str
    disclosed: Descriptor

    @property
    def path(self) -> str:
        """The full gRPC method name, as in the request token's `method` claim."""
        return f"/{self.service}/{self.name}"


_EXCHANGE = pb.DESCRIPTOR.services_by_name["RegistryExchange"].full_name
_CONSENT = cpb.DESCRIPTOR.services_by_name["ConsentRegistry"].full_name
_AUDIT = apb.DESCRIPTOR.services_by_name["AuditTrail"].full_name
_CONTESTS = kpb.DESCRIPTOR.services_by_name["ContestCases"].full_name
_EVENTS = epb.DESCRIPTOR.services_by_name["RegistryEvents"].full_name
_TRANSPARENCY = tpb.DESCRIPTOR.services_by_name["Transparency"].full_name
SUBSCRIBE = "Subscribe"
"""The method whose grants name the event types an institution may receive."""

METHODS: Mapping[str, Method] = {
    method.name: method
    for method in (
        Method(_EXCHANGE, "GetPersonStatus", pb.PersonStatus.DESCRIPTOR),
        Method(_EXCHANGE, "GetHouseholdStatus", pb.HouseholdStatus.DESCRIPTOR),
        Method(_EXCHANGE, "VerifyEligibility", pb.EligibilityDecision.DESCRIPTOR),
        Method(_EXCHANGE, "VerifyEligibilityBatch", pb.EligibilityDecision.DESCRIPTOR),
        # ConsentRegistry answers are disclosed as whole response messages.
        Method(_CONSENT, "GrantConsent", cpb.GrantConsentResponse.DESCRIPTOR),
        Method(_CONSENT, "RevokeConsent", cpb.RevokeConsentResponse.DESCRIPTOR),
        Method(_CONSENT, "GetConsent", cpb.GetConsentResponse.DESCRIPTOR),
        Method(_CONSENT, "ListConsents", cpb.ListConsentsResponse.DESCRIPTOR),
        Method(_CONSENT, "CheckConsent", cpb.CheckConsentResponse.DESCRIPTOR),
        Method(_AUDIT, "QueryAccess", apb.QueryAccessResponse.DESCRIPTOR),
        Method(_AUDIT, "VerifyIntegrity", apb.VerifyIntegrityResponse.DESCRIPTOR),
        Method(_AUDIT, "GetCheckpoint", apb.GetCheckpointResponse.DESCRIPTOR),
        Method(_AUDIT, "AccessReport", apb.AccessReportResponse.DESCRIPTOR),
        Method(_CONTESTS, "OpenCase", kpb.OpenCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "ListCases", kpb.ListCasesResponse.DESCRIPTOR),
        Method(_CONTESTS, "GetCase", kpb.GetCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "AnswerCase", kpb.AnswerCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "AcceptCase", kpb.AcceptCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "EscalateCase", kpb.EscalateCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "WithdrawCase", kpb.WithdrawCaseResponse.DESCRIPTOR),
        Method(_CONTESTS, "DecideCase", kpb.DecideCaseResponse.DESCRIPTOR),
        Method(_EVENTS, "CreateSubscription", epb.CreateSubscriptionResponse.DESCRIPTOR),
        # Each notification's event is projected to the grant.
        Method(_EVENTS, SUBSCRIBE, epb.ChangeEvent.DESCRIPTOR),
        Method(_EVENTS, "Acknowledge", epb.AcknowledgeResponse.DESCRIPTOR),
        Method(_EVENTS, "GetDigest", epb.GetDigestResponse.DESCRIPTOR),
        Method(_EVENTS, "GetSubscription", epb.GetSubscriptionResponse.DESCRIPTOR),
        Method(_EVENTS, "CancelSubscription", epb.CancelSubscriptionResponse.DESCRIPTOR),
        Method(_TRANSPARENCY, "ListPublications", tpb.ListPublicationsResponse.DESCRIPTOR),
        Method(_TRANSPARENCY, "GetPublication", tpb.GetPublicationResponse.DESCRIPTOR),
    )
}
"""Methods a grant may name, by short name. Another service's methods join this table."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One permitted (institution, method, purpose), its legal basis and disclosed fields."""

    institution: str
    method: str  # short name, a key of METHODS
    purpose: str
    basis: str  # a statute reference, or CONSENT
    fields: FieldTree  # for projection.project
    paths: tuple[str, ...]  # the same fields as written in the file (for receipts, audit)
    # Consent grants only: each scope (field group) and the grant's paths it holds.
    scope_paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Consent grants only: whether a consent covering some scopes discloses those alone.
    partial: bool = False
    # Subscribe grants only: the event types (gateway/base/event_types.py) it may receive.
    events: frozenset[str] = frozenset()

    @property
    def consent_based(self) -> bool:
        """Whether the grant holds only under an active consent of the citizen."""
        return self.basis == CONSENT

    @property
    def scopes(self) -> frozenset[str]:
        """The field groups a consent must cover for this grant's full disclosure."""
        return frozenset(scope for scope, _ in self.scope_paths)


@functools.lru_cache(maxsize=1024)
def consented(grant: Grant, covered: frozenset[str]) -> tuple[FieldTree, tuple[str, ...]]:
    """The fields (tree and paths) of `grant` that the consented scopes `covered` allow."""
    paths = tuple(p for scope, held in grant.scope_paths if scope in covered for p in held)
    return projection.field_tree(paths), paths


@dataclass(frozen=True, slots=True)
class Rate:
    """An institution's limits: a rate of calls (`calls_per_second` sustained, `burst` at
    once) and a quota (`calls_per_day`, a UTC day, all processes together); either may be
    absent."""

    calls_per_second: float | None
    burst: int
    calls_per_day: int | None = None


MAX_RATE = 1_000_000.0
MAX_DAILY = 10_000_000_000


class Policy:
    """Validated grants and roles; every question is answered by a dictionary lookup."""

    __slots__ = ("_by_key", "_purposes", "_roles", "grants", "rates", "scope_names", "source")

    def __init__(
        self,
        grants: Iterable[Grant],
        roles: Mapping[str, Iterable[str]],
        source: str,
        scope_names: Iterable[str] = (),
        rates: Mapping[str, Rate] | None = None,
    ) -> None:
        self.source = source
        self.rates: Mapping[str, Rate] = dict(rates or {})
        self.scope_names = frozenset(scope_names)
        self.grants = tuple(grants)
        self._by_key: dict[tuple[str, str, str], Grant] = {}
        purposes: dict[str, set[str]] = {}
        for grant in self.grants:
            key = (grant.institution, grant.method, grant.purpose)
            if key in self._by_key:
                raise PolicyError(f"{source}: two grants for {key}")
            self._by_key[key] = grant
            # The token's `method` claim is the full gRPC name: answer for it too.
            full = (grant.institution, METHODS[grant.method].path, grant.purpose)
            self._by_key[full] = grant
            purposes.setdefault(grant.institution, set()).add(grant.purpose)
        self._purposes = {who: frozenset(codes) for who, codes in purposes.items()}
        unknown = sorted(set(roles) - ROLES)
        if unknown:
            raise PolicyError(f"{source}: roles.{unknown[0]}: unknown role")
        self._roles = {role: frozenset(roles.get(role, ())) for role in ROLES}

    def authorize(self, institution: str, method: str, purpose: str) -> Grant | None:
        """The grant letting `institution` call `method` (short or full gRPC name) for
        `purpose`, or None: whatever is not granted is denied."""
        return self._by_key.get((institution, method, purpose))

    def has_role(self, institution: str, role: str) -> bool:
        """Whether `institution` holds `role`; an unknown role is a bug, not a denial."""
        holders = self._roles.get(role)
        if holders is None:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLES)}")
        return institution in holders

    def holders(self, role: str) -> frozenset[str]:
        """The institutions holding `role`."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLES)}")
        return self._roles[role]

    def purposes_of(self, institution: str) -> frozenset[str]:
        """Every purpose `institution` holds at least one grant for."""
        return self._purposes.get(institution, frozenset())


DEFAULT_FILE = "policy.toml"


def load_default() -> Policy:
    """The demonstration policy shipped with Jisr (illustrative legal references)."""
    text = (resources.files("gateway") / "data" / DEFAULT_FILE).read_text(encoding="utf-8")
    return parse(text, f"<jisr>/{DEFAULT_FILE}")


def load(path: Path) -> Policy:
    """A policy file; raises PolicyError naming the fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse(text, str(path))


def parse(text: str, source: str) -> Policy:
    """Validate and build a Policy from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    _only(doc, {"roles", "scopes", "grant", "limits"}, source, "")
    roles = _roles(_table(doc.get("roles", {}), source, "roles"), source)
    scopes = _scopes(_table(doc.get("scopes", {}), source, "scopes"), source)
    grants: list[Grant] = []
    first: dict[tuple[str, str, str], int] = {}
    raw_grants = doc.get("grant", [])
    if not isinstance(raw_grants, list):
        raise PolicyError(f"{source}: grant: must be an array of tables ([[grant]])")
    for i, raw in enumerate(raw_grants):
        where = f"grant[{i}]"
        table = _table(raw, source, where)
        for j, grant in enumerate(_grants(table, scopes, source, where)):
            key = (grant.institution, grant.method, grant.purpose)
            if key in first:
                raise PolicyError(
                    f"{source}: {where}.purposes[{j}]: {grant.institution} already has a "
                    f"grant for {grant.method} with purpose {grant.purpose} "
                    f"(grant[{first[key]}])"
                )
            first[key] = i
            grants.append(grant)
    if not grants:
        raise PolicyError(f"{source}: no [[grant]] defined")
    rates = _rates(_table(doc.get("limits", {}), source, "limits"), source)
    return Policy(grants, roles, source, scopes, rates)


def _rates(table: dict[str, Any], source: str) -> dict[str, Rate]:
    rates: dict[str, Rate] = {}
    for institution, raw in table.items():
        where = f"limits.{institution}"
        _institution(institution, source, where)
        limits = _table(raw, source, where)
        _only(limits, {"calls_per_second", "burst", "calls_per_day"}, source, where)
        if not {"calls_per_second", "calls_per_day"} & set(limits):
            raise PolicyError(f"{source}: {where}: give calls_per_second, calls_per_day or both")
        rate = limits.get("calls_per_second")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE
        ):
            raise PolicyError(
                f"{source}: {where}.calls_per_second: must be a number above 0, at most"
                f" {MAX_RATE:,.0f}"
            )
        burst = limits.get("burst", max(1, int(rate or 1)))
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_RATE:
            raise PolicyError(
                f"{source}: {where}.burst: must be a whole number from 1 to {MAX_RATE:,.0f}"
            )
        daily = limits.get("calls_per_day")
        if daily is not None and (
            isinstance(daily, bool) or not isinstance(daily, int) or not 1 <= daily <= MAX_DAILY
        ):
            raise PolicyError(
                f"{source}: {where}.calls_per_day: must be a whole number from 1 to {MAX_DAILY:,}"
            )
        rates[institution] = Rate(float(rate) if rate is not None else None, burst, daily)
    return rates


def _roles(table: dict[str, Any], source: str) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for role, value in table.items():
        where = f"roles.{role}"
        if role not in ROLES:
            raise PolicyError(f"{source}: {where}: unknown role; known: {sorted(ROLES)}")
        if not isinstance(value, list):
            raise PolicyError(f"{source}: {where}: must be a list of institution ids")
        members: list[str] = []
        for k, member in enumerate(value):
            _institution(member, source, f"{where}[{k}]")
            if member in members:
                raise PolicyError(f"{source}: {where}[{k}]: {member} listed twice")
            members.append(member)
        roles[role] = members
    return roles


def _scopes(table: dict[str, Any], source: str) -> dict[str, tuple[str, ...]]:
    """Field groups a consent can name: scope -> field paths of the disclosed messages."""
    scopes: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    messages = {m.disclosed.full_name: m.disclosed for m in METHODS.values()}
    for name, value in table.items():
        where = f"scopes.{name}"
        if not _SCOPE.fullmatch(name):
            raise PolicyError(f"{source}: {where}: scope names are lower_case words")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{source}: {where}: must be a non-empty list of field paths")
        for k, path in enumerate(value):
            if all(projection.path_error(d, path) for d in messages.values()):
                raise PolicyError(f"{source}: {where}[{k}]: no disclosed message has {path!r}")
            if path in owner:
                raise PolicyError(f"{source}: {where}[{k}]: {path!r} is already in {owner[path]}")
            owner[path] = name
        scopes[name] = tuple(value)
    return scopes


def _scope_paths(
    paths: tuple[str, ...], scopes: Mapping[str, tuple[str, ...]], source: str, where: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each scope and the grant's paths it holds; every path must be in some scope."""
    owner = {path: scope for scope, held in scopes.items() for path in held}
    grouped: dict[str, list[str]] = {}
    for j, path in enumerate(paths):
        scope = owner.get(path)
        if scope is None:
            raise PolicyError(
                f"{source}: {where}.fields[{j}]: a consent-based field must belong to a"
                f" [scopes] group; {path!r} is in none"
            )
        grouped.setdefault(scope, []).append(path)
    return tuple((scope, tuple(held)) for scope, held in sorted(grouped.items()))


def _grants(
    table: dict[str, Any], scopes: Mapping[str, tuple[str, ...]], source: str, where: str
) -> list[Grant]:
    """The grants of one [[grant]] table: one per purpose it lists."""
    _only(
        table,
        {"institution", "method", "purposes", "basis", "fields", "partial", "events"},
        source,
        where,
    )
    institution = _institution(table.get("institution"), source, f"{where}.institution")
    method_name = table.get("method")
    if method_name is None:
        raise PolicyError(f"{source}: {where}.method: required")
    method = METHODS.get(method_name) if isinstance(method_name, str) else None
    if method is None:
        raise PolicyError(
            f"{source}: {where}.method: {method_name!r} is not a method a grant can name; "
            f"known: {sorted(METHODS)}"
        )
    purposes = _strings(table, "purposes", source, where)
    for j, purpose in enumerate(purposes):
        if not _PURPOSE.fullmatch(purpose):
            raise PolicyError(
                f"{source}: {where}.purposes[{j}]: {purpose!r} is not an upper-case purpose "
                "code like 'AMO_ENROLMENT'"
            )
        if purpose in purposes[:j]:
            raise PolicyError(f"{source}: {where}.purposes[{j}]: {purpose} listed twice")
    basis = _basis(table.get("basis"), source, f"{where}.basis")
    paths = _fields(table, method, source, where)
    tree = projection.field_tree(paths)
    partial = table.get("partial", False)
    if not isinstance(partial, bool):
        raise PolicyError(f"{source}: {where}.partial: must be true or false")
    if partial and basis != CONSENT:
        raise PolicyError(f"{source}: {where}.partial: only a consent-based grant is partial")
    scope_paths = _scope_paths(paths, scopes, source, where) if basis == CONSENT else ()
    events = _events(table, method.name, source, where)
    return [
        Grant(
            institution=institution,
            method=method.name,
            purpose=purpose,
            basis=basis,
            fields=tree,
            paths=paths,
            scope_paths=scope_paths,
            partial=partial,
            events=events,
        )
        for purpose in purposes
    ]


def _events(table: dict[str, Any], method: str, source: str, where: str) -> frozenset[str]:
    """A Subscribe grant's event types: required there, refused anywhere else."""
    if method != SUBSCRIBE:
        if "events" in table:
            raise PolicyError(f"{source}: {where}.events: only a {SUBSCRIBE} grant names events")
        return frozenset()
    names = _strings(table, "events", source, where)
    if not names:
        raise PolicyError(f"{source}: {where}.events: a {SUBSCRIBE} grant names at least one")
    for j, name in enumerate(names):
        if name not in event_types.NAMES:
            raise PolicyError(
                f"{source}: {where}.events[{j}]: {name!r} is not an event type; "
                f"known: {', '.join(event_types.NAMES)}"
            )
    return frozenset(names)


def _institution(value: Any, source: str, where: str) -> str:
    if value is None:
        raise PolicyError(f"{source}: {where}: required")
    if not isinstance(value, str) or not _INSTITUTION.fullmatch(value):
        raise PolicyError(
            f"{source}: {where}: {value!r} is not an institution id like 'CNSS' "
            "(upper case, 2 to 32 characters)"
        )
    return value


def _basis(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(
            f"{source}: {where}: must be a statute reference or {CONSENT!r}, not empty"
        )
    if value != CONSENT and value.strip().lower() == CONSENT:
        raise PolicyError(f"{source}: {where}: write a consent basis exactly as {CONSENT!r}")
    return value


def _fields(table: dict[str, Any], method: Method, source: str, where: str) -> tuple[str, ...]:
    paths = _strings(table, "fields", source, where)
    message = method.disclosed
    for j, path in enumerate(paths):
        at = f"{source}: {where}.fields[{j}]"
        fault = projection.path_error(message, path)
        if fault is not None:
            where_in = f" (in {path!r})" if "." in path else ""
            raise PolicyError(f"{at}: {fault}{where_in}")
        for earlier in paths[:j]:
            if path == earlier:
                raise PolicyError(f"{at}: {path!r} listed twice")
            if path.startswith(earlier + "."):
                raise PolicyError(f"{at}: {path!r} is already covered by {earlier!r}")
            if earlier.startswith(path + "."):
                raise PolicyError(f"{at}: {path!r} covers {earlier!r}, listed before it")
    return tuple(paths)


def _only(table: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise PolicyError(f"{source}: {prefix}{extra[0]}: unknown key")


def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: {where}: must be a table")
    return value


def _strings(table: dict[str, Any], key: str, source: str, where: str) -> list[str]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{source}: {where}.{key}: must be a non-empty list of strings")
    return value
