"""Integrity: the gateway's own verdict on every chain and checkpoint, the latest signed
checkpoint of each node, and an evidence bundle to download.

The verdict is the gateway's VerifyIntegrity (every record rehashed, every link and
checkpoint signature checked); a finding names the node and record at fault. The bundle
is the same format `jisr audit export` writes and `jisr audit verify` checks offline,
built here from what the officer may read: the whole trail, so it is the regulator's
(a DPO's own records are not a contiguous chain and would not verify on their own).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gateway.audit import bundle
from gateway.audit.record import Checkpoint
from gateway.console import records
from gateway.console.web import Officer, ask, console, render, signed_in
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.sdk.trail import AccessQuery, Trail

MAX_BUNDLE_RECORDS = 200_000  # beyond: `jisr audit export` on the gateway's machine


async def integrity(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who

    def run(trail: Trail) -> tuple[apb.VerifyIntegrityResponse, list[apb.Checkpoint]]:
        verdict = trail.verify_integrity().message
        return verdict, list(trail.checkpoints().message.checkpoints)

    found = await ask(request, who, run)
    if isinstance(found, Response):
        return found
    verdict, checkpoints = found
    context: dict[str, Any] = {
        "verdict": verdict,
        "checkpoints": [
            {"cp": cp, "when": dt.datetime.fromtimestamp(cp.time.seconds, dt.UTC)}
            for cp in checkpoints
        ],
    }
    return render(request, "integrity.html", context, officer=who)


def _checkpoint(cp: apb.Checkpoint) -> Checkpoint:
    """Every field the gateway signed: one lost would fail the bundle's verification."""
    at = cp.time.seconds * 1_000_000 + cp.time.nanos // 1000
    return Checkpoint(
        cp.node,
        cp.seq,
        cp.hash,
        at,
        cp.kind or "periodic",
        cp.first_seq or 1,
        cp.first_prev_hash,
        cp.root,
        cp.root_first,
        signature=cp.signature,
    )


class NotWholeTrail(Exception):  # noqa: N818 - a refusal, not a fault
    """The officer does not see the whole trail (a DPO): no bundle would verify."""


def _write(trail: Trail, jwks: dict[str, Any], officer: str, work: Path) -> Path:
    """The bundle of the whole trail, zipped, in `work`. The trail's size and checkpoints
    are read first, so none names a record the bundle lacks; fewer records than the trail
    had then means the gateway shows this officer only part of it."""
    total = trail.verify_integrity().message.records
    checkpoints = [_checkpoint(cp) for cp in trail.checkpoints().message.checkpoints]
    rows = [
        records.audit_record(r)
        for r in trail.query(AccessQuery(), limit=MAX_BUNDLE_RECORDS + 1, page_size=1000)
    ]
    if len(rows) > MAX_BUNDLE_RECORDS:
        raise OverflowError(len(rows))
    if len(rows) < total:
        raise NotWholeTrail
    rows.sort(key=lambda r: (r.node, r.seq))
    directory = work / "evidence"
    meta = {"source": "jisr console", "requested_by": officer}
    bundle.write_bundle(directory, rows, checkpoints, jwks, meta)
    archive = work / "evidence.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for file in sorted(directory.iterdir()):
            out.write(file, f"evidence/{file.name}")
    return archive


async def evidence(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    work = Path(tempfile.mkdtemp(prefix="jisr-console-bundle-"))
    jwks = dict(console(request).link.gateway_jwks())

    def run(trail: Trail) -> Path | str:
        try:
            return _write(trail, jwks, who.account.officer_id, work)
        except OverflowError:
            return "error.bundle_too_large"
        except NotWholeTrail:
            return "error.bundle_regulator"

    try:
        found = await ask(request, who, run)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not isinstance(found, Path):
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(found, str):
            status = 413 if found == "error.bundle_too_large" else 403
            context = {"status": status, "key": found, "reason": ""}
            return render(request, "error.html", context, officer=who, status=status)
        return found
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return FileResponse(
        found,
        media_type="application/zip",
        filename=f"jisr-evidence-{stamp}.zip",
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, work, True),
    )
