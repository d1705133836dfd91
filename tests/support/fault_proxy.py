"""A TCP proxy in the test process: a fake network boundary for simulating outages.

Tests put it between a store and the shared PostgreSQL server and `cut()` it to make the
database "go down" for the code under test, then `restore()` it, without stopping or
restarting the real server (other engineers' tests use it at the same time). What the
client sees when cut is what it sees when a server stops: every open connection is closed
(EOF), and a new one is accepted and closed at once, before the server's first byte.
Nothing but bytes crosses it; it never looks at the protocol.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_CHUNK = 65_536
_UPSTREAM_CONNECT_TIMEOUT_S = 3.0


class FaultProxy:
    """Forwards 127.0.0.1:`port` to (host, port) of the real server until `cut()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # both ends of every live connection
        self._cut = False
        self._closed = False
        self.accepted = 0  # connections accepted, cut or not (for tests)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """The database is gone: close every connection, refuse new ones until restored."""
        with self._lock:
            self._cut = True
            live = list(self._sockets)
        for s in live:
            _shutdown(s)

    def restore(self) -> None:
        """The database is back: forward new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cut = True
            live = list(self._sockets)
        for s in live:
            _shutdown(s)
        _shutdown(self._listener)
        self._listener.close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            with self._lock:
                refused = self._cut or self._closed
            if refused:
                _shutdown(client)
                client.close()
                continue
            threading.Thread(
                target=self._connect, args=(client,), name="fault-proxy-conn", daemon=True
            ).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=_UPSTREAM_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            refused = self._cut or self._closed
            if not refused:
                self._sockets.update((client, upstream))
        if refused:  # cut while connecting
            for s in (client, upstream):
                _shutdown(s)
                s.close()
            return
        threading.Thread(
            target=self._pump, args=(upstream, client), name="fault-proxy-down", daemon=True
        ).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way until either side ends; then end both."""
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            _shutdown(s)
        with self._lock:
            gone = [s for s in (source, sink) if s in self._sockets]
            self._sockets.difference_update(gone)
        for s in gone:
            s.close()


def _shutdown(s: socket.socket) -> None:
    """Wake any thread blocked on `s` and send EOF to its peer (close alone does not)."""
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
