"""The programmes file: shipped defaults, and errors that name the field at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline.programmes import ProgrammeConfigError, load, load_default, parse

BANDS = """
[[score_band]]
code = "LOW"
below = 9.5
[[score_band]]
code = "HIGH"
"""

PROGRAMME = """
[[programme]]
code = "AMOT"
name = "AMO Tadamon"
operator = "CNSS"
conditions = ["no_other_amo_coverage"]
[[programme.threshold]]
version = "V1"
value = 9.3264284
effective_from = 2022-12-01
legal_reference = "ref"
"""


def test_shipped_programmes_define_amot_and_asd_with_their_thresholds() -> None:
    catalogue = load_default()
    assert catalogue.programmes["AMOT"].thresholds[0].value == 9.3264284
    assert catalogue.programmes["ASD"].thresholds[0].value == 9.743001


def test_score_bands_cover_every_score() -> None:
    bands = load_default().bands
    assert bands.band(-1.0) == "S1"
    assert bands.band(9.0) == "S2"
    assert bands.band(99.0) == "S7"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (PROGRAMME.replace('"no_other_amo_coverage"', '"has_a_cat"'), "programme[0].conditions"),
        (
            PROGRAMME.replace("value = 9.3264284", 'value = "low"'),
            "programme[0].threshold[0].value",
        ),
        (
            PROGRAMME.replace("effective_from = 2022-12-01", 'effective_from = "soon"'),
            "programme[0].threshold[0].effective_from",
        ),
        (PROGRAMME.replace('code = "AMOT"', 'code = "amot"'), "programme[0].code"),
        (PROGRAMME.replace('operator = "CNSS"', 'operator = "CNSS"\ncolour = 1'), "colour"),
        (PROGRAMME + PROGRAMME, "programme[1].code: AMOT defined twice"),
        (PROGRAMME.split("[[programme.threshold]]", maxsplit=1)[0], "programme[0].threshold"),
        ("", "no [[programme]]"),
        ("code = [", "programmes.toml"),
    ],
)
def test_invalid_programme_is_refused_naming_the_field(broken: str, message: str) -> None:
    with pytest.raises(ProgrammeConfigError) as err:
        parse(BANDS + broken, "programmes.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("programmes.toml")


def test_bands_must_ascend() -> None:
    bands = BANDS.replace(
        'code = "HIGH"', 'code = "MID"\nbelow = 9.0\n[[score_band]]\ncode = "HIGH"'
    )
    with pytest.raises(ProgrammeConfigError, match=r"score_band\[1\]\.below"):
        parse(bands + PROGRAMME, "p.toml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProgrammeConfigError, match=r"nowhere\.toml"):
        load(tmp_path / "nowhere.toml")
