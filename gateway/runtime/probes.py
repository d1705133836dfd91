"""The liveness and readiness endpoints, plain HTTP on an address of their own.

A container probe or a load balancer's health check cannot present the client
certificate the gRPC port demands, and should not need one: these endpoints disclose no
record, only whether this gateway can serve (docs/deployment.md, "Probes"):

- `GET /livez`: 200 while the process can still do work (its event loop answers); a 503
  tells the orchestrator to restart it;
- `GET /readyz`: 200 while it should be sent calls (serving, not draining, its audit
  store answering, its required backends reachable); a 503 takes it out of rotation.

Both answer JSON: `{"status": "ok"|"failing", "checks": {name: "ok"|reason}}`. The
stdlib's threading HTTP server is enough for a few requests a second, bounded: at most
MAX_CONNECTIONS at once (one more is closed unanswered), and each connection is cut
CONNECTION_S after it was accepted, however slowly its peer sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from gateway.runtime.readiness import Verdict

LOG = logging.getLogger("jisr.probes")
LIVE_PATH = "/livez"
READY_PATH = "/readyz"
MAX_CONNECTIONS = 32
CONNECTION_S = 10.0


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on connections and a deadline for each."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[_Handler], family: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed unanswered, nothing else held
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        cut = threading.Timer(CONNECTION_S, _cut, args=(request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self._slots.release()


def _cut(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class ProbeServer:
    """Serves the probes on `listen` (host:port, IPv4 or [IPv6]; port 0 picks one)."""

    def __init__(
        self, listen: str, live: Callable[[], Verdict], ready: Callable[[], Verdict]
    ) -> None:
        host, _, port = listen.rpartition(":")
        bare = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        routes = {LIVE_PATH: live, READY_PATH: ready}
        handler = type("Handler", (_Handler,), {"routes": routes})
        self._server = _BoundedServer((bare, int(port)), handler, family)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="jisr-probes", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Callable[[], Verdict]]] = {}
    timeout = 5  # seconds a connection may stay silent
    server_version = "jisr-probes"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        probe = self.routes.get(self.path.split("?", 1)[0])
        body: dict[str, object]
        if probe is None:
            body, status = {"status": "not found", "paths": sorted(self.routes)}, 404
        else:
            try:
                verdict = probe()
            except Exception as exc:  # a probe never answers a traceback
                LOG.exception("probe %s failed", self.path.split("?", 1)[0])
                verdict = Verdict(False, {"probe": f"check failed: {type(exc).__name__}"})
            body, status = verdict.body(), 200 if verdict.ok else 503
        payload = json.dumps(body, sort_keys=True).encode("ascii") + b"\n"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if with_body:
                self.wfile.write(payload)
        except OSError:  # the asker gave up (a probe's timeout): nothing to tell it
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """No access log: probes come every few seconds and say nothing worth keeping."""
