"""French and Arabic, switchable: every word a page shows comes from a catalogue here.

The catalogues are TOML files (gateway/console/locales/<lang>.toml) with the same keys,
held equal by a test. Arabic pages are laid out right to left. Times are shown in
Africa/Casablanca, the citizens' and officers' own clock, with its offset.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo

from markupsafe import Markup

LANGUAGES = ("fr", "ar")
DEFAULT = "fr"
ZONE = ZoneInfo("Africa/Casablanca")


@cache
def catalogue(lang: str, package: str = "gateway.console") -> dict[str, str]:
    """The messages of `lang` (one of LANGUAGES) in `package`'s locales folder (the
    console's, or the citizen portal's), read once."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalogue for {lang!r}")
    text = resources.files(package).joinpath("locales", f"{lang}.toml").read_text(encoding="utf-8")
    return {str(k): str(v) for k, v in tomllib.loads(text).items()}


def language(asked: str | None) -> str:
    """`asked` if it is one of ours, else the default."""
    return asked if asked in LANGUAGES else DEFAULT


@dataclass(frozen=True)
class Words:
    """What a template calls as `t("key", name=value)`, in one language."""

    lang: str
    package: str = "gateway.console"

    @property
    def direction(self) -> str:
        return "rtl" if self.lang == "ar" else "ltr"

    def __call__(self, key: str, **values: object) -> str:
        text = (
            catalogue(self.lang, self.package).get(key)
            or catalogue(DEFAULT, self.package).get(key)
            or key
        )
        return text.format(**values) if values else text


def local_time(moment: dt.datetime) -> str:
    """`moment` in Casablanca's time, to the second, with the offset (never ambiguous)."""
    return moment.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S %z")


def when(moment: dt.datetime) -> Markup:
    """A time as pages show it: Casablanca's, in a <time> element laid out left to right,
    so that an Arabic page does not reorder its digits and offset."""
    return Markup('<time dir="ltr" datetime="{}">{}</time>').format(
        moment.isoformat(), local_time(moment)
    )
