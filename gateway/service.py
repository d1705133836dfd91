"""gRPC glue for RegistryExchange: bytes in, Exchange pipeline, bytes out.

Handlers take the request's raw bytes (no deserializer) so that later steps can hash the
exact bytes received (`rh` of the wire contract) and return serialized bytes, so the
response bytes that are sent are the bytes that get hashed. ExchangeError becomes a status
with google.rpc.Status details; anything else is a gateway bug, reported as INTERNAL.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from adapters.base import FetchContext
from gateway import validation
from gateway.errors import ExchangeError, Reason, invalid
from gateway.exchange import Exchange
from gateway.pb.jisr.v1 import registry_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["RegistryExchange"].full_name
log = logging.getLogger("jisr.exchange")

Req = TypeVar("Req", bound=Message)


def _parse(message_type: type[Req], raw: bytes) -> Req:
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise invalid(
            Reason.MALFORMED_REQUEST, f"request is not a valid {message_type.__name__}"
        ) from None


def _context(request: Message, context: grpc.ServicerContext) -> FetchContext:
    purpose = validation.purpose(getattr(request, "purpose"))  # noqa: B009 (every request)
    return FetchContext(purpose=purpose, timeout=context.time_remaining())


def _fail(context: grpc.ServicerContext, method: str, exc: ExchangeError) -> None:
    log.info("denied", extra={"method": method, "code": exc.code.name, "reason": exc.reason})
    context.abort_with_status(rpc_status.to_status(exc.to_status()))


def _bug(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    # Type and place only: an exception's message may quote request data.
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    log.error(
        "gateway fault %s at %s:%s",
        type(exc).__name__,
        frame.filename,
        frame.lineno,
        extra={"method": method},
    )
    error = ExchangeError(grpc.StatusCode.INTERNAL, Reason.INTERNAL, "gateway fault")
    context.abort_with_status(rpc_status.to_status(error.to_status()))


def _unary(
    method: str,
    message_type: type[Req],
    run: Callable[[Req, FetchContext], Message],
) -> grpc.RpcMethodHandler:
    def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = _parse(message_type, raw)
            return run(request, _context(request, context)).SerializeToString()
        except ExchangeError as exc:
            _fail(context, method, exc)
        except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
            _bug(context, method, exc)
        raise AssertionError("unreachable: abort raises")

    return grpc.unary_unary_rpc_method_handler(handle)


def _batch_stream(exchange: Exchange) -> grpc.RpcMethodHandler:
    method = "VerifyEligibilityBatch"

    def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            for index, raw in enumerate(requests):
                request = _parse(pb.VerifyEligibilityBatchRequest, raw)
                ctx = _context(request, context)
                yield exchange.verify_batch(request, index, ctx).SerializeToString()
        except ExchangeError as exc:
            _fail(context, method, exc)
        except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
            _bug(context, method, exc)

    return grpc.stream_stream_rpc_method_handler(handle)


def handler(exchange: Exchange) -> grpc.GenericRpcHandler:
    """The RegistryExchange service, bound to one Exchange."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetPersonStatus": _unary(
                "GetPersonStatus", pb.GetPersonStatusRequest, exchange.person_status
            ),
            "GetHouseholdStatus": _unary(
                "GetHouseholdStatus", pb.GetHouseholdStatusRequest, exchange.household_status
            ),
            "VerifyEligibility": _unary(
                "VerifyEligibility", pb.VerifyEligibilityRequest, exchange.verify
            ),
            "VerifyEligibilityBatch": _batch_stream(exchange),
        },
    )
