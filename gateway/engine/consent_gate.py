"""Consent on the exchange path: when a grant's basis is `consent`, find the citizen's
consent that covers this exchange, count its use, and narrow what may be disclosed.

Runs after the policy grant and before any registry data is read for the answer (a person
given by IDCS is first resolved to their household, since a household's consent covers its
members). Reads the store on every check, so a revocation made through any replica sharing
the database applies to the very next exchange.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.base import FetchContext
from consent import messages
from consent.checker import Need, choose, window_start
from consent.model import ConsentRecord, SubjectKind
from consent.store import ConsentStore
from gateway.base.errors import ExchangeError, Reason
from gateway.pipeline.exchange import fetch_or_unavailable
from gateway.pipeline.query import Key
from gateway.pipeline.registries import Registries
from gateway.security.policy import Grant, consented
from gateway.security.projection import FieldTree


@dataclass(frozen=True, slots=True)
class Permit:
    """A consent that covers one subject's exchange, and the fields it lets through."""

    consent_id: str
    fields: FieldTree
    paths: tuple[str, ...]


def _denied(reason: Reason, message: str) -> ExchangeError:
    """A consent refusal: its reason for programs, its message (consent/messages.py) for
    the person who reads it, saying which of the consent's conditions failed."""
    return ExchangeError(reason, message)


def _store_down() -> ExchangeError:
    return ExchangeError(
        Reason.CONSENT_STORE_UNAVAILABLE,
        "the consent registry did not answer; nothing was disclosed, retry later",
    )


class ConsentGate:
    """Checks consents for many subjects with one store query and one membership lookup."""

    def __init__(
        self,
        store: ConsentStore,
        registries: Registries,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registries = registries
        self.clock = clock

    def check(self, grant: Grant, key: Key, ctx: FetchContext) -> Permit:
        """The permit for one subject, or FAILED_PRECONDITION with the consent reason."""
        (outcome,) = self.check_many(grant, [key], ctx)
        if isinstance(outcome, ExchangeError):
            raise outcome
        return outcome

    def check_many(
        self, grant: Grant, keys: Sequence[Key | ExchangeError], ctx: FetchContext
    ) -> list[Permit | ExchangeError]:
        """One outcome per key: a Permit, or the error that key already was or now gets."""
        candidates = self._candidates(keys, ctx)
        wanted = sorted({s for c in candidates if c is not None for s in c})
        try:
            records = self.store.for_subjects(wanted, grant.institution) if wanted else []
        except Exception as exc:  # a store outage is the caller's retry, not a gateway bug
            raise _store_down() from exc
        by_subject: dict[tuple[SubjectKind, str], list[ConsentRecord]] = {}
        for record in records:
            by_subject.setdefault((record.subject_kind, record.subject), []).append(record)
        now = int(self.clock())
        need = Need(grant.institution, grant.purpose, grant.scopes, now)
        out: list[Permit | ExchangeError] = []
        for key, subjects in zip(keys, candidates, strict=True):
            if isinstance(key, ExchangeError):
                out.append(key)
                continue
            mine = [r for s in subjects or () for r in by_subject.get(s, ())]
            out.append(self._permit(grant, need, mine))
        return out

    def _permit(
        self, grant: Grant, need: Need, records: list[ConsentRecord]
    ) -> Permit | ExchangeError:
        verdict = choose(records, need, partial=grant.partial)
        if verdict.consent is None:
            reason = verdict.reason or Reason.CONSENT_MISSING
            return _denied(reason, messages.refused(verdict, need))
        record = verdict.consent
        start = window_start(record, need.now)
        cap = record.use_cap
        if start is not None and cap is not None:
            try:
                used = self.store.count_use(record.consent_id, start)
            except Exception:  # fail closed: an uncounted use is refused
                return _store_down()
            if used > cap.max_uses:
                message = messages.used_up(need, record, cap, start)
                return _denied(Reason.CONSENT_USE_EXCEEDED, message)
        tree, paths = consented(grant, verdict.covered)
        return Permit(record.consent_id, tree, paths)

    def _candidates(
        self, keys: Sequence[Key | ExchangeError], ctx: FetchContext
    ) -> list[list[tuple[SubjectKind, str]] | None]:
        """The consent subjects that can cover each key: a person's own consents and their
        household's; a household's consents only."""
        people = [k[1] for k in keys if not isinstance(k, ExchangeError) and k[0] == "idcs"]
        links = fetch_or_unavailable(self.registries.memberships, people, ctx) if people else {}
        out: list[list[tuple[SubjectKind, str]] | None] = []
        for key in keys:
            if isinstance(key, ExchangeError):
                out.append(None)
            elif key[0] == "household_id":
                out.append([(SubjectKind.HOUSEHOLD, key[1])])
            else:
                subjects = [(SubjectKind.PERSON, key[1])]
                link = links.get(key[1])
                if link is not None:
                    subjects.append((SubjectKind.HOUSEHOLD, link.household_id))
                out.append(subjects)
        return out
