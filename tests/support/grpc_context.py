"""Stand-ins for grpc.ServicerContext (the calls the gRPC edge, gateway/services/binding.py,
makes on it) and grpc.HandlerCallDetails, for in-process tests and the profile benchmark.

A fake at the boundary grpc owns: the real context is exercised by every integration test
through real servers. An abort raises `Aborted`, as grpc's does, carrying what a caller
would receive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

Trailers = tuple[tuple[str, str | bytes], ...]


class Aborted(Exception):  # noqa: N818 - named for what grpc does
    """The call was aborted with `code`, `details` and `trailers`."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Trailers) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailers = trailers


@dataclass(frozen=True)
class FakeCallDetails:
    """The part of grpc.HandlerCallDetails a generic handler reads."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class FakeContext:
    """One call's context: the certificate's institution ("" for none), its metadata, time
    left, whether the caller is still there; what the handler set is kept for asserts."""

    def __init__(
        self,
        institution: str = "",
        metadata: Sequence[tuple[str, str]] = (),
        *,
        remaining: float | None = 10.0,
        active: bool = True,
    ) -> None:
        self.metadata = tuple(metadata)
        self.trailers: Trailers = ()
        self.remaining = remaining
        self.active = active
        self._auth = {"x509_common_name": [institution.encode()]} if institution else {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def time_remaining(self) -> float | None:
        return self.remaining

    def is_active(self) -> bool:
        return self.active

    def set_trailing_metadata(self, trailers: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = tuple(trailers)

    def abort_with_status(self, status: Any) -> None:
        raise Aborted(status.code, status.details, tuple(status.trailing_metadata or ()))
