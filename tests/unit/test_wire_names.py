"""The wire names the SDK uses without the server are those of the generated contract."""

from gateway.base import wire
from gateway.pb.jisr.v1 import audit_pb2, backend_pb2, consent_pb2, contests_pb2, registry_pb2


def test_service_names_match_the_generated_descriptors() -> None:
    assert {
        registry_pb2.DESCRIPTOR.services_by_name["RegistryExchange"].full_name,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentRegistry"].full_name,
        audit_pb2.DESCRIPTOR.services_by_name["AuditTrail"].full_name,
        backend_pb2.DESCRIPTOR.services_by_name["MinistryBackend"].full_name,
        contests_pb2.DESCRIPTOR.services_by_name["ContestCases"].full_name,
    } == {
        wire.REGISTRY_EXCHANGE,
        wire.CONSENT_REGISTRY,
        wire.AUDIT_TRAIL,
        wire.MINISTRY_BACKEND,
        wire.CONTEST_CASES,
    }


def test_method_path_is_the_grpc_path() -> None:
    assert wire.method_path(wire.REGISTRY_EXCHANGE, "GetPersonStatus") == (
        "/jisr.v1.RegistryExchange/GetPersonStatus"
    )
