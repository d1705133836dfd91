"""Where a failure becomes a gRPC status: the one place a Reason meets grpc.

The code comes from the table of gateway/base/status.py; the trailers carry the
google.rpc.Status with its ErrorInfo, as docs/errors.md describes.
"""

from __future__ import annotations

import grpc
from grpc_status import rpc_status

from gateway.base.errors import ExchangeError, Reason
from gateway.base.status import code_of, rich_status

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(reason: Reason) -> grpc.StatusCode:
    """The grpc status code of a reason."""
    return _BY_NUMBER[code_of(reason)]


def grpc_status(error: ExchangeError) -> grpc.Status:
    """The status to abort with: code, message and the rich status in the trailers."""
    return rpc_status.to_status(rich_status(error))
