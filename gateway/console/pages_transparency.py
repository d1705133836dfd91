"""The public transparency page: the month's published indicators, for anyone, without
signing in (docs/transparency.md, "The public page").

It shows only what `jisr transparency publish` wrote into the publications directory
(`jisr console serve --publications DIR`), after checking the publication's signature
against the gateway's keys: a page never shows a figure that is not in a signed
publication, so suppression is the publication's and no request can ask for a smaller
cell. Charts are server-rendered SVG (no script, nothing from elsewhere).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.console.web import console, render
from gateway.transparency import publication

MONTH = re.compile(r"\d{4}-\d{2}")
# Bars per chart at most: the largest cells of a table, the rest in its listing.
BARS = 12
BAR_WIDTH = 480


def months(root: Path | None) -> list[str]:
    """The months published under `root`, newest first (a folder named YYYY-MM holding a
    signature)."""
    if root is None or not root.is_dir():
        return []
    found = [
        p.name
        for p in root.iterdir()
        if p.is_dir() and MONTH.fullmatch(p.name) and (p / publication.SIGNATURE).is_file()
    ]
    return sorted(found, reverse=True)


def _bars(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart of a table: its largest published cells, each a bar scaled to the
    largest, labelled by its dimension values."""
    shown = [c for c in table["cells"] if c["count"] is not None]
    shown.sort(key=lambda c: c["count"], reverse=True)
    top = shown[:BARS]
    peak = max((c["count"] for c in top), default=0)
    return [
        {
            "label": " · ".join(str(v) for v in c["key"].values() if v),
            "count": c["count"],
            "width": max(1, round(BAR_WIDTH * c["count"] / peak)) if peak else 0,
            "y": 24 * i,
        }
        for i, c in enumerate(top)
    ]


def _load(folder: Path, jwks: Any) -> tuple[dict[str, Any] | None, list[str]]:
    problems = publication.verify(folder, jwks, folder.name)
    if problems:
        return None, problems
    document: dict[str, Any] = json.loads(
        (folder / publication.INDICATORS).read_text(encoding="utf-8")
    )
    for table in document["tables"]:
        table["bars"] = _bars(table)
    return document, []


async def transparency(request: Request) -> Response:
    app = console(request)
    available = months(app.publications)
    asked = request.query_params.get("month", "")
    month = asked if asked in available else (available[0] if available else "")
    context: dict[str, Any] = {"months": available, "month": month, "document": None}
    if asked and asked not in available:
        context["unknown"] = True
    if month and app.publications is not None:
        folder = app.publications / month
        try:
            jwks = app.link.gateway_jwks()
        except (OSError, ValueError):
            jwks = {"keys": []}
        document, problems = await run_in_threadpool(_load, folder, jwks)
        context.update(document=document, problems=problems)
    return render(request, "transparency.html", context)
