"""Evidence bundles: an export of audit records that a DPO verifies offline, anywhere.

A bundle is a directory (tar or zip it to hand it over; nothing inside depends on it):

    manifest.json        format, version, counts, time range, nodes, SHA-256 of each file, meta
    records.jsonl        one JSON object per record, every field, grouped by node, seq ascending
    checkpoints.jsonl    one JSON object per signed checkpoint, every field and its signature
    gateway.jwks.json    the gateway's public JWKS (compare it with the published one)

`verify_bundle` checks the files against the manifest, then recomputes every chain with
`chain.verify(..., anchors=True)`: a slice of the trail may start right after any signed
checkpoint it includes. docs/audit-format.md specifies all of it, for verifiers written in
other languages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from gateway.audit import chain
from gateway.audit.chain import BUNDLE, MALFORMED, RECORD_KINDS, Finding, Report
from gateway.audit.record import AuditRecord, Checkpoint

FORMAT = "jisr-audit-bundle"
VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
JWKS = "gateway.jwks.json"
DATA_FILES = (RECORDS, CHECKPOINTS, JWKS)
PROGRESS_EVERY = 10_000  # records between two calls of `progress`
_WRITE_LINES = 4096  # records per write (and per hash update)

RECORD_FIELDS = tuple(f.name for f in fields(AuditRecord))
CHECKPOINT_FIELDS = tuple(f.name for f in fields(Checkpoint))
_TREE_FIELDS = frozenset({"root", "root_first"})
_record_values = attrgetter(*RECORD_FIELDS)
_checkpoint_values = attrgetter(*CHECKPOINT_FIELDS)
_RECORD_KEYS = frozenset(RECORD_FIELDS)
_record_items = itemgetter(*RECORD_FIELDS)
_RECORD_TYPES: tuple[type, ...] = tuple(
    int if name in ("seq", "at_us", "part", "latency_us")
    else list if name in ("subjects", "fields")
    else str
    for name in RECORD_FIELDS
)  # fmt: skip
_SUBJECTS = RECORD_FIELDS.index("subjects")
_FIELDS = RECORD_FIELDS.index("fields")
_STR_ONLY = frozenset({str})

Progress = Callable[[int], None]


class BundleError(ValueError):
    """A bundle that cannot be read; the message names the file (and line) at fault."""


@dataclass(frozen=True, slots=True)
class BundleSummary:
    path: Path
    records: int
    checkpoints: int
    nodes: list[str]
    from_us: int | None  # earliest at_us of a record (None without records)
    to_us: int | None  # latest at_us
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex SHA-256


# --- writing -------------------------------------------------------------------------


def record_json(r: AuditRecord) -> dict[str, Any]:
    """A record as one line of records.jsonl holds it (every field, §2)."""
    return dict(zip(RECORD_FIELDS, _record_values(r), strict=True))


def _record_line(r: AuditRecord) -> str:
    return json.dumps(record_json(r), separators=(",", ":"))


def _checkpoint_line(cp: Checkpoint) -> str:
    """Every field; a checkpoint that signs no Merkle root is written without the tree's
    two members, as before trees existed, so a verifier of that time still reads it."""
    obj = dict(zip(CHECKPOINT_FIELDS, _checkpoint_values(cp), strict=True))
    if not cp.root:
        obj = {k: v for k, v in obj.items() if k not in _TREE_FIELDS}
    return json.dumps(obj, separators=(",", ":"))


def _iso(at_us: int | None) -> str | None:
    if at_us is None:
        return None
    moment = dt.datetime.fromtimestamp(at_us / 1_000_000, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class _NodeStats:
    __slots__ = ("first_prev_hash", "first_seq", "last_seq", "records")

    def __init__(self, r: AuditRecord) -> None:
        self.records = 0
        self.first_seq = r.seq
        self.first_prev_hash = r.prev_hash
        self.last_seq = r.seq

    def as_json(self, node: str) -> dict[str, Any]:
        return {
            "node": node,
            "records": self.records,
            "first_seq": self.first_seq,
            "first_prev_hash": self.first_prev_hash,
            "last_seq": self.last_seq,
        }


def _hashed_write(file: BinaryIO, data: bytes, digest: Any) -> None:
    digest.update(data)
    file.write(data)


def _write_records(
    file: BinaryIO, records: Iterable[AuditRecord], progress: Progress | None
) -> tuple[str, int, dict[str, _NodeStats], int | None, int | None]:
    digest = hashlib.sha256()
    nodes: dict[str, _NodeStats] = {}
    stats: _NodeStats | None = None
    node: str | None = None
    first_us: int | None = None
    last_us: int | None = None
    done = 0
    lines: list[str] = []
    for r in records:
        if stats is None or r.node != node:
            node = r.node
            stats = nodes.get(node)
            if stats is None:
                stats = nodes[node] = _NodeStats(r)
        stats.records += 1
        stats.last_seq = r.seq
        at = r.at_us
        if first_us is None or at < first_us:
            first_us = at
        if last_us is None or at > last_us:
            last_us = at
        lines.append(_record_line(r))
        done += 1
        if len(lines) == _WRITE_LINES:
            _hashed_write(file, ("\n".join(lines) + "\n").encode(), digest)
            lines.clear()
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done)
    if lines:
        _hashed_write(file, ("\n".join(lines) + "\n").encode(), digest)
    if progress is not None:
        progress(done)
    return digest.hexdigest(), done, nodes, first_us, last_us


def _write_file(path: Path, data: bytes) -> str:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return hashlib.sha256(data).hexdigest()


def write_bundle(
    path: Path,
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    jwks: Mapping[str, Any],
    meta: Mapping[str, Any],
    *,
    progress: Progress | None = None,
) -> BundleSummary:
    """Write the bundle directory `path` (which must not exist), streaming `records`.

    The caller chooses what goes in; for the bundle to verify on its own, each node's
    records must be contiguous and start at seq 1, right after a prune checkpoint, or
    right after a checkpoint included in `checkpoints` (the anchor: for a time slice, the
    node's last checkpoint at or before the range's start), and `checkpoints` must hold
    no checkpoint of a node beyond its last exported record (docs/audit-format.md).
    The bundle is written beside `path` and renamed into place once complete.
    """
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        with (work / RECORDS).open("wb") as file:
            records_sha, count, nodes, first_us, last_us = _write_records(file, records, progress)
            file.flush()
            os.fsync(file.fileno())
        kept = list(checkpoints)
        lines = "".join(_checkpoint_line(cp) + "\n" for cp in kept)
        sha = {
            RECORDS: records_sha,
            CHECKPOINTS: _write_file(work / CHECKPOINTS, lines.encode()),
            JWKS: _write_file(work / JWKS, (json.dumps(dict(jwks), indent=2) + "\n").encode()),
        }
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "record_encoding": "jisr-audit-v1",
            "created_at": _iso(int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)),
            "records": count,
            "checkpoints": len(kept),
            "time_range": {
                "from_us": first_us,
                "to_us": last_us,
                "from": _iso(first_us),
                "to": _iso(last_us),
            },
            "nodes": [nodes[n].as_json(n) for n in sorted(nodes)],
            "files": {name: {"sha256": sha[name]} for name in DATA_FILES},
            "meta": dict(meta),
        }
        _write_file(work / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        work.rename(path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BundleSummary(path, count, len(kept), sorted(nodes), first_us, last_us, sha)


# --- reading -------------------------------------------------------------------------


def record_from_json(obj: object) -> AuditRecord:
    """An AuditRecord from one parsed line of records.jsonl (ValueError says what is wrong)."""
    if type(obj) is dict and obj.keys() == _RECORD_KEYS:
        values = list(_record_items(obj))
        if tuple(map(type, values)) == _RECORD_TYPES:
            subjects, disclosed = values[_SUBJECTS], values[_FIELDS]
            if set(map(type, subjects)) <= _STR_ONLY and set(map(type, disclosed)) <= _STR_ONLY:
                values[_SUBJECTS], values[_FIELDS] = tuple(subjects), tuple(disclosed)
                return AuditRecord(*values)
    raise ValueError(_why_not_a_record(obj))


def _why_not_a_record(obj: object) -> str:
    if not isinstance(obj, dict):
        return "not a JSON object"
    for name, wanted in zip(RECORD_FIELDS, _RECORD_TYPES, strict=True):
        if name not in obj:
            return f"field {name!r} is missing"
        value = obj[name]
        if wanted is list and (type(value) is not list or not all(type(v) is str for v in value)):
            return f"{name} must be an array of strings"
        if wanted is int and type(value) is not int:
            return f"{name} must be an integer"
        if wanted is str and type(value) is not str:
            return f"{name} must be a string"
    extra = sorted(set(obj) - _RECORD_KEYS)
    return f"unknown field(s) {', '.join(map(repr, extra))}"


def checkpoint_from_json(obj: object) -> Checkpoint:
    """A Checkpoint from one parsed line of checkpoints.jsonl."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if not obj.keys() & _TREE_FIELDS:  # written before checkpoints signed a tree
        obj = {**obj, "root": "", "root_first": 0}
    if set(obj) != set(CHECKPOINT_FIELDS):
        missing = sorted(set(CHECKPOINT_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(CHECKPOINT_FIELDS))
        raise ValueError(f"fields missing {missing} or unknown {extra}")
    for name in CHECKPOINT_FIELDS:
        wanted = int if name in ("seq", "at_us", "first_seq", "root_first") else str
        if type(obj[name]) is not wanted:
            raise ValueError(f"{name} must be {'an integer' if wanted is int else 'a string'}")
    return Checkpoint(*(obj[name] for name in CHECKPOINT_FIELDS))


def _json_file(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path.name}: missing from the bundle")
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise BundleError(f"{path.name}: not valid JSON ({exc})") from None


def _checkpoint_lines(path: Path) -> Iterator[tuple[int, Checkpoint | str]]:
    """(line number, checkpoint or what is wrong with that line)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield number, checkpoint_from_json(json.loads(raw))
            except ValueError as exc:
                yield number, _line_error(raw, exc)


def _line_error(raw: bytes, exc: ValueError) -> str:
    if not raw.strip():
        return "empty line"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc)


def _records(path: Path) -> Iterator[AuditRecord]:
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield record_from_json(json.loads(raw))
            except ValueError as exc:
                raise BundleError(f"{RECORDS}:{number}: {_line_error(raw, exc)}") from None


def read_bundle(
    path: Path,
) -> tuple[Iterator[AuditRecord], list[Checkpoint], dict[str, Any], dict[str, Any]]:
    """(records, read lazily, checkpoints, JWKS, manifest) of the bundle at `path`.

    Reads; checks nothing but the syntax. BundleError names the file (and line) at fault;
    for records, when the iterator reaches the line.
    """
    manifest = _json_file(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST}: not a {FORMAT} manifest")
    jwks = _json_file(path / JWKS)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise BundleError(f"{JWKS}: a JWKS needs a 'keys' array")
    if not (path / CHECKPOINTS).is_file():
        raise BundleError(f"{CHECKPOINTS}: missing from the bundle")
    checkpoints: list[Checkpoint] = []
    for number, cp in _checkpoint_lines(path / CHECKPOINTS):
        if isinstance(cp, str):
            raise BundleError(f"{CHECKPOINTS}:{number}: {cp}")
        checkpoints.append(cp)
    if not (path / RECORDS).is_file():
        raise BundleError(f"{RECORDS}: missing from the bundle")
    return _records(path / RECORDS), checkpoints, jwks, manifest


# --- verifying -----------------------------------------------------------------------


def _file_finding(detail: str, where: str) -> Finding:
    return Finding("", 0, BUNDLE, detail, where)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_hashes(manifest: Any, findings: list[Finding]) -> dict[str, str]:
    files = manifest.get("files") if isinstance(manifest, dict) else None
    out: dict[str, str] = {}
    if not isinstance(files, dict):
        findings.append(_file_finding(f"{MANIFEST}: has no 'files' object", MANIFEST))
        return out
    for name, entry in files.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or "/" in name or name in ("", ".", ".."):
            findings.append(_file_finding(f"{MANIFEST}: files[{name!r}] is not valid", MANIFEST))
            continue
        out[name] = digest
    for name in DATA_FILES:
        if name not in out:
            findings.append(_file_finding(f"{MANIFEST}: lists no SHA-256 for {name}", MANIFEST))
    return out


class _RecordStream:
    """Records of records.jsonl, hashing the bytes as they are read and skipping (and
    reporting) lines that are not records, so that one bad line does not hide the rest."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self.path = path
        self.progress = progress
        self.sha256 = ""
        self.records = 0
        self.findings: list[Finding] = []

    def __iter__(self) -> Iterator[AuditRecord]:
        digest = hashlib.sha256()
        parse = record_from_json
        loads = json.loads
        progress = self.progress
        done = 0
        with self.path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                digest.update(raw)
                try:
                    record = parse(loads(raw.decode()))
                except ValueError as exc:
                    self.findings.append(self._malformed(number, raw, exc))
                    continue
                done += 1
                if progress is not None and done % PROGRESS_EVERY == 0:
                    progress(done)
                yield record
        self.sha256 = digest.hexdigest()
        self.records = done
        if progress is not None:
            progress(done)

    def _malformed(self, number: int, raw: bytes, exc: ValueError) -> Finding:
        where = f"{RECORDS}:{number}"
        node, seq = "", 0
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("node"), str):
                node = obj["node"]
            if type(obj.get("seq")) is int:
                seq = obj["seq"]
        return Finding(node, seq, MALFORMED, f"{where}: {_line_error(raw, exc)}", where)


def _locate(path: Path, findings: list[Finding]) -> list[Finding]:
    """`findings` with the line of records.jsonl holding each named record (its last
    occurrence: for a repeated seq, the repeat)."""
    wanted = {(f.node, f.seq) for f in findings if f.kind in RECORD_KINDS and not f.where}
    if not wanted:
        return findings
    lines: dict[tuple[object, object], int] = {}
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                key = (obj.get("node"), obj.get("seq"))
                if key in wanted:
                    lines[key] = number
    located = []
    for f in findings:
        at = lines.get((f.node, f.seq)) if f.kind in RECORD_KINDS and not f.where else None
        if at is None:
            located.append(f)
        else:
            where = f"{RECORDS}:{at}"
            located.append(Finding(f.node, f.seq, f.kind, f"{where}: {f.detail}", where))
    return located


def _manifest(path: Path, findings: list[Finding]) -> dict[str, Any] | None:
    try:
        manifest = _json_file(path / MANIFEST)
    except BundleError as exc:
        findings.append(_file_finding(str(exc), MANIFEST))
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        findings.append(_file_finding(f"{MANIFEST}: not a {FORMAT} manifest", MANIFEST))
        return None
    if manifest.get("version") != VERSION:
        version = manifest.get("version")
        findings.append(
            _file_finding(f"{MANIFEST}: version {version!r} is not {VERSION}", MANIFEST)
        )
    return manifest


def _check_files(path: Path, expected: dict[str, str], findings: list[Finding]) -> None:
    """Every file is present, and each but records.jsonl (hashed as it is verified) has
    the SHA-256 the manifest lists."""
    for name in sorted(set(DATA_FILES) | set(expected)):
        file = path / name
        if not file.is_file():
            findings.append(_file_finding(f"{name}: missing from the bundle", name))
        elif name != RECORDS and name in expected and _sha256_file(file) != expected[name]:
            findings.append(_altered(name))


def _bundled_jwks(path: Path, findings: list[Finding]) -> dict[str, Any]:
    try:
        jwks = _json_file(path / JWKS)
    except BundleError as exc:
        if (path / JWKS).is_file():  # a missing file is reported already
            findings.append(_file_finding(str(exc), JWKS))
        return {}
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        findings.append(_file_finding(f"{JWKS}: a JWKS needs a 'keys' array", JWKS))
        return {}
    return jwks


def _bundled_checkpoints(path: Path, findings: list[Finding]) -> list[Checkpoint]:
    checkpoints: list[Checkpoint] = []
    if not (path / CHECKPOINTS).is_file():
        return checkpoints
    for number, cp in _checkpoint_lines(path / CHECKPOINTS):
        if isinstance(cp, str):
            where = f"{CHECKPOINTS}:{number}"
            findings.append(Finding("", 0, MALFORMED, f"{where}: {cp}", where))
        else:
            checkpoints.append(cp)
    return checkpoints


def verify_bundle(
    path: Path,
    progress: Progress | None = None,
    *,
    jwks: Mapping[str, Any] | None = None,
) -> Report:
    """Verify the bundle at `path`: its files against the manifest, then every chain.

    Checkpoints are verified with `jwks` when given (the gateway's published JWKS: do
    that), else with the bundle's own gateway.jwks.json, which only proves that the bundle
    is consistent with the key it carries. File findings come first; a finding about a
    record names the line of records.jsonl that holds it.
    """
    path = Path(path)
    files: list[Finding] = []
    if not path.is_dir():
        files.append(_file_finding(f"{path}: not a bundle directory", ""))
        return Report(False, 0, 0, 0, files)
    manifest = _manifest(path, files)
    expected = _expected_hashes(manifest, files) if manifest is not None else {}
    _check_files(path, expected, files)
    keys = _bundled_jwks(path, files) if jwks is None else jwks
    checkpoints = _bundled_checkpoints(path, files)
    if not (path / RECORDS).is_file():
        return Report(False, 0, len(checkpoints), 0, files)
    stream = _RecordStream(path / RECORDS, progress)
    report = chain.verify(stream, checkpoints, keys, anchors=True)
    if RECORDS in expected and stream.sha256 != expected[RECORDS]:
        files.insert(0, _altered(RECORDS))
    elif manifest is not None and manifest.get("records") != stream.records:
        said = manifest.get("records")
        files.append(
            _file_finding(
                f"{RECORDS}: holds {stream.records} records, {MANIFEST} says {said!r}", RECORDS
            )
        )
    findings = files + stream.findings + _locate(path / RECORDS, report.findings)
    return Report(
        not findings, report.records, report.checkpoints, report.nodes, findings, report.chains
    )


def _altered(name: str) -> Finding:
    return _file_finding(
        f"{name}: its SHA-256 is not the one in {MANIFEST} (changed after the export)", name
    )
