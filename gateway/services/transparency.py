"""Transparency behind the engine: the observatory's gRPC read of the monthly publications
(docs/transparency.md, "The observatory's read").

It serves the files `jisr transparency publish` wrote into the gateway's publications
directory, byte for byte, with their signature: the observatory checks them offline with
the gateway's published keys, as it would any copy. A month that was not published, or
whose folder does not hold a signed publication, is NOT_FOUND PUBLICATION_NOT_FOUND; no
request can obtain a figure the publication suppressed, since nothing is computed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from adapters.base import FetchContext
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.engine.call import Engine, UnaryMethod
from gateway.pb.jisr.v1 import transparency_pb2 as tpb
from gateway.services.binding import service_handler
from gateway.transparency import publication

SERVICE = tpb.DESCRIPTOR.services_by_name["Transparency"].full_name
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
# A publication's files, at most (indicators.json and one CSV per table).
MAX_FILES = 64


class TransparencyService:
    """Reads the publications directory; never writes."""

    def __init__(self, publications: Path) -> None:
        self.publications = publications

    def _months(self) -> list[str]:
        if not self.publications.is_dir():
            return []
        found = [
            p.name
            for p in self.publications.iterdir()
            if p.is_dir() and MONTH.fullmatch(p.name) and (p / publication.SIGNATURE).is_file()
        ]
        return sorted(found, reverse=True)

    def list_publications(
        self, request: tpb.ListPublicationsRequest, ctx: FetchContext
    ) -> tpb.ListPublicationsResponse:
        return tpb.ListPublicationsResponse(months=self._months())

    def get_publication(
        self, request: tpb.GetPublicationRequest, ctx: FetchContext
    ) -> tpb.GetPublicationResponse:
        if not MONTH.fullmatch(request.month):
            raise invalid(Reason.INVALID_MONTH, "month is YYYY-MM", "month")
        if request.month not in self._months():
            raise ExchangeError(Reason.PUBLICATION_NOT_FOUND, f"no publication for {request.month}")
        folder = self.publications / request.month
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.name != publication.SIGNATURE
        )[:MAX_FILES]
        return tpb.GetPublicationResponse(
            month=request.month,
            files=[tpb.PublicationFile(name=p.name, content=p.read_bytes()) for p in files],
            signature=(folder / publication.SIGNATURE).read_text(encoding="ascii").strip(),
        )

    def handler(self, engine: Engine) -> grpc.GenericRpcHandler:
        """Transparency behind the engine's authentication, policy and audit."""

        def unary(request: Any, run: Callable[[Any, FetchContext], Any]) -> UnaryMethod[Any, Any]:
            return UnaryMethod(request, run, blocking=True)

        return service_handler(
            engine,
            SERVICE,
            {
                "ListPublications": unary(tpb.ListPublicationsRequest, self.list_publications),
                "GetPublication": unary(tpb.GetPublicationRequest, self.get_publication),
            },
        )
