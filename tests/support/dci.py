"""DCI envelopes as a partner's system writes and signs them (tests of gateway/dci/)."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.dci import signature
from gateway.security import pki

PURPOSE = "ASD_ELIGIBILITY"
WAIT_S = 30.0


def envelope(
    items: list[dict[str, Any]], sender: str = "ANSS", action: str = "search"
) -> dict[str, Any]:
    header = {
        "version": "1.0.0",
        "message_id": uuid.uuid4().hex,
        "message_ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "sender_id": sender,
        "receiver_id": "jisr-gateway",
        "total_count": len(items),
    }
    message = {"transaction_id": uuid.uuid4().hex, "search_request": items}
    return {"header": header, "message": message}


def item(kind: str, value: str, purpose: str | None = PURPOSE) -> dict[str, Any]:
    criteria: dict[str, Any] = {
        "query_type": "idtype-value",
        "query": {"type": kind, "value": value},
    }
    if purpose is not None:
        criteria["authorize"] = {"purpose": {"code": purpose}}
    return {
        "reference_id": uuid.uuid4().hex,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "search_criteria": criteria,
    }


def signed(
    pki_dir: Path, body: dict[str, Any], institution: str = "ANSS", *, age_s: int = 0
) -> dict[str, Any]:
    """The envelope signed by the institution's key, `age_s` seconds ago."""
    files = pki.load_institution(pki_dir, institution)
    key = load_pem_private_key(files.signing_key.read_bytes(), None)
    value = signature.sign(
        body["header"], body["message"], sender_id=institution, kid=files.kid,
        key=key, created=int(time.time()) - age_s,  # type: ignore[arg-type]
    )  # fmt: skip
    return {"signature": value, **body}


class Receiver:
    """The partner's callback endpoint: a real HTTP server on loopback that keeps what
    it is sent, by path."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("content-length", "0"))
                received.put((self.path, json.loads(self.rfile.read(size))))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": {"ack_status": "ACK"}}')

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def next(self, path: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            got, body = self.received.get(timeout=max(0.1, deadline - time.monotonic()))
            if got == path:
                return body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
