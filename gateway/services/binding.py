"""The gRPC edge of the call engine: a grpc context in, an outcome applied to it.

A service is a table of methods (gateway/engine/call.py's `UnaryMethod`, `StreamMethod`,
gateway/engine/batch.py's `BatchMethod`, gateway/engine/notify.py's `NotifyMethod`);
`service_handler` turns the table into a grpc generic handler. Each handler reads the call
into a plain `Invocation`, lets the engine run it, and answers: the body with the receipt
in the trailers, or an abort with the status of the refusal's reason
(gateway/services/edge.py), its rich details and, once the caller is known, the deny
receipt.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import grpc

from gateway.base.wire import RECEIPT_METADATA, SIGNATURE_METADATA, method_path
from gateway.engine.batch import BatchMethod, batch_stream
from gateway.engine.call import (
    Answered,
    Engine,
    Invocation,
    Outcome,
    StreamMethod,
    UnaryMethod,
)
from gateway.engine.notify import NotifyMethod, notification_stream
from gateway.engine.steps import Sent, Steps, Unary
from gateway.services.edge import grpc_status

Method = UnaryMethod[Any, Any] | StreamMethod[Any] | BatchMethod | NotifyMethod


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _AbortStatus(_Status, grpc.Status):  # type: ignore[misc]
    """A grpc.Status whose trailers carry both the rich status and the receipt."""


def invocation(method: str, context: grpc.ServicerContext) -> Invocation:
    """What the engine needs of a grpc call, read once."""
    names = context.auth_context().get("x509_common_name")
    metadata = tuple(context.invocation_metadata())
    return Invocation(
        method=method,
        certificate=bytes(names[0]).decode() if names else "",
        tokens=tuple(str(v) for k, v in metadata if k == SIGNATURE_METADATA),
        metadata=metadata,
        remaining=context.time_remaining,
        active=context.is_active,
    )


def answer(outcome: Outcome, context: grpc.ServicerContext) -> bytes:
    """Apply the outcome: trailers and body, or an abort (which raises)."""
    if isinstance(outcome, Answered):
        context.set_trailing_metadata(((RECEIPT_METADATA, outcome.receipt),))
        return outcome.body
    status = grpc_status(outcome.error)
    trailers: tuple[tuple[str, str | bytes], ...] = tuple(status.trailing_metadata)
    if outcome.receipt is not None:
        trailers += ((RECEIPT_METADATA, outcome.receipt),)
    context.abort_with_status(_AbortStatus(status.code, status.details, trailers))
    raise AssertionError("unreachable: abort raises")


def unary_handler(
    engine: Engine, path: str, method: UnaryMethod[Any, Any]
) -> grpc.RpcMethodHandler:
    """A unary method as steps the door can drive on the event loop (or a thread)."""

    def steps(raw: bytes, context: grpc.ServicerContext) -> Steps[bytes]:
        outcome = yield from engine.unary(invocation(path, context), raw, method)
        return answer(outcome, context)

    return grpc.unary_unary_rpc_method_handler(Unary(steps))


def stream_handler(engine: Engine, path: str, method: StreamMethod[Any]) -> grpc.RpcMethodHandler:
    """A server-streaming method: the engine's messages, then its outcome."""

    def handle(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        outcome = yield from engine.server_stream(invocation(path, context), raw, method)
        answer(outcome, context)

    return grpc.unary_stream_rpc_method_handler(handle)


def notify_handler(engine: Engine, path: str, method: NotifyMethod) -> grpc.RpcMethodHandler:
    """A notification stream: one envelope per batch of events, then its outcome."""

    def handle(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        outcome = yield from notification_stream(engine, invocation(path, context), raw, method)
        answer(outcome, context)

    return grpc.unary_stream_rpc_method_handler(handle)


def batch_handler(engine: Engine, path: str, method: BatchMethod) -> grpc.RpcMethodHandler:
    """The signed-batch stream: one answer per envelope, then its outcome."""

    def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Sent]:
        outcome = yield from batch_stream(engine, invocation(path, context), requests, method)
        answer(outcome, context)

    return grpc.stream_stream_rpc_method_handler(handle)


def service_handler(
    engine: Engine, service: str, methods: Mapping[str, Method]
) -> grpc.GenericRpcHandler:
    """A service's method table, every method a call through `engine`."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, method in methods.items():
        path = method_path(service, name)
        if isinstance(method, UnaryMethod):
            handlers[name] = unary_handler(engine, path, method)
        elif isinstance(method, StreamMethod):
            handlers[name] = stream_handler(engine, path, method)
        elif isinstance(method, NotifyMethod):
            handlers[name] = notify_handler(engine, path, method)
        else:
            handlers[name] = batch_handler(engine, path, method)
    return grpc.method_handlers_generic_handler(service, handlers)
