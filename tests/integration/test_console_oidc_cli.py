"""`jisr console user link-oidc` and `unlink-oidc`: letting an identity provider's subject
sign in as an officer, and stopping it, on SQLite and on PostgreSQL, as an administrator
runs them (the same harness as tests/integration/test_console_user_cli.py)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_console_user_cli import Site, jisr_parser
from tests.support import databases, processes

ISSUER = "https://idp.cnss.ma/realms/agents"
SUBJECT = "248289761001"


@pytest.fixture(params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Site]:
    monkeypatch.delenv("JISR_DATABASE_URL", raising=False)
    monkeypatch.delenv("JISR_STATE_DIR", raising=False)
    if request.param == "sqlite":
        yield Site(tmp_path, None, monkeypatch, capsys)
        return
    with databases.postgres_schema() as url:
        monkeypatch.setenv("JISR_DATABASE_URL", url)
        yield Site(tmp_path, url, monkeypatch, capsys)


def linked(site: Site, subject: str = SUBJECT, issuer: str = ISSUER) -> str | None:
    """The username the console would sign (issuer, subject) in as, if any."""
    store = site.store()
    try:
        account = store.oidc_account(issuer, subject)
    finally:
        store.close()
    return None if account is None else account.username


def test_link_oidc_lets_the_subject_sign_in_as_the_officer(site: Site) -> None:
    site.add()
    result = site.run("link-oidc", "amina.b", "--issuer", ISSUER, "--subject", SUBJECT)
    assert (result.code, result.err) == (0, "")
    assert result.out == f"linked amina.b to subject {SUBJECT} at {ISSUER}\n"
    assert linked(site) == "amina.b"


def test_a_subject_linked_already_is_one_line_and_exit_2(site: Site) -> None:
    site.add()
    site.add("karim.t")
    site.run("link-oidc", "amina.b", "--issuer", ISSUER, "--subject", SUBJECT)
    again = site.run("link-oidc", "karim.t", "--issuer", ISSUER, "--subject", SUBJECT)
    assert (again.code, again.out) == (2, "")
    assert again.err.startswith("jisr console user link-oidc: subject: linked already")
    assert linked(site) == "amina.b"


def test_link_oidc_of_an_unknown_officer_is_one_line_and_exit_2(site: Site) -> None:
    result = site.run("link-oidc", "nobody", "--issuer", ISSUER, "--subject", SUBJECT)
    assert result.code == 2
    assert result.err == "jisr console user link-oidc: username: no account 'nobody'\n"


@pytest.mark.parametrize(
    ("issuer", "subject", "field"),
    [
        ("http://idp.cnss.ma", SUBJECT, "issuer"),
        (ISSUER, "", "subject"),
        (ISSUER, "x" * 256, "subject"),
    ],
)
def test_link_oidc_names_a_bad_issuer_or_subject_and_links_nothing(
    site: Site, issuer: str, subject: str, field: str
) -> None:
    site.add()
    result = site.run("link-oidc", "amina.b", "--issuer", issuer, "--subject", subject)
    assert result.code == 2
    assert result.err.startswith(f"jisr console user link-oidc: {field}: ")
    assert linked(site, subject, issuer) is None


def test_unlink_oidc_stops_the_sign_in_and_ends_the_officers_sessions(site: Site) -> None:
    site.add()
    site.run("link-oidc", "amina.b", "--issuer", ISSUER, "--subject", SUBJECT)
    session = site.log_in()
    result = site.run("unlink-oidc", "amina.b", "--issuer", ISSUER)
    assert (result.code, result.out) == (0, f"unlinked amina.b at {ISSUER}; 1 session(s) ended\n")
    assert linked(site) is None
    assert site.session(session.token_hash) is None


def test_unlink_oidc_without_a_link_is_one_line_and_exit_2(site: Site) -> None:
    site.add()
    result = site.run("unlink-oidc", "amina.b", "--issuer", ISSUER)
    assert result.code == 2
    assert result.err == f"jisr console user unlink-oidc: issuer: amina.b has no link at {ISSUER}\n"


def test_link_oidc_needs_the_issuer_and_the_subject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exited:
        jisr_parser().parse_args(["console", "user", "link-oidc", "amina.b", "--issuer", ISSUER])
    assert exited.value.code == 2
    assert "--subject" in capsys.readouterr().err


def test_serve_refuses_a_bad_oidc_config_naming_the_file_provider_and_field(
    tmp_path: Path,
) -> None:
    config = tmp_path / "console-oidc.toml"
    config.write_text('[provider.cnss]\nname = "CNSS"\n', encoding="utf-8")
    argv = ["console", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    served = subprocess.run(
        [*processes.jisr(*argv, "--oidc-config", str(config))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=processes.environment(),
    )
    assert served.returncode == 2
    assert served.stderr == f"jisr console serve: {config}: provider 'cnss': issuer: missing\n"
    assert not (tmp_path / "console.sqlite").exists()  # refused before anything opened
