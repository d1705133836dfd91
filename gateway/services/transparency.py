"""Transparency behind the engine: the observatory's gRPC read of the monthly publications
(docs/transparency.md, "The observatory's read").

It serves the files `jisr transparency publish` wrote into the gateway's publications
directory, byte for byte, with their signature: the observatory checks them offline with
the gateway's published keys, as it would any copy. A month that was not published, or
whose folder does not hold a publication that verifies against the gateway's keys (and is
that month's), is NOT_FOUND PUBLICATION_NOT_FOUND; only the files the signature names are
served. No request can obtain a figure the publication suppressed: nothing is computed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from adapters.base import FetchContext
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.engine.call import Engine, UnaryMethod
from gateway.pb.jisr.v1 import transparency_pb2 as tpb
from gateway.services.binding import service_handler
from gateway.transparency import publication

log = logging.getLogger("jisr.transparency")
SERVICE = tpb.DESCRIPTOR.services_by_name["Transparency"].full_name
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
# A publication's files, at most (indicators.json and one CSV per table).
MAX_FILES = 64


class TransparencyService:
    """Reads the publications directory; never writes."""

    def __init__(self, publications: Path, jwks: Callable[[], Mapping[str, Any]]) -> None:
        self.publications = publications
        self.jwks = jwks  # the gateway's published keys: only what verifies is served

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
        try:
            names = publication.signed_files(folder, self.jwks(), request.month)
        except (ValueError, OSError):
            # Logged by month only: the problems name files, never anything personal.
            log.warning("publication does not verify", extra={"month": request.month})
            raise ExchangeError(
                Reason.PUBLICATION_NOT_FOUND, f"no verifiable publication for {request.month}"
            ) from None
        return tpb.GetPublicationResponse(
            month=request.month,
            files=[
                tpb.PublicationFile(name=name, content=(folder / name).read_bytes())
                for name in names[:MAX_FILES]
            ],
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
