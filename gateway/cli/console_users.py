"""`jisr console user add|list|disable|enable|passwd|totp|link-oidc|unlink-oidc`: the
console's officers, managed on the console's machine (there is no web page for it: whoever
can run this can already read the console's store).

The store is the console's own (gateway/console/store.py): PostgreSQL when
JISR_DATABASE_URL is set, else console.sqlite in --state-dir (default: JISR_STATE_DIR,
else `var`, where `make run` keeps its data).

Exit status: 0 done; 2 nothing changed (a bad username, institution or password, an
existing or unknown user, a store that cannot be opened), said in one line
`jisr console user <action>: <field>: <problem>`, never a traceback. Whatever ends an
officer's access (disable, passwd, totp, unlink-oidc) also ends their open sessions at once.

`link-oidc` lets an identity provider's subject (its `sub` claim, at its issuer) sign in as
an officer through `jisr console serve --oidc-config`: the provider says who the person
is, the account what they may do (gateway/console/oidc.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.console import accounts, oidc
from gateway.console.accounts import Account, AccountError, UnknownAccountError
from gateway.console.store import ConsoleStore, open_console_store
from gateway.storage.migrations import SchemaTooNewError

DEFAULT_STATE_DIR = Path("var")
EXIT_OK = 0
EXIT_REFUSED = 2  # also argparse's exit status for a usage error

_STATUS = """exit status:
  0  done
  2  nothing changed: a bad username, institution or password, an existing or unknown
     user, or a store that cannot be opened (one line on stderr says which)"""

Action = Callable[[argparse.Namespace, ConsoleStore], int]


def add_user_parsers(console_sub: Any) -> None:
    """Add `user` and its actions to the sub-parsers of `jisr console`; each action sets
    `run` (args -> exit status)."""
    user = console_sub.add_parser(
        "user",
        help="add, list, disable, enable officers; reset a password or TOTP",
        description="The console's officers, in the console's store on this machine.",
        epilog=_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = user.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where console.sqlite lives (default: $JISR_STATE_DIR, else var);"
        " ignored when JISR_DATABASE_URL is set",
    )
    _add_parser(actions, common)
    listing = actions.add_parser("list", parents=[common], help="every officer, by username")
    listing.set_defaults(run=_runner(_list))
    for name, text, action in (
        ("disable", "refuse the officer's logins and end their sessions", _disable),
        ("enable", "let a disabled officer log in again", _enable),
    ):
        cmd = actions.add_parser(name, parents=[common], help=text)
        cmd.add_argument("username", help="the officer's username")
        cmd.set_defaults(run=_runner(action))
    _passwd_parser(actions, common)
    _totp_parser(actions, common)
    _oidc_parsers(actions, common)


def _add_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    add = actions.add_parser(
        "add",
        parents=[common],
        help="create an officer's account",
        description="Create an account; print its officer id (the pseudonym the gateway"
        " sees), and with --totp the secret to enrol in an authenticator app.",
    )
    add.add_argument("username", help="3 to 64 characters of a-z, 0-9, '.', '_', '-'")
    add.add_argument(
        "--institution", required=True, help="the officer's institution id (CNSS, CNDP...)"
    )
    add.add_argument("--totp", action="store_true", help="require a TOTP code at login")
    _password_flag(add)
    add.set_defaults(run=_add)


def _passwd_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    passwd = actions.add_parser(
        "passwd",
        parents=[common],
        help="set a new password (ends the officer's sessions and lifts a login lock)",
    )
    passwd.add_argument("username", help="the officer's username")
    _password_flag(passwd)
    passwd.set_defaults(run=_passwd)


def _totp_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    totp = actions.add_parser(
        "totp",
        parents=[common],
        help="require TOTP with a new secret, or stop requiring it (ends sessions)",
    )
    totp.add_argument("username", help="the officer's username")
    which = totp.add_mutually_exclusive_group(required=True)
    which.add_argument("--enable", action="store_true", help="a new secret to enrol")
    which.add_argument("--disable", action="store_true", help="password only")
    totp.set_defaults(run=_runner(_totp))


def _oidc_parsers(actions: Any, common: argparse.ArgumentParser) -> None:
    link = actions.add_parser(
        "link-oidc",
        parents=[common],
        help="let an identity provider's subject sign in as the officer",
        description="Link the officer's account to a subject of an identity provider: a"
        " sign-in through that provider as that subject opens the officer's session (one"
        " subject per issuer; the provider must sign in the officer's institution).",
    )
    link.add_argument("username", help="the officer's username")
    link.add_argument(
        "--issuer",
        required=True,
        help="the provider's issuer URL, exactly as in its ID tokens' `iss` (and in --oidc-config)",
    )
    link.add_argument(
        "--subject",
        required=True,
        help="the person's subject at that provider, exactly as in its ID tokens' `sub`",
    )
    link.set_defaults(run=_runner(_link_oidc))
    unlink = actions.add_parser(
        "unlink-oidc",
        parents=[common],
        help="stop an identity provider's sign-in as the officer (ends sessions)",
    )
    unlink.add_argument("username", help="the officer's username")
    unlink.add_argument(
        "--issuer", required=True, help="the provider's issuer URL whose link to remove"
    )
    unlink.set_defaults(run=_runner(_unlink_oidc))


def _password_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (else: asked twice)",
    )


# Running an action: errors become one line and exit 2.


def _fail(args: argparse.Namespace, why: str) -> int:
    print(f"jisr console user {args.user_action}: {why}", file=sys.stderr)
    return EXIT_REFUSED


def _store_errors() -> tuple[type[BaseException], ...]:
    """What opening or using a store that cannot serve raises. psycopg's errors only once
    the driver is loaded (an embedded console never loads it)."""
    kinds: tuple[type[BaseException], ...] = (
        OSError,  # an unwritable state dir, a database that does not answer
        ValueError,  # an unsupported database URL
        sqlite3.Error,
        SchemaTooNewError,
    )
    psycopg = sys.modules.get("psycopg")
    return (*kinds, psycopg.Error) if psycopg is not None else kinds


def _open(args: argparse.Namespace) -> ConsoleStore:
    """The store named by JISR_DATABASE_URL, else console.sqlite in the state dir."""
    state_dir = args.state_dir or Path(os.environ.get("JISR_STATE_DIR") or DEFAULT_STATE_DIR)
    return open_console_store(os.environ.get("JISR_DATABASE_URL") or None, state_dir)


def _with_store(args: argparse.Namespace, action: Action) -> int:
    """Open the store, run `action` on it, close it; any refusal is one line, exit 2."""
    try:
        store = _open(args)
        try:
            return action(args, store)
        finally:
            store.close()
    except AccountError as exc:
        return _fail(args, str(exc))
    except _store_errors() as exc:
        return _fail(args, (str(exc).strip().splitlines() or [type(exc).__name__])[0])


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    """`run` for an action that needs nothing from the terminal before the store opens."""
    return lambda args: _with_store(args, action)


def _existing(store: ConsoleStore, username: str) -> Account:
    account = store.account(username)
    if account is None:
        raise UnknownAccountError(f"username: no account {username!r}")
    return account


def _now_us() -> int:
    return time.time_ns() // 1_000


# Passwords: never on the command line (it would be in the shell's history and `ps`).


def _read_password(args: argparse.Namespace) -> str:
    """The new password: the first line of stdin with --password-stdin, else typed twice
    without echo."""
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AccountError("password: nothing on stdin")
        return line.rstrip("\r\n")
    try:
        first = getpass.getpass("New password: ")
        again = getpass.getpass("Same password again: ")
    except EOFError:
        raise AccountError("password: no input (use --password-stdin in scripts)") from None
    if first != again:
        raise AccountError("password: the two entries differ")
    return first


def _add(args: argparse.Namespace) -> int:
    """Check everything (and hash) before the store opens, then claim the username."""
    try:
        password = _read_password(args)
        account = accounts.new_account(
            args.username, args.institution, password, totp=args.totp, now_us=_now_us()
        )
    except AccountError as exc:
        return _fail(args, str(exc))
    return _with_store(args, lambda _args, store: _added(store, account))


def _added(store: ConsoleStore, account: Account) -> int:
    store.add_account(account)
    print(f"officer id: {account.officer_id}")
    if account.totp_secret is not None:
        _show_totp(account)
    return EXIT_OK


def _show_totp(account: Account) -> None:
    print(f"totp secret: {account.totp_secret}")
    print(f"totp uri: {accounts.totp_uri(account)}")
    print(
        "enrol the secret (or the URI as a QR code) in the officer's authenticator app;"
        " it is not shown again",
        file=sys.stderr,
    )


def _list(args: argparse.Namespace, store: ConsoleStore) -> int:
    rows = [_row(a) for a in store.accounts()]
    header = ("USERNAME", "INSTITUTION", "OFFICER ID", "TOTP", "DISABLED", "CREATED (UTC)")
    for line in _table([header, *rows]):
        print(line)
    return EXIT_OK


def _row(account: Account) -> tuple[str, ...]:
    created = dt.datetime.fromtimestamp(account.created_us / 1_000_000, dt.UTC)
    return (
        account.username,
        account.institution,
        account.officer_id,
        "yes" if account.totp_secret else "no",
        "yes" if account.disabled else "no",
        created.date().isoformat(),
    )


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _disable(args: argparse.Namespace, store: ConsoleStore) -> int:
    """Disabled first, then sessions ended: a request between the two finds the account
    disabled and ends its session itself."""
    account = _existing(store, args.username)
    store.update_account(replace(account, disabled=True))
    ended = store.delete_sessions_of(account.username)
    print(f"disabled {account.username}; {ended} session(s) ended")
    return EXIT_OK


def _enable(args: argparse.Namespace, store: ConsoleStore) -> int:
    account = _existing(store, args.username)
    store.update_account(replace(account, disabled=False))
    print(f"enabled {account.username}")
    return EXIT_OK


def _passwd(args: argparse.Namespace) -> int:
    """The password is read and checked before the store opens."""
    try:
        password = _read_password(args)
        accounts.check_password_strength(password)
    except AccountError as exc:
        return _fail(args, str(exc))
    return _with_store(args, lambda _args, store: _new_password(args, store, password))


def _new_password(args: argparse.Namespace, store: ConsoleStore, password: str) -> int:
    """A reset also lifts a login lock: it is how a locked-out officer gets back in."""
    account = _existing(store, args.username)
    store.update_account(accounts.with_password(account, password))
    ended = store.delete_sessions_of(account.username)
    store.clear_failures(account.username)
    print(f"new password for {account.username}; {ended} session(s) ended")
    return EXIT_OK


def _totp(args: argparse.Namespace, store: ConsoleStore) -> int:
    account = accounts.with_totp(_existing(store, args.username), enabled=args.enable)
    store.update_account(account)
    ended = store.delete_sessions_of(account.username)
    state = "required" if args.enable else "no longer required"
    print(f"TOTP {state} for {account.username}; {ended} session(s) ended")
    if account.totp_secret is not None:
        _show_totp(account)
    return EXIT_OK


def _link_oidc(args: argparse.Namespace, store: ConsoleStore) -> int:
    oidc.check_issuer(args.issuer)
    oidc.check_subject(args.subject)
    account = _existing(store, args.username)
    store.link_oidc(account.username, args.issuer, args.subject, _now_us())
    print(f"linked {account.username} to subject {args.subject} at {args.issuer}")
    return EXIT_OK


def _unlink_oidc(args: argparse.Namespace, store: ConsoleStore) -> int:
    """Unlinked first, then sessions ended (a session may have been opened through it)."""
    account = _existing(store, args.username)
    if not store.unlink_oidc(account.username, args.issuer):
        raise AccountError(f"issuer: {account.username} has no link at {args.issuer}")
    ended = store.delete_sessions_of(account.username)
    print(f"unlinked {account.username} at {args.issuer}; {ended} session(s) ended")
    return EXIT_OK
