"""The ConsentRegistry service: grant, revoke, read and check citizens' consents.

Every call is authenticated and authorised like an exchange (the handlers come from
gateway/engine/call.py). Grants and revocations also need the consent-collector role and an
artefact signed by the collector; reads show a consent only to its collector, its grantee,
and consent collectors. Each change appends a revision; nothing is updated in place.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.base import FetchContext
from consent import artefact as artefacts
from consent import grantees
from consent.checker import Need, choose
from consent.model import ConsentRecord, Status, SubjectKind, verify_history
from consent.store import ConsentConflictError, ConsentStore
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.engine.call import Engine, UnaryMethod
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1.records_pb2 import Relationship
from gateway.pipeline import disclosure, validation
from gateway.pipeline.exchange import fetch_or_unavailable
from gateway.pipeline.registries import Registries
from gateway.security.policy import Policy
from gateway.security.trust import TrustStore
from gateway.services.binding import service_handler

SERVICE = cpb.DESCRIPTOR.services_by_name["ConsentRegistry"].full_name
COLLECTOR = "consent_collector"
# A citizen's portal: lists the consents about its citizen and revokes those they gave.
PORTAL = "citizen_portal"
# Page tokens of a list `with_household`: which of the two lists the page continues.
_OWN, _HOUSEHOLD = "p.", "h."
_STATUS = {
    Status.ACTIVE: cpb.CONSENT_STATUS_ACTIVE,
    Status.REVOKED: cpb.CONSENT_STATUS_REVOKED,
    Status.EXPIRED: cpb.CONSENT_STATUS_EXPIRED,
}


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def to_message(record: ConsentRecord, now: int) -> cpb.Consent:
    """The wire form of one revision, with its status as of `now`."""
    subject = (
        pb.Subject(household_id=record.subject)
        if record.subject_kind == SubjectKind.HOUSEHOLD
        else pb.Subject(idcs=record.subject)
    )
    message = cpb.Consent(
        consent_id=record.consent_id,
        revision=record.revision,
        subject=subject,
        grantor_idcs=record.grantor,
        grantee=record.grantee,
        purposes=record.purposes,
        scopes=record.scopes,
        valid_from=_ts(record.valid_from),
        valid_until=_ts(record.valid_until),
        status=_STATUS[record.status_at(now)],
        collected_by=record.collected_by,
        collection_method=record.collection_method,
        artefact=record.artefact,
        recorded_at=_ts(record.recorded_at),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )
    if record.use_cap is not None:
        message.use_cap.max_uses = record.use_cap.max_uses
        message.use_cap.period_seconds = record.use_cap.period_s
    return message


def _concerns(kind: SubjectKind, subject: str) -> None:
    """Name a consent's subject in the call's audit record: a grant or revocation about a
    household is in that household's access report (docs/audit.md)."""
    which = disclosure.HOUSEHOLD if kind == SubjectKind.HOUSEHOLD else disclosure.IDCS
    disclosure.note(which, [subject])


def _failed(reason: Reason, message: str) -> ExchangeError:
    return ExchangeError(reason, message)


class ConsentRegistryService:
    """Consent records behind the same checks as every exchange."""

    def __init__(
        self,
        store: ConsentStore,
        registries: Registries,
        policy: Policy,
        trust: TrustStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registries = registries
        self.policy = policy
        self.trust = trust
        self.clock = clock

    # -- changes ----------------------------------------------------------------------

    def _artefact(self, token: str, ctx: FetchContext) -> artefacts.Artefact:
        try:
            return artefacts.verify(
                token,
                caller=ctx.requester,
                collectors=tuple(self.policy.holders(COLLECTOR)),
                trust=self.trust,
                revokers=tuple(self.policy.holders(PORTAL)),
            )
        except artefacts.ArtefactError as exc:
            metadata = {"field": exc.field} if exc.field else None
            raise ExchangeError(exc.reason, exc.message, metadata) from None

    def grant(
        self, request: cpb.GrantConsentRequest, ctx: FetchContext
    ) -> cpb.GrantConsentResponse:
        """Record revision 1 of a consent from a collector's "grant" artefact."""
        art = self._artefact(request.artefact, ctx)
        if art.action != "grant":
            raise invalid(Reason.CONSENT_ARTEFACT_INVALID, "the artefact is not a grant")
        self._check_content(art)
        _concerns(art.subject_kind, art.subject)
        self._check_grantor(art, ctx)
        now = int(self.clock())
        consent_id = "C" + hashlib.sha256(f"{art.collected_by}/{art.jti}".encode()).hexdigest()[:24]
        record = ConsentRecord(
            consent_id=consent_id,
            revision=1,
            subject_kind=art.subject_kind,
            subject=art.subject,
            grantor=art.grantor,
            grantee=art.grantee,
            purposes=art.purposes,
            scopes=art.scopes,
            valid_from=art.valid_from,
            valid_until=art.valid_until,
            use_cap=art.use_cap,
            status=Status.ACTIVE,
            collected_by=art.collected_by,
            collection_method=art.collection_method,
            artefact=art.token,
            recorded_at=now,
            prev_hash="",
        ).sealed()
        try:
            self.store.append(record)
        except ConsentConflictError:
            raise _failed(
                Reason.CONSENT_CONFLICT,
                "this artefact was already recorded",
            ) from None
        return cpb.GrantConsentResponse(consent=to_message(record, now))

    def _check_content(self, art: artefacts.Artefact) -> None:
        """Refuse, before anything is read or stored, a grant that could never be used:
        malformed ids, a grantee or purpose no consent-based grant of the policy allows
        (consent/grantees.py), a scope the policy does not define."""
        if art.subject_kind == SubjectKind.HOUSEHOLD:
            validation.household_id(art.subject, "artefact.sub")
        else:
            validation.idcs(art.subject, "artefact.sub")
        validation.idcs(art.grantor, "artefact.grantor")
        grantees.check(art.grantee, art.purposes, grantees.consent_purposes(self.policy.grants))
        known = self.policy.scope_names
        if not set(art.scopes) <= known:
            # What was given is not repeated: a value in the wrong field may be an IDCS.
            raise invalid(
                Reason.CONSENT_ARTEFACT_INVALID,
                f"scopes must be field groups the policy defines: {', '.join(sorted(known))}",
                "artefact.scopes",
            )

    def _check_grantor(self, art: artefacts.Artefact, ctx: FetchContext) -> None:
        """The person consents for themself; a household through its declarant."""
        if art.subject_kind == SubjectKind.PERSON:
            if art.grantor != art.subject:
                raise _failed(
                    Reason.GRANTOR_NOT_ENTITLED,
                    "a person's consent is given by that person",
                )
            return
        links = fetch_or_unavailable(self.registries.memberships, [art.grantor], ctx)
        link = links.get(art.grantor)
        if (
            link is None
            or link.household_id != art.subject
            or link.relationship != Relationship.RELATIONSHIP_DECLARANT
        ):
            raise _failed(
                Reason.GRANTOR_NOT_ENTITLED,
                "a household's consent is given by its RSU declarant",
            )

    def revoke(
        self, request: cpb.RevokeConsentRequest, ctx: FetchContext
    ) -> cpb.RevokeConsentResponse:
        """Append a revoked revision; revoking a revoked consent changes nothing."""
        art = self._artefact(request.artefact, ctx)
        if art.action != "revoke":
            raise invalid(Reason.CONSENT_ARTEFACT_INVALID, "the artefact is not a revocation")
        for _ in range(3):
            latest = self.store.latest(art.consent_id)
            if latest is None:
                raise _failed(Reason.CONSENT_NOT_FOUND, "no consent")
            _concerns(latest.subject_kind, latest.subject)
            if latest.grantor != art.grantor:
                raise _failed(
                    Reason.GRANTOR_NOT_ENTITLED,
                    "only the consent's grantor may revoke it",
                )
            now = int(self.clock())
            if latest.status == Status.REVOKED:
                return cpb.RevokeConsentResponse(consent=to_message(latest, now))
            revoked = latest.revoked(now, art.token)
            try:
                self.store.append(revoked)
            except ConsentConflictError:
                continue  # another replica changed it meanwhile: read again
            return cpb.RevokeConsentResponse(consent=to_message(revoked, now))
        raise _failed(Reason.CONCURRENT_CHANGE, "concurrent changes")

    # -- reads ------------------------------------------------------------------------

    def _visible(self, record: ConsentRecord, caller: str) -> bool:
        return caller in (record.collected_by, record.grantee) or self.policy.has_role(
            caller, COLLECTOR
        )

    def get(self, request: cpb.GetConsentRequest, ctx: FetchContext) -> cpb.GetConsentResponse:
        latest = self.store.latest(request.consent_id) if request.consent_id else None
        if latest is None or not self._visible(latest, ctx.requester):
            raise _failed(Reason.CONSENT_NOT_FOUND, "no such consent")
        _concerns(latest.subject_kind, latest.subject)
        now = int(self.clock())
        response = cpb.GetConsentResponse(consent=to_message(latest, now))
        if request.include_history:
            history = self.store.history(latest.consent_id)
            response.history.extend(to_message(r, now) for r in history)
            response.history_verified = verify_history(history) is None
        return response

    def list(self, request: cpb.ListConsentsRequest, ctx: FetchContext) -> cpb.ListConsentsResponse:
        kind, key = validation.subject(request.subject)
        size = request.page_size or 50
        if not 1 <= size <= 500:
            raise invalid(Reason.INVALID_PAGE, "page_size is 1 to 500", "page_size")
        subject_kind = SubjectKind.PERSON if kind == "idcs" else SubjectKind.HOUSEHOLD
        if request.with_household:
            if subject_kind != SubjectKind.PERSON:
                raise invalid(
                    Reason.MALFORMED_REQUEST,
                    "with_household lists a person's consents and their household's:"
                    " name the person (subject.idcs)",
                    "with_household",
                )
            return self._list_with_household(key, size, request.page_token, ctx)
        records, token = self._page(subject_kind, key, size, request.page_token)
        return self._listed(records, token, ctx)

    def _list_with_household(
        self, idcs: str, size: int, page_token: str, ctx: FetchContext
    ) -> cpb.ListConsentsResponse:
        """The person's own consents, then (the next page on) their household's, each
        token saying which list it continues."""
        if page_token and not page_token.startswith((_OWN, _HOUSEHOLD)):
            raise invalid(Reason.INVALID_PAGE, "page_token is not one we gave", "page_token")
        if not page_token.startswith(_HOUSEHOLD):
            records, token = self._page(SubjectKind.PERSON, idcs, size, page_token[2:])
            if token:
                return self._listed(records, _OWN + token, ctx)
            link = fetch_or_unavailable(self.registries.memberships, [idcs], ctx).get(idcs)
            return self._listed(records, _HOUSEHOLD if link is not None else "", ctx)
        link = fetch_or_unavailable(self.registries.memberships, [idcs], ctx).get(idcs)
        if link is None:  # left the household between two pages
            return cpb.ListConsentsResponse()
        records, token = self._page(SubjectKind.HOUSEHOLD, link.household_id, size, page_token[2:])
        return self._listed(records, _HOUSEHOLD + token if token else "", ctx)

    def _page(
        self, kind: SubjectKind, key: str, size: int, token: str
    ) -> tuple[Sequence[ConsentRecord], str]:
        try:
            return self.store.list_by_subject(kind, key, size, token)
        except ValueError:
            raise invalid(
                Reason.INVALID_PAGE, "page_token is not one we gave", "page_token"
            ) from None

    def _listed(
        self, records: Sequence[ConsentRecord], token: str, ctx: FetchContext
    ) -> cpb.ListConsentsResponse:
        """A page as the caller may see it: a portal, everything about the citizen it
        names (it vouches for them); others, the consents they collected or receive."""
        portal = self.policy.has_role(ctx.requester, PORTAL)
        now = int(self.clock())
        return cpb.ListConsentsResponse(
            consents=[
                to_message(r, now) for r in records if portal or self._visible(r, ctx.requester)
            ],
            next_page_token=token,
        )

    def check(
        self, request: cpb.CheckConsentRequest, ctx: FetchContext
    ) -> cpb.CheckConsentResponse:
        """Would a consent cover this exchange now? Only the grantee or a collector asks."""
        if ctx.requester != request.grantee and not self.policy.has_role(ctx.requester, COLLECTOR):
            raise _failed(
                Reason.PURPOSE_NOT_ALLOWED,
                "only the grantee or a consent collector may check",
            )
        kind, key = validation.subject(request.subject)
        subjects = [(SubjectKind.PERSON if kind == "idcs" else SubjectKind.HOUSEHOLD, key)]
        if kind == "idcs":
            link = fetch_or_unavailable(self.registries.memberships, [key], ctx).get(key)
            if link is not None:
                subjects.append((SubjectKind.HOUSEHOLD, link.household_id))
        records = self.store.for_subjects(subjects, request.grantee)
        need = Need(
            request.grantee,
            validation.purpose(request.exchange_purpose),
            frozenset(request.scopes),
            int(self.clock()),
        )
        verdict = choose(records, need, partial=False)
        if verdict.consent is None:
            return cpb.CheckConsentResponse(covered=False, reason=str(verdict.reason or ""))
        return cpb.CheckConsentResponse(
            covered=True,
            consent_id=verdict.consent.consent_id,
            covered_scopes=sorted(verdict.covered),
        )

    def handler(self, engine: Engine) -> grpc.GenericRpcHandler:
        """The ConsentRegistry service behind the engine's authentication and policy."""
        return service_handler(
            engine,
            SERVICE,
            {
                "GrantConsent": UnaryMethod(cpb.GrantConsentRequest, self.grant, blocking=True),
                "RevokeConsent": UnaryMethod(cpb.RevokeConsentRequest, self.revoke, blocking=True),
                "GetConsent": UnaryMethod(cpb.GetConsentRequest, self.get, blocking=True),
                "ListConsents": UnaryMethod(
                    cpb.ListConsentsRequest,
                    self.list,
                    subject_of=lambda r: validation.subject(r.subject),
                    blocking=True,
                ),
                "CheckConsent": UnaryMethod(
                    cpb.CheckConsentRequest,
                    self.check,
                    subject_of=lambda r: validation.subject(r.subject),
                    blocking=True,
                ),
            },
        )
