"""`jisr console user`: managing the console's officers from the command line, on SQLite and
on PostgreSQL (JISR_DATABASE_URL), as a DPO's administrator runs it.

The commands are run through a small `jisr console` parser made here with
`add_user_parsers` (the real `jisr console` wires the same function), in this process
with captured output, and once in a subprocess, as a shell runs it. Each test checks the
exit status and output a script sees, and the store as the console then reads it.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyotp
import pytest

from gateway.cli.console_users import add_user_parsers
from gateway.console import accounts, sessions
from gateway.console.accounts import Account
from gateway.console.store import ConsoleStore, open_console_store
from tests.support import databases

PASSWORD = "correct horse Battery"
NEW_PASSWORD = "another Pass phrase 7"
ROOT = Path(__file__).resolve().parents[2]


def jisr_parser() -> argparse.ArgumentParser:
    """`jisr console user ...` as the real command line will have it."""
    root = argparse.ArgumentParser(prog="jisr")
    commands = root.add_subparsers(dest="command", required=True)
    console = commands.add_parser("console")
    add_user_parsers(console.add_subparsers(dest="console_action", required=True))
    return root


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass
class Site:
    """One console's store, reached as `jisr console user` reaches it: --state-dir for
    SQLite, JISR_DATABASE_URL for PostgreSQL."""

    state_dir: Path
    url: str | None
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str, stdin: str = "") -> Result:
        """Run `jisr console user ARGV...` in this process; its exit status and output."""
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        args = jisr_parser().parse_args(["console", "user", *argv, *self.where()])
        code = args.run(args)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def where(self) -> list[str]:
        """--state-dir for SQLite; PostgreSQL is named by the environment."""
        return [] if self.url else ["--state-dir", str(self.state_dir)]

    def add(self, username: str = "amina.b", *flags: str) -> Result:
        result = self.run(
            "add", username, "--institution", "CNSS", "--password-stdin", *flags, stdin=PASSWORD
        )
        assert result.code == 0, result.err
        return result

    def store(self) -> ConsoleStore:
        return open_console_store(self.url, self.state_dir)

    def account(self, username: str = "amina.b") -> Account:
        store = self.store()
        try:
            found = store.account(username)
        finally:
            store.close()
        assert found is not None
        return found

    def log_in(self, username: str = "amina.b") -> sessions.Session:
        """A session as the web app would save at login, with one earlier failure."""
        session = sessions.new_session(username, "fr", 1_750_000_000_000_000)[1]
        store = self.store()
        try:
            store.save_session(session)
            store.record_failure(username, 1_749_999_999_000_000)
        finally:
            store.close()
        return session

    def session(self, token_hash: str) -> sessions.Session | None:
        store = self.store()
        try:
            return store.session(token_hash)
        finally:
            store.close()


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


# add


def test_add_prints_the_officer_id_of_a_new_account_whose_password_works(site: Site) -> None:
    result = site.add()
    account = site.account()
    assert result.out == f"officer id: {account.officer_id}\n"
    assert re.fullmatch(r"officer-[0-9a-f]{16}", account.officer_id)
    assert (account.institution, account.disabled, account.totp_secret) == ("CNSS", False, None)
    assert accounts.password_ok(account, PASSWORD)


def test_add_with_totp_prints_the_secret_and_uri_to_enrol(site: Site) -> None:
    result = site.add("amina.b", "--totp")
    account = site.account()
    assert account.totp_secret is not None
    assert f"totp secret: {account.totp_secret}\n" in result.out
    uri = re.search(r"^totp uri: (\S+)$", result.out, re.MULTILINE)
    assert uri is not None
    assert pyotp.parse_uri(uri.group(1)).secret == account.totp_secret
    assert "authenticator app" in result.err


def test_add_asks_for_the_password_twice_without_password_stdin(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    typed = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert site.run("add", "amina.b", "--institution", "CNSS").code == 0
    assert accounts.password_ok(site.account(), PASSWORD)


def test_add_refuses_two_different_passwords(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    typed = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    result = site.run("add", "amina.b", "--institution", "CNSS")
    assert result == Result(2, "", "jisr console user add: password: the two entries differ\n")


def test_add_without_a_terminal_or_password_stdin_says_how_to_script_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_input)
    result = site.run("add", "amina.b", "--institution", "CNSS")
    assert result.code == 2
    assert result.err == (
        "jisr console user add: password: no input (use --password-stdin in scripts)\n"
    )


def test_add_reads_only_the_first_line_of_stdin(site: Site) -> None:
    result = site.run(
        "add", "amina.b", "--institution", "CNSS", "--password-stdin", stdin=PASSWORD + "\nrest\n"
    )
    assert result.code == 0
    assert accounts.password_ok(site.account(), PASSWORD)


def test_add_of_an_existing_user_is_one_line_and_exit_2(site: Site) -> None:
    site.add()
    before = site.account()
    result = site.run(
        "add", "amina.b", "--institution", "CNDP", "--password-stdin", stdin=NEW_PASSWORD
    )
    assert result == Result(2, "", "jisr console user add: username: 'amina.b' exists already\n")
    assert site.account() == before


@pytest.mark.parametrize(
    ("argv", "stdin", "field"),
    [
        (["Amina", "--institution", "CNSS"], PASSWORD, "username"),
        (["amina.b", "--institution", "cnss"], PASSWORD, "institution"),
        (["amina.b", "--institution", "CNSS"], "short", "password"),
        (["amina.b", "--institution", "CNSS"], "", "password"),
    ],
)
def test_add_names_the_field_at_fault_and_stores_nothing(
    site: Site, argv: list[str], stdin: str, field: str
) -> None:
    result = site.run("add", *argv, "--password-stdin", stdin=stdin)
    assert result.code == 2
    assert result.out == ""
    assert re.fullmatch(f"jisr console user add: {field}: [^\n]+\n", result.err)
    store = site.store()
    try:
        assert store.accounts() == []
    finally:
        store.close()


# list


def test_list_shows_every_officer_by_username_with_totp_and_state(site: Site) -> None:
    site.add("karim.t", "--totp")
    site.add("amina.b")
    assert site.run("disable", "karim.t").code == 0
    result = site.run("list")
    amina, karim = site.account("amina.b"), site.account("karim.t")
    header, *rows = result.out.splitlines()
    columns = "USERNAME INSTITUTION OFFICER ID TOTP DISABLED CREATED (UTC)"
    assert header.split() == columns.split()
    day = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
    assert [r.split()[:5] for r in rows] == [
        ["amina.b", "CNSS", amina.officer_id, "no", "no"],
        ["karim.t", "CNSS", karim.officer_id, "yes", "yes"],
    ]
    assert all(day.fullmatch(r.split()[5]) for r in rows)
    assert result.code == 0


def test_list_of_no_officers_is_the_header_alone(site: Site) -> None:
    result = site.run("list")
    assert result.code == 0
    assert result.out.splitlines()[0].startswith("USERNAME")
    assert len(result.out.splitlines()) == 1


# disable, enable


def test_disable_refuses_logins_and_ends_the_officers_sessions(site: Site) -> None:
    site.add()
    session = site.log_in()
    result = site.run("disable", "amina.b")
    assert result == Result(0, "disabled amina.b; 1 session(s) ended\n", "")
    assert site.account().disabled
    assert site.session(session.token_hash) is None


def test_enable_lets_a_disabled_officer_in_again(site: Site) -> None:
    site.add()
    site.run("disable", "amina.b")
    assert site.run("enable", "amina.b") == Result(0, "enabled amina.b\n", "")
    assert not site.account().disabled


@pytest.mark.parametrize("action", ["disable", "enable"])
def test_an_unknown_user_is_one_line_and_exit_2(site: Site, action: str) -> None:
    result = site.run(action, "nobody")
    assert result == Result(2, "", f"jisr console user {action}: username: no account 'nobody'\n")


# passwd


def test_passwd_replaces_the_password_ends_sessions_and_lifts_a_lock(site: Site) -> None:
    site.add()
    before = site.account()
    session = site.log_in()
    result = site.run("passwd", "amina.b", "--password-stdin", stdin=NEW_PASSWORD)
    assert result == Result(0, "new password for amina.b; 1 session(s) ended\n", "")
    after = site.account()
    assert accounts.password_ok(after, NEW_PASSWORD)
    assert not accounts.password_ok(after, PASSWORD)
    assert replace(after, password_hash=before.password_hash) == before
    assert site.session(session.token_hash) is None
    store = site.store()
    try:
        assert store.failures_since("amina.b", 0) == []
    finally:
        store.close()


def test_passwd_refuses_a_weak_password_and_keeps_the_old_one(site: Site) -> None:
    site.add()
    result = site.run("passwd", "amina.b", "--password-stdin", stdin="weak")
    assert result.code == 2
    assert result.err.startswith("jisr console user passwd: password: ")
    assert accounts.password_ok(site.account(), PASSWORD)


def test_passwd_of_an_unknown_user_is_one_line_and_exit_2(site: Site) -> None:
    result = site.run("passwd", "nobody", "--password-stdin", stdin=NEW_PASSWORD)
    assert result == Result(2, "", "jisr console user passwd: username: no account 'nobody'\n")


# totp


def test_totp_enable_gives_a_new_secret_to_enrol_and_ends_sessions(site: Site) -> None:
    site.add("amina.b", "--totp")
    old = site.account().totp_secret
    session = site.log_in()
    result = site.run("totp", "amina.b", "--enable")
    secret = site.account().totp_secret
    assert result.code == 0
    assert secret not in (None, old)
    assert f"totp secret: {secret}\n" in result.out
    assert "1 session(s) ended" in result.out
    assert site.session(session.token_hash) is None


def test_totp_disable_returns_to_password_only(site: Site) -> None:
    site.add("amina.b", "--totp")
    result = site.run("totp", "amina.b", "--disable")
    assert result == Result(0, "TOTP no longer required for amina.b; 0 session(s) ended\n", "")
    assert site.account().totp_secret is None


def test_totp_needs_enable_or_disable(site: Site) -> None:
    with pytest.raises(SystemExit) as exit_:
        site.run("totp", "amina.b")
    assert exit_.value.code == 2


# Where the store is.


def test_the_state_dir_defaults_to_jisr_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JISR_DATABASE_URL", raising=False)
    monkeypatch.setenv("JISR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD))
    argv = ["console", "user", "add", "amina.b", "--institution", "CNSS", "--password-stdin"]
    args = jisr_parser().parse_args(argv)
    assert args.run(args) == 0
    assert (tmp_path / "state" / "console.sqlite").is_file()


def test_an_unusable_database_url_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JISR_DATABASE_URL", "mysql://db/console")
    args = jisr_parser().parse_args(["console", "user", "list", "--state-dir", str(tmp_path)])
    assert args.run(args) == 2
    assert capsys.readouterr().err == (
        "jisr console user list: unsupported console database URL scheme: 'mysql'\n"
    )


# As a shell runs it.

DRIVER = """
import sys
from tests.integration.test_console_user_cli import jisr_parser
args = jisr_parser().parse_args(sys.argv[1:])
sys.exit(args.run(args))
"""


def run_script(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    """`jisr console user ...` in a process of its own, on the SQLite file only."""
    hidden = ("JISR_DATABASE_URL", "JISR_STATE_DIR")
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in hidden},
        timeout=60,
        check=False,
    )


def test_a_script_adds_an_officer_through_stdin_in_its_own_process(tmp_path: Path) -> None:
    argv = ["console", "user", "add", "amina.b", "--institution", "CNSS", "--password-stdin"]
    argv += ["--state-dir", str(tmp_path)]
    done = run_script(argv, PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"officer id: officer-[0-9a-f]{16}\n", done.stdout)
    again = run_script(argv, PASSWORD + "\n")
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr == "jisr console user add: username: 'amina.b' exists already\n"
