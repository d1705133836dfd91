"""The console's words: two catalogues held equal, every key a page or the code names
present in them, right-to-left Arabic, French by default, and Casablanca's clock."""

from __future__ import annotations

import datetime as dt
import re
import string
from pathlib import Path

from gateway.console import attention, i18n, pages_auth
from gateway.console.i18n import Words, catalogue, local_time
from gateway.transparency.indicators import TABLES

CONSOLE = Path(i18n.__file__).parent
TEMPLATES = sorted((CONSOLE / "templates").glob("*.html"))
SOURCES = sorted(CONSOLE.glob("*.py"))

# t("key") and t("key", name=value, ...), with a literal key (not t(var), not "a." ~ b).
LITERAL_CALL = re.compile(r"""\bt\(\s*"([^"]+)"\s*((?:,\s*\w+\s*=[^,)]+)*)\)""")
# A key built in the template: t("prefix." ~ something).
BUILT_CALL = re.compile(r"""\bt\(\s*"([^"]+)"\s*~""")
# search.html's macro: field("name", "label.key", ...), shown as t(label_key).
FIELD_LABEL = re.compile(r"""\bfield\(\s*"[^"]+"\s*,\s*"([^"]+)\"""")
ARGUMENT = re.compile(r",\s*(\w+)\s*=")


def placeholders(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name is not None}


def template_calls() -> list[tuple[str, str, set[str]]]:
    """(template, key, names of the values passed) for every t("literal", ...) call."""
    return [
        (path.name, m.group(1), set(ARGUMENT.findall(m.group(2))))
        for path in TEMPLATES
        for m in LITERAL_CALL.finditer(path.read_text(encoding="utf-8"))
    ]


def code_keys(prefix: str) -> set[str]:
    """The message keys starting with `prefix` that the console's Python code names."""
    quoted = re.compile(rf"""["']({re.escape(prefix)}[\w.]+)["']""")
    found = {key for path in SOURCES for key in quoted.findall(path.read_text(encoding="utf-8"))}
    return {key for key in found if not key.endswith(".html")}


# The catalogues.


def test_french_and_arabic_have_exactly_the_same_keys() -> None:
    french, arabic = set(catalogue("fr")), set(catalogue("ar"))
    assert french - arabic == set()
    assert arabic - french == set()


def test_a_message_has_the_same_placeholders_in_french_and_in_arabic() -> None:
    differing = {
        key: (placeholders(text), placeholders(catalogue("ar")[key]))
        for key, text in catalogue("fr").items()
        if placeholders(text) != placeholders(catalogue("ar").get(key, ""))
    }
    assert differing == {}


def test_no_message_is_empty() -> None:
    for lang in i18n.LANGUAGES:
        assert [key for key, text in catalogue(lang).items() if not text.strip()] == []


# Keys the pages and the code use.


def test_the_templates_were_read() -> None:
    assert {p.name for p in TEMPLATES} >= {"base.html", "login.html", "search.html"}
    assert len(template_calls()) > 50


def test_every_key_a_template_names_is_in_the_catalogues() -> None:
    named = {key for _, key, _ in template_calls()}
    named |= {
        key for path in TEMPLATES for key in FIELD_LABEL.findall(path.read_text(encoding="utf-8"))
    }
    assert named - set(catalogue("fr")) == set()
    assert named - set(catalogue("ar")) == set()


def test_a_template_gives_each_message_exactly_the_values_it_shows() -> None:
    mismatched = [
        (name, key, given, placeholders(catalogue("fr")[key]))
        for name, key, given in template_calls()
        if key in catalogue("fr") and given != placeholders(catalogue("fr")[key])
    ]
    assert mismatched == []


def test_keys_built_in_templates_are_only_those_whose_endings_are_checked() -> None:
    built = {
        key for path in TEMPLATES for key in BUILT_CALL.findall(path.read_text(encoding="utf-8"))
    }
    assert built == {
        "decision.",
        "login.note.",
        "attention.kind.",
        "attention.msg.",
        "transparency.table.",
    }


def test_every_attention_finding_has_words_for_its_kind_and_message() -> None:
    for lang in i18n.LANGUAGES:
        words = set(catalogue(lang))
        assert {f"attention.kind.{k}" for k in attention.KINDS} <= words
        assert {f"attention.msg.{m}" for m in attention.MESSAGES} <= words


def test_every_published_table_has_a_title_in_both_languages() -> None:
    for lang in i18n.LANGUAGES:
        assert {f"transparency.table.{n}" for n in TABLES} <= set(catalogue(lang))


def test_both_decisions_have_words() -> None:
    for lang in i18n.LANGUAGES:
        assert {"decision.permit", "decision.deny"} <= set(catalogue(lang))


def test_every_note_the_login_page_accepts_has_words() -> None:
    assert set(pages_auth.NOTES) == {"expired", "signed_out"}
    for lang in i18n.LANGUAGES:
        assert {f"login.note.{note}" for note in pages_auth.NOTES} <= set(catalogue(lang))


def test_every_error_key_the_code_names_is_in_the_catalogues() -> None:
    named = code_keys("error.")
    assert "error.gateway" in named  # the search did find them
    assert named - set(catalogue("fr")) == set()
    assert named - set(catalogue("ar")) == set()


def test_every_login_message_the_code_names_is_in_the_catalogues() -> None:
    named = code_keys("login.")
    assert {"login.failed", "login.locked", "login.stale"} <= named
    assert named - set(catalogue("fr")) == set()
    assert named - set(catalogue("ar")) == set()


# Words.


def test_arabic_pages_are_laid_out_right_to_left() -> None:
    assert Words("ar").direction == "rtl"


def test_french_pages_are_laid_out_left_to_right() -> None:
    assert Words("fr").direction == "ltr"


def test_an_unknown_or_missing_language_falls_back_to_french() -> None:
    assert i18n.language("en") == "fr"
    assert i18n.language("") == "fr"
    assert i18n.language(None) == "fr"
    assert Words(i18n.language("de"))("login.title") == "Connexion"


def test_a_known_language_is_kept() -> None:
    assert i18n.language("ar") == "ar"
    assert Words("ar")("login.title") == catalogue("ar")["login.title"]


def test_values_are_put_in_the_message() -> None:
    assert Words("fr")("error.title", status=403) == "Erreur 403"


def test_an_unknown_key_is_shown_as_itself() -> None:
    assert Words("ar")("no.such.key") == "no.such.key"


# Time.


def test_times_are_shown_in_casablanca_with_the_offset() -> None:
    moment = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
    assert local_time(moment) == "2026-01-15 13:00:00 +0100"


def test_during_ramadan_casablanca_is_on_utc_and_says_so() -> None:
    moment = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert local_time(moment) == "2026-03-01 12:00:00 +0000"
