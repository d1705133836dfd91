"""The citizen's report in plain words: kinds of data, never a disclosure dropped."""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources

from gateway.console.i18n import LANGUAGES, catalogue
from gateway.contests import cases
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.pb.jisr.v1.registry_pb2 import Subject
from gateway.portal import plain
from gateway.portal.pages_contests import text_problem

PACKAGE = "gateway.portal"


def test_fields_are_told_as_the_kinds_of_data_they_belong_to_in_a_fixed_order() -> None:
    kinds, unnamed = plain.groups_of(["eligible", "idcs", "vital_status", "household_id"])
    assert kinds == ("identity", "vital", "eligibility")
    assert unnamed == ()


def test_members_details_are_the_households_composition() -> None:
    assert plain.groups_of(["members.birth_date", "members.idcs"]) == (("composition",), ())


def test_a_field_without_words_is_shown_as_named_not_dropped() -> None:
    assert plain.groups_of(["idcs", "new_field"]) == (("identity",), ("new_field",))


def test_the_report_is_newest_first_and_says_refusals() -> None:
    old = apb.AccessEntry(institution="CNSS", decision="permit", fields=["idcs"])
    old.time.seconds = 1_700_000_000
    new = apb.AccessEntry(institution="MEN", decision="deny")
    new.time.seconds = 1_800_000_000
    shown = plain.report([old, new])
    assert [(a.institution, a.permitted) for a in shown] == [("MEN", False), ("CNSS", True)]


def test_french_and_arabic_have_the_same_words() -> None:
    assert set(catalogue("fr", PACKAGE)) == set(catalogue("ar", PACKAGE))


def test_every_kind_of_data_has_words() -> None:
    for lang in LANGUAGES:
        assert {f"data.{k}" for k in plain.ORDER} <= set(catalogue(lang, PACKAGE))


def test_every_key_a_template_names_is_in_both_catalogues() -> None:
    folder = resources.files(PACKAGE).joinpath("templates")
    keys = {
        key
        for page in folder.iterdir()
        for key in re.findall(r'\bt\("([a-z_.]*[a-z_])"', page.read_text(encoding="utf-8"))
    }
    assert keys
    for lang in LANGUAGES:
        assert keys - set(catalogue(lang, PACKAGE)) == set()


def _case(state: str, appeal_due: int = 0) -> kpb.ContestCase:
    c = kpb.ContestCase(case_id="case-0123456789abcdef", state=state, institution="DEMO")
    c.opened.seconds = 1_800_000_000
    c.appeal_due.seconds = appeal_due
    return c


NOW = dt.datetime.fromtimestamp(1_800_000_500, dt.UTC)


def test_an_answered_case_may_be_accepted_escalated_or_withdrawn_within_the_window() -> None:
    shown = plain.case(_case("answered", appeal_due=1_800_001_000), NOW)
    assert (shown.can_accept, shown.can_escalate, shown.can_withdraw) == (True, True, True)


def test_past_the_appeal_window_no_escalation_is_offered() -> None:
    shown = plain.case(_case("answered", appeal_due=1_800_000_400), NOW)
    assert (shown.can_accept, shown.can_escalate, shown.can_withdraw) == (True, False, True)


def test_an_open_case_may_only_be_withdrawn_and_an_escalated_one_not_at_all() -> None:
    opened = plain.case(_case("open"), NOW)
    escalated = plain.case(_case("escalated"), NOW)
    assert (opened.can_accept, opened.can_escalate, opened.can_withdraw) == (False, False, True)
    assert (escalated.can_accept, escalated.can_escalate, escalated.can_withdraw) == (
        False,
        False,
        False,
    )


def test_an_unset_deadline_is_none_not_the_epoch() -> None:
    assert plain.case(_case("open"), NOW).appeal_due is None


def _consent(grantor: str, status: cpb.ConsentStatus.ValueType) -> cpb.Consent:
    return cpb.Consent(
        consent_id="C" + "0" * 24,
        subject=Subject(household_id="H000000001"),
        grantor_idcs=grantor,
        grantee="MEN",
        scopes=["situation", "identity", "new_scope"],
        status=status,
    )


def test_only_the_grantor_may_revoke_an_active_consent() -> None:
    mine = plain.consent(_consent("1111111111", cpb.CONSENT_STATUS_ACTIVE), "1111111111")
    theirs = plain.consent(_consent("2222222222", cpb.CONSENT_STATUS_ACTIVE), "1111111111")
    revoked = plain.consent(_consent("1111111111", cpb.CONSENT_STATUS_REVOKED), "1111111111")
    assert (mine.can_revoke, theirs.can_revoke, revoked.can_revoke) == (True, False, False)
    assert (mine.about_household, revoked.status) == (True, "revoked")


def test_a_consents_kinds_of_data_keep_the_reports_order_and_an_unknown_one() -> None:
    shown = plain.consent(_consent("1111111111", cpb.CONSENT_STATUS_ACTIVE), "1111111111")
    assert shown.scopes == ("identity", "situation", "new_scope")


def test_a_citizens_text_is_checked_as_the_gateway_would() -> None:
    assert text_problem("  \n ") == "contest.text_empty"
    assert text_problem("x" * 2001) == "contest.text_long"
    assert text_problem("a\x00b") == "contest.text_control"
    assert text_problem("Ligne 1\nLigne 2") == ""


def test_a_french_non_breaking_space_and_an_arabic_joiner_are_not_control_characters() -> None:
    assert text_problem("Pourquoi\u202f? l'AMO\u00a0!") == ""
    assert text_problem("لا\u200dأعرف") == ""


def test_tabs_and_carriage_returns_are_cleaned_not_refused() -> None:
    assert text_problem("a\tb\r\nc\rd") == ""


def test_the_portal_refuses_exactly_what_the_gateway_refuses_once_cleaned() -> None:
    for text in ("", " \n", "a" * 2000, "a" * 2001, "a\x1bb", "\ud800", "ok\x00"):
        cleaned = text.replace("\t", " ").strip()
        try:
            cases.check_text(cleaned)
            accepted = True
        except cases.CaseError:
            accepted = False
        assert (text_problem(text) == "") == accepted, repr(text)
