"""The contest pages' words: every state, step, outcome and actor the gateway can name has
its words in both catalogues (the pages look them up by value, which the catalogues' own
test cannot follow), and a text is judged by the gateway's rule before it is sent: the
console restates gateway/contests/cases.py's rule (its part may not import it), held equal
here."""

from __future__ import annotations

from gateway.console import i18n, pages_contests
from gateway.console.i18n import catalogue
from gateway.contests import cases


def test_every_state_step_outcome_and_actor_has_words_in_both_languages() -> None:
    tables = (
        (pages_contests.STATE_WORDS, cases.STATES),
        (pages_contests.ACTION_WORDS, cases.ACTIONS),
        (pages_contests.OUTCOME_WORDS, cases.OUTCOMES),
        (pages_contests.ACTOR_WORDS, cases.ACTOR_KINDS),
    )
    for words, values in tables:
        assert set(words) == set(values)
        for lang in i18n.LANGUAGES:
            assert set(words.values()) <= set(catalogue(lang))


def test_the_console_knows_the_gateways_states_and_text_bound() -> None:
    assert pages_contests.STATES == cases.STATES
    assert pages_contests.MAX_TEXT == cases.MAX_TEXT


def test_a_text_the_console_accepts_is_one_the_gateway_accepts_and_no_other() -> None:
    for text in ("", " \n", "a" * 2000, "a" * 2001, " a\r\nb ", "a\tb", "a\x1bb", "\ud800"):
        try:
            cases.check_text(text)
            gateway_accepts = True
        except cases.CaseError:
            gateway_accepts = False
        assert (pages_contests.text_problem(text) == "") == gateway_accepts, repr(text)


def test_an_answer_of_blanks_is_empty() -> None:
    assert pages_contests.text_problem(" \r\n ") == "contests.text_empty"


def test_an_answer_over_two_thousand_characters_is_too_long() -> None:
    assert pages_contests.text_problem("a" * 2001) == "contests.text_long"


def test_an_answer_of_two_thousand_characters_with_its_line_ends_is_accepted() -> None:
    assert pages_contests.text_problem("a" * 1000 + "\r\n" + "b" * 999) == ""


def test_an_answer_holding_a_control_character_is_named_so() -> None:
    assert pages_contests.text_problem("ok\x00") == "contests.text_control"
