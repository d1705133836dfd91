"""A month's publication on disk, signed, and its verification offline
(docs/transparency.md, "Publication").

A publication is a directory:

- `indicators.json`: every table and its data dictionary (what each table counts, its
  dimensions), the month, the disclosure method and its threshold;
- one CSV per table (`<table>.csv`): the dimensions, `count` (empty when suppressed) and
  `suppressed` (`yes`/`no`), and a last `(total)` row;
- `manifest.jws`: a compact JWS (ES256, `typ` `jisr-publication+jwt`) by the gateway's
  receipt key, whose claims name the month and the SHA-256 of every other file.

Anyone holding the gateway's public keys (`jisr keys export`) checks it offline: the
signature, then each file against its hash, and that no file was added or removed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from gateway.transparency.disclosure import MedianTable, Table
from gateway.transparency.indicators import SNAPSHOTS

TYP = "jisr-publication+jwt"
ALG = "ES256"
SIGNATURE = "manifest.jws"
INDICATORS = "indicators.json"
TOTAL = "(total)"
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


@dataclass(frozen=True, slots=True)
class Method:
    """How the figures were protected, published beside them."""

    threshold: int

    def describe(self) -> dict[str, Any]:
        return {
            "name": "threshold suppression with secondary suppression",
            "threshold": self.threshold,
            "rules": [
                f"a count from 1 to {self.threshold - 1}, or a cell of fewer distinct "
                "persons or households than that, is suppressed (no value)",
                "within every group of cells whose sum another table gives or implies, the "
                "suppressed cells are none, or two or more adding up to the threshold or "
                "more: the smallest published cell of a group is suppressed too until so",
                "a table's total is suppressed when it would give a suppressed count away "
                "(one suppressed cell, or suppressed cells summing below the threshold) or "
                "is itself below the threshold",
                f"a median is published for a group of at least {self.threshold} values",
            ],
        }


def _cells_json(table: Table) -> list[dict[str, Any]]:
    return [
        {
            "key": dict(zip(table.dimensions, cell.key, strict=True)),
            "count": cell.value,
            "suppressed": cell.value is None,
        }
        for cell in table.cells
    ]


def _table_json(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "description": table.description,
        "dimensions": list(table.dimensions),
        "cells": _cells_json(table),
        "total": table.total,
        "total_suppressed": table.total is None and bool(table.cells),
    }


def _medians_json(table: MedianTable) -> dict[str, Any]:
    return {
        "name": table.name,
        "description": table.description,
        "dimensions": list(table.dimensions),
        "groups": [
            {
                "key": dict(zip(table.dimensions, g.key, strict=True)),
                "count": g.count,
                "median_days": g.median_days,
                "suppressed": g.count is None,
            }
            for g in table.groups
        ],
    }


def _csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*table.dimensions, "count", "suppressed"])
    for cell in table.cells:
        value = "" if cell.value is None else str(cell.value)
        writer.writerow([*cell.key, value, "yes" if cell.value is None else "no"])
    total = "" if table.total is None else str(table.total)
    writer.writerow([TOTAL] * len(table.dimensions) + [total, "yes" if not total else "no"])
    return out.getvalue()


def contents(
    month: str,
    generated: dt.datetime,
    method: Method,
    tables: Sequence[Table],
    medians: Sequence[MedianTable],
) -> dict[str, bytes]:
    """Every file of the publication but its signature, by name."""
    happened = [t for t in tables if t.name not in SNAPSHOTS]
    empty = not any(t.cells for t in happened) and not any(m.groups for m in medians)
    document = {
        "month": month,
        "generated": generated.isoformat().replace("+00:00", "Z"),
        "publisher": "Jisr gateway",
        "method": method.describe(),
        "note": "no data for this month" if empty else "",
        "tables": [_table_json(t) for t in tables],
        "durations": [_medians_json(m) for m in medians],
    }
    files = {INDICATORS: (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()}
    for table in tables:
        files[f"{table.name}.csv"] = _csv(table).encode()
    return files


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(
    out: Path,
    month: str,
    files: Mapping[str, bytes],
    *,
    key: EllipticCurvePrivateKey,
    kid: str,
    now: dt.datetime,
) -> None:
    """Write the files and their signed manifest into `out` (created; must not exist)."""
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    claims = {
        "month": month,
        "iat": int(now.timestamp()),
        "files": {name: _digest(data) for name, data in sorted(files.items())},
    }
    token = jwt.encode(claims, key, algorithm=ALG, headers={"typ": TYP, "kid": kid})
    (out / SIGNATURE).write_text(token + "\n", encoding="ascii")


def signed_files(folder: Path, jwks: Mapping[str, Any], month: str | None = None) -> list[str]:
    """The names of the files the publication in `folder` signs, once it verifies (and is
    the publication of `month`, when given); ValueError naming what is wrong otherwise."""
    problems = verify(folder, jwks, month)
    if problems:
        raise ValueError("; ".join(problems))
    token = (folder / SIGNATURE).read_text(encoding="ascii").strip()
    return sorted(jwt.decode(token, options={"verify_signature": False})["files"])


def verify(folder: Path, jwks: Mapping[str, Any], month: str | None = None) -> list[str]:
    """Why the publication in `folder` does not verify, each naming the file at fault;
    empty when it does. With `month`, it must also be that month's publication (a folder
    named for one month may not hold another's)."""
    signature = folder / SIGNATURE
    if not signature.is_file() or signature.is_symlink():
        return [f"{SIGNATURE}: missing"]
    token = signature.read_text(encoding="ascii", errors="replace").strip()
    claims, problem = _claims(token, jwks)
    if claims is None:
        return [f"{SIGNATURE}: {problem}"]
    listed = claims.get("files")
    if not isinstance(listed, dict) or not all(_plain_name(n) for n in listed):
        return [f"{SIGNATURE}: does not name its files as plain file names"]
    problems = [f"{SIGNATURE}: {why}" for why in _month_problems(folder, claims, month)]
    for name, digest in sorted(listed.items()):
        path = folder / str(name)
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name}: missing")
        elif _digest(path.read_bytes()) != digest:
            problems.append(f"{name}: changed since it was signed")
    present = {p.name for p in folder.iterdir() if p.is_file()} - {SIGNATURE}
    problems += [f"{name}: not signed (added)" for name in sorted(present - set(listed))]
    return problems


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in {"", ".", ".."} and Path(name).name == name


def _month_problems(folder: Path, claims: Mapping[str, Any], month: str | None) -> list[str]:
    """The signed month must be a month, the one asked for, and the one indicators.json
    says."""
    signed = claims.get("month")
    if not isinstance(signed, str) or not MONTH.fullmatch(signed):
        return ["signs no month"]
    if month is not None and signed != month:
        return [f"is the publication of {signed}, not of {month}"]
    try:
        document = json.loads((folder / INDICATORS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # the file's own problem is named against its hash
    said = document.get("month") if isinstance(document, dict) else None
    return [] if said == signed else [f"signs {signed} but {INDICATORS} says {said!r}"]


def _claims(token: str, jwks: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None, "not a compact JWS"
    if header.get("typ") != TYP or header.get("alg") != ALG:
        return None, f"not a publication signature (typ {TYP}, alg {ALG})"
    try:
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(dict(jwks)).keys if k.key_id}
    except (jwt.PyJWTError, TypeError, KeyError):
        return None, "the gateway's keys given are not a usable JWKS"
    key = keys.get(str(header.get("kid", "")))
    if key is None:
        return None, "signed by a key the gateway's keys do not hold"
    try:
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=[ALG])
    except (jwt.PyJWTError, TypeError, ValueError):  # a key of another kind than ES256's
        return None, "the signature does not verify"
    return claims, ""
