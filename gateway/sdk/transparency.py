"""The observatory's read of the transparency publications (docs/transparency.md): list
the months published, fetch one and save it as the directory `jisr transparency verify`
checks offline with the gateway's published keys. Every call is an exchange like any
other: signed, checked against the policy, recorded, answered with a verified receipt."""

from __future__ import annotations

from pathlib import Path

from gateway.base.wire import TRANSPARENCY
from gateway.pb.jisr.v1 import transparency_pb2 as tpb
from gateway.sdk.client import Answer, JisrClient

# The purpose the shipped policy grants the ONDH (and the CNDP) for it.
OBSERVATORY_PURPOSE = "OBSERVATORY_REPORTING"
SIGNATURE_FILE = "manifest.jws"


class Publications:
    """The Transparency service through one client (its institution's credentials)."""

    def __init__(self, client: JisrClient, purpose: str = OBSERVATORY_PURPOSE) -> None:
        self.client = client
        self.purpose = purpose

    def months(self) -> Answer[tpb.ListPublicationsResponse]:
        request = tpb.ListPublicationsRequest(purpose=self.purpose)
        return self.client.call(
            "ListPublications", request, tpb.ListPublicationsResponse, self.purpose, TRANSPARENCY
        )

    def get(self, month: str) -> Answer[tpb.GetPublicationResponse]:
        request = tpb.GetPublicationRequest(purpose=self.purpose, month=month)
        return self.client.call(
            "GetPublication", request, tpb.GetPublicationResponse, self.purpose, TRANSPARENCY
        )

    def save(self, month: str, folder: Path) -> Path:
        """Fetch a month and write it into `folder` (created; must not exist), as signed."""
        answer = self.get(month).message
        folder.mkdir(parents=True)
        for file in answer.files:
            name = Path(file.name).name  # a file name, never a path the server chose
            (folder / name).write_bytes(file.content)
        (folder / SIGNATURE_FILE).write_text(answer.signature + "\n", encoding="ascii")
        return folder
