"""The DCI facade's OAuth2 clients: which institution a client id speaks for.

A DCI partner obtains a bearer token with the client-credentials grant (the standard's
`/oauth2/client/token`, docs/dci.md). Each client belongs to one institution of the trust
store: the token names it, and the envelope's signature must be that institution's own.
The secret is shown once, when the client is added (`jisr dci client add`), and kept only
as its SHA-256; the file is the operator's, written with mode 0600. A plain hash suffices,
and a password hash (argon2) would be a harm: the secret is 256 random bits, not a
password, so no guessing can reach it, while a memory-hard hash on an unauthenticated
endpoint would let anyone exhaust the facade's memory and threads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
INSTITUTION = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
CALLBACK = re.compile(r"https?://[A-Za-z0-9.\[\]:-]+(:\d+)?/[\x21-\x7e]*")
_DUMMY = "sha256:" + "0" * 64  # compared against for an unknown id, as for a wrong secret


class ClientsError(ValueError):
    """The clients file is unreadable or a client cannot be added; names the file."""


@dataclass(frozen=True, slots=True)
class Client:
    """One OAuth2 client: its id, its institution, its secret's hash, and the URL
    prefixes its asynchronous answers may be sent to (gateway/dci/callbacks.py)."""

    client_id: str
    institution: str
    secret_hash: str
    callbacks: tuple[str, ...] = ()


class Clients:
    """The clients of one facade, read from their file at start."""

    def __init__(self, clients: dict[str, Client]) -> None:
        self._clients = clients

    def __len__(self) -> int:
        return len(self._clients)

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if the secret is its own; None otherwise (unknown or wrong alike)."""
        client = self._clients.get(client_id)
        matches = _check(client.secret_hash if client else _DUMMY, secret)
        return client if client is not None and matches else None

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def all(self) -> list[Client]:
        """Every client, by id."""
        return [self._clients[k] for k in sorted(self._clients)]


def _check(hashed: str, secret: str) -> bool:
    return hmac.compare_digest(hashed, _hash(secret))


def _hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def load(path: Path) -> Clients:
    """The clients in `path` (none if it does not exist); ClientsError naming the file."""
    if not path.exists():
        return Clients({})
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ClientsError(f"{path}: not readable as JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
        raise ClientsError(f'{path}: expected {{"clients": [...]}}')
    found: dict[str, Client] = {}
    for number, item in enumerate(doc["clients"], 1):
        client = _client(item)
        if client is None:
            needs = "needs client_id, institution, secret_hash"
            raise ClientsError(f"{path}: client {number}: {needs}")
        if client.client_id in found:
            raise ClientsError(f"{path}: client {number}: {client.client_id} is listed twice")
        found[client.client_id] = client
    return Clients(found)


def _client(item: object) -> Client | None:
    if not isinstance(item, dict):
        return None
    values = [item.get(k) for k in ("client_id", "institution", "secret_hash")]
    if not all(isinstance(v, str) for v in values):
        return None
    client_id, institution, secret_hash = (str(v) for v in values)
    if not CLIENT_ID.fullmatch(client_id) or not INSTITUTION.fullmatch(institution):
        return None
    callbacks = item.get("callbacks", [])
    if not isinstance(callbacks, list) or not all(_callback(c) for c in callbacks):
        return None
    return Client(client_id, institution, secret_hash, tuple(callbacks))


def _callback(prefix: object) -> bool:
    """A callback prefix: an absolute http(s) URL with a host and a path."""
    return isinstance(prefix, str) and bool(CALLBACK.fullmatch(prefix))


def add(path: Path, client_id: str, institution: str, callbacks: Sequence[str] = ()) -> str:
    """Add a client for `institution` and return its secret (shown once, never stored)."""
    bad = [c for c in callbacks if not _callback(c)]
    if bad:
        raise ClientsError(f"callback {bad[0]!r}: an http(s) URL with a host and a path")
    if not CLIENT_ID.fullmatch(client_id):
        raise ClientsError(f"client id {client_id!r}: 3 to 64 of a-z 0-9 . _ -, from a-z 0-9")
    if not INSTITUTION.fullmatch(institution):
        raise ClientsError(f"institution {institution!r}: not an institution id")
    clients = load(path)
    if clients.get(client_id) is not None:
        raise ClientsError(f"{path}: client {client_id} exists already")
    secret = secrets.token_urlsafe(32)
    rows = [_row(c) for c in clients.all()]
    rows.append(_row(Client(client_id, institution, _hash(secret), tuple(callbacks))))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"clients": rows}, out, indent=1)
        out.write("\n")
    temporary.replace(path)
    return secret


def _row(c: Client) -> dict[str, object]:
    return {
        "client_id": c.client_id,
        "institution": c.institution,
        "secret_hash": c.secret_hash,
        "callbacks": list(c.callbacks),
    }
