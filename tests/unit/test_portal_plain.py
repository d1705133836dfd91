"""The citizen's report in plain words: kinds of data, never a disclosure dropped."""

from __future__ import annotations

import re
from importlib import resources

from gateway.console.i18n import LANGUAGES, catalogue
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.portal import plain

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
