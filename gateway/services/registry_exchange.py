"""RegistryExchange: the partner-facing methods, as a table over the call engine.

Handlers take the request's raw bytes (no deserializer): the token's `rh` is checked
against the exact bytes received, and the receipt's `sh` is the hash of the exact bytes
sent. Everything a call goes through (identity, token, policy, consent, disclosure,
record, receipt) is the engine's (gateway/engine/call.py); this module only says which
pipeline function answers which method and which response field the grant applies to.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.base.wire import REGISTRY_EXCHANGE
from gateway.engine.batch import BatchMethod
from gateway.engine.call import Engine, UnaryMethod
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import query
from gateway.pipeline.exchange import Exchange
from gateway.services.binding import service_handler

SERVICE = REGISTRY_EXCHANGE


def handler(engine: Engine, exchange: Exchange) -> grpc.GenericRpcHandler:
    """The RegistryExchange service."""
    return service_handler(engine, SERVICE, {**lookups(exchange), **batches(exchange)})


def lookups(exchange: Exchange) -> dict[str, UnaryMethod[Any, Any]]:
    """The unary methods, which the DCI facade (gateway/dci/) runs too: a DCI search is
    the same call as its gRPC equivalent. With remote registries, every call may wait on
    the network, so it runs on a worker from its start."""
    remote = exchange.registries.remote
    return {
        "GetPersonStatus": UnaryMethod(
            pb.GetPersonStatusRequest,
            exchange.person_status,
            "person",
            lambda q: q.subject,
            blocking=remote,
            read=query.person,
        ),
        "GetHouseholdStatus": UnaryMethod(
            pb.GetHouseholdStatusRequest,
            exchange.household_status,
            "household",
            lambda q: q.subject,
            blocking=remote,
            read=query.household,
        ),
        "VerifyEligibility": UnaryMethod(
            pb.VerifyEligibilityRequest,
            exchange.verify,
            "decision",
            lambda q: q.subject,
            blocking=remote,
            read=exchange.eligibility_query,
        ),
    }


def batches(exchange: Exchange) -> dict[str, BatchMethod]:
    return {"VerifyEligibilityBatch": BatchMethod(exchange.verify_batch)}
