"""DCI messages checked against the standard's schemas: what passes, and where what fails."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.dci import schemas
from gateway.dci.schemas import Problem

TS = "2025-12-18T08:41:54.123Z"
SECRET = "SECRET-IDCS-123"


@pytest.fixture(scope="module")
def spec() -> schemas.Schemas:
    return schemas.load()


def header(action: str, **extra: object) -> dict[str, Any]:
    """A request header as the compliance suite sends it."""
    return {
        "version": "1.0.0",
        "message_id": "1734500000000-ab12cd34",
        "message_ts": TS,
        "action": action,
        "sender_id": "test-client",
        "sender_uri": "http://127.0.0.1:3336/registry/on-search",
        "receiver_id": "sr-server",
        "total_count": 1,
        **extra,
    }


def callback_header(action: str, **extra: object) -> dict[str, Any]:
    """A callback (or sync answer) header as the compliance suite's mock sends it."""
    return {
        "version": "1.0.0",
        "message_id": "m-1",
        "message_ts": TS,
        "action": action,
        "status": "succ",
        "total_count": 1,
        "completed_count": 1,
        "sender_id": "sr-server",
        "receiver_id": "test-client",
        **extra,
    }


def search(query_type: str, query: object, action: str = "search") -> dict[str, Any]:
    return {
        "signature": "unsigned-stub",
        "header": header(action),
        "message": {
            "transaction_id": "1734500000000-tx000001",
            "search_request": [
                {
                    "reference_id": "ref-1734500000000-ab12cd34",
                    "timestamp": TS,
                    "search_criteria": {"query_type": query_type, "query": query},
                }
            ],
        },
    }


def by_id(value: object = "TEST-001") -> dict[str, Any]:
    return search("idtype-value", {"type": "UIN", "value": value})


def predicate(value: object) -> dict[str, Any]:
    return search(
        "predicate",
        [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": "age",
                    "operator": "lt",
                    "attribute_value": value,
                },
                "condition": "and",
                "expression2": {
                    "attribute_name": "poverty_score",
                    "operator": "lt",
                    "attribute_value": "2.5",
                },
            }
        ],
    )


def txn_status(attribute_type: str, attribute_value: object) -> dict[str, Any]:
    return {
        "signature": "unsigned-stub",
        "header": header("txn-status"),
        "message": {
            "transaction_id": "tx-2",
            "txnstatus_request": {
                "reference_id": "ref-2",
                "txn_type": "search",
                "attribute_type": attribute_type,
                "attribute_value": attribute_value,
            },
        },
    }


def sync_answer(action: str = "on-search") -> dict[str, Any]:
    return {
        "signature": "unsigned",
        "header": callback_header(action),
        "message": {
            "transaction_id": "1734500000000-tx000001",
            "correlation_id": "corr-1",
            "search_response": [
                {
                    "reference_id": "ref-1",
                    "timestamp": TS,
                    "status": "succ",
                    "data": {"version": "1.0.0", "reg_records": []},
                }
            ],
        },
    }


def wheres(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


# -- requests the compliance suite sends ---------------------------------------------------


@pytest.mark.parametrize("path", ["/registry/search", "/registry/sync/search"])
def test_an_idtype_value_search_for_uin_test_001_passes(spec: schemas.Schemas, path: str) -> None:
    assert spec.request(path, by_id()) == []


def test_an_expression_search_with_an_opaque_value_passes(spec: schemas.Schemas) -> None:
    query = {
        "type": "ns:org:QueryType:expression",
        "value": {"expression": {"sample_field": "implementation-specific-query"}},
    }
    assert spec.request("/registry/search", search("expression", query)) == []


def test_a_predicate_search_with_string_values_passes(spec: schemas.Schemas) -> None:
    assert spec.request("/registry/sync/search", predicate("25")) == []


def test_a_subscribe_request_for_register_events_passes(spec: schemas.Schemas) -> None:
    body = {
        "signature": "unsigned-stub",
        "header": header("subscribe"),
        "message": {
            "transaction_id": "tx-3",
            "subscribe_request": [
                {
                    "reference_id": "ref-3",
                    "timestamp": TS,
                    "subscribe_criteria": {
                        "reg_event_type": "REGISTER",
                        "filter": {"type": "UIN", "value": "TEST-001"},
                        "notify_record_type": "Member",
                    },
                }
            ],
        },
    }
    assert spec.request("/registry/subscribe", body) == []


def test_an_unsubscribe_request_with_flat_codes_passes(spec: schemas.Schemas) -> None:
    body = {
        "signature": "unsigned-stub",
        "header": header("unsubscribe"),
        "message": {
            "transaction_id": "tx-4",
            "timestamp": TS,
            "subscription_codes": ["sub-test-001"],
        },
    }
    assert spec.request("/registry/unsubscribe", body) == []


@pytest.mark.parametrize("path", ["/registry/txn/status", "/registry/sync/txn/status"])
def test_a_txn_status_request_by_transaction_id_passes(spec: schemas.Schemas, path: str) -> None:
    assert spec.request(path, txn_status("transaction_id", "tx-2")) == []


# -- requests that fail, and where ---------------------------------------------------------


def test_a_request_without_message_fails_at_the_root_naming_message(
    spec: schemas.Schemas,
) -> None:
    body = by_id()
    del body["message"]
    [problem] = spec.request("/registry/search", body)
    assert problem.where == ""
    assert "'message'" in problem.message


def test_an_action_for_another_path_fails_at_header_action(spec: schemas.Schemas) -> None:
    body = search("idtype-value", {"type": "UIN", "value": "TEST-001"}, action="txn-status")
    assert wheres(spec.request("/registry/sync/search", body)) == ["header.action"]


def test_a_message_ts_without_timezone_fails_at_header_message_ts(
    spec: schemas.Schemas,
) -> None:
    body = by_id()
    body["header"]["message_ts"] = "2024-01-01T10:00:00"
    assert wheres(spec.request("/registry/search", body)) == ["header.message_ts"]


def test_an_integer_attribute_value_passes(spec: schemas.Schemas) -> None:
    assert spec.request("/registry/search", predicate(25)) == []
    assert spec.request("/registry/search", by_id(123456789)) == []


def test_a_two_letter_locale_fails(spec: schemas.Schemas) -> None:
    body = by_id()
    body["message"]["search_request"][0]["locale"] = "en"
    assert wheres(spec.request("/registry/search", body)) == ["message.search_request[0].locale"]


def test_the_query_is_checked_against_the_shape_its_query_type_names(
    spec: schemas.Schemas,
) -> None:
    body = search("expression", {"type": "UIN", "value": "TEST-001"})
    assert wheres(spec.request("/registry/search", body)) == [
        "message.search_request[0].search_criteria.query.value"
    ]


def test_a_plain_message_under_is_msg_encrypted_fails_as_an_encrypted_one(
    spec: schemas.Schemas,
) -> None:
    body = by_id()
    body["header"]["is_msg_encrypted"] = True
    problems = spec.request("/registry/search", body)
    assert problems
    assert set(wheres(problems)) == {"message"}
    assert any("'ciphertext'" in p.message for p in problems)


def test_the_attribute_value_is_checked_against_what_attribute_type_names(
    spec: schemas.Schemas,
) -> None:
    body = txn_status("reference_id_list", "tx-2")
    assert wheres(spec.request("/registry/txn/status", body)) == [
        "message.txnstatus_request.attribute_value"
    ]


def test_problems_never_contain_the_offending_value(spec: schemas.Schemas) -> None:
    body = by_id()
    body["header"].update(
        total_count=SECRET, action=SECRET, message_ts=SECRET, sender_uri=f"::{SECRET}"
    )
    item = body["message"]["search_request"][0]
    item.update(locale=SECRET, reference_id=[SECRET], timestamp=SECRET)
    item["search_criteria"].update(query_type=SECRET, query={"type": [SECRET], "value": None})
    body["message"]["transaction_id"] = SECRET * 10
    problems = spec.request("/registry/sync/search", body)
    assert len(problems) >= 8
    assert not [p for p in problems if SECRET in p.message or SECRET in p.where]


def test_deeply_nested_json_is_a_problem_not_an_exception(spec: schemas.Schemas) -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    body = by_id()
    body["message"] = nested
    assert spec.request("/registry/search", body) == [Problem("", "nested too deeply")]


def test_problems_are_sorted_by_where_and_at_most_twenty(spec: schemas.Schemas) -> None:
    body = by_id()
    item = body["message"]["search_request"][0]
    body["message"]["search_request"] = [copy.deepcopy(item) for _ in range(30)]
    for each in body["message"]["search_request"]:
        del each["reference_id"], each["timestamp"]
    problems = spec.request("/registry/search", body)
    assert len(problems) == schemas.MAX_PROBLEMS
    assert problems == sorted(problems)


def test_a_path_the_facade_does_not_serve_is_a_value_error(spec: schemas.Schemas) -> None:
    with pytest.raises(ValueError, match="on-search"):
        spec.request("/registry/on-search", by_id())


# -- answers the facade gives --------------------------------------------------------------


def test_an_ack_without_error_passes(spec: schemas.Schemas) -> None:
    ack = {"message": {"ack_status": "ACK", "timestamp": TS, "correlation_id": "corr-1"}}
    assert spec.response("ack", ack) == []


def test_an_ack_with_a_null_error_fails(spec: schemas.Schemas) -> None:
    ack = {"message": {"ack_status": "ACK", "timestamp": TS, "correlation_id": "c", "error": None}}
    assert wheres(spec.response("ack", ack)) == ["message.error"]


def test_a_sync_search_answer_with_empty_records_passes(spec: schemas.Schemas) -> None:
    assert spec.response("sync-search", sync_answer()) == []


def test_a_sync_search_answer_with_the_request_action_fails(spec: schemas.Schemas) -> None:
    assert wheres(spec.response("sync-search", sync_answer(action="search"))) == ["header.action"]


def test_a_sync_search_answer_without_header_fails(spec: schemas.Schemas) -> None:
    answer = sync_answer()
    del answer["header"]
    [problem] = spec.response("sync-search", answer)
    assert problem.where == ""
    assert "'header'" in problem.message


def test_a_txn_on_status_callback_for_a_search_passes(spec: schemas.Schemas) -> None:
    callback = {
        "signature": "unsigned",
        "header": callback_header("txn-on-status"),
        "message": {
            "transaction_id": "tx-2",
            "correlation_id": "corr-2",
            "txnstatus_response": {
                "txn_type": "search",
                "txn_status": {
                    "transaction_id": "tx-2",
                    "correlation_id": "corr-2",
                    "search_response": [],
                },
            },
        },
    }
    assert spec.response("txn-on-status", callback) == []


def test_an_unknown_answer_kind_is_a_value_error(spec: schemas.Schemas) -> None:
    with pytest.raises(ValueError, match="search"):
        spec.response("search", {})


# -- token endpoint and key set ------------------------------------------------------------


def test_a_token_request_without_client_secret_fails(spec: schemas.Schemas) -> None:
    form = {"grant_type": "client_credentials", "client_id": "cnss"}
    assert spec.token_request(form) == [Problem("", "'client_secret' is a required property")]


def test_a_token_response_with_expires_in_as_a_string_passes(spec: schemas.Schemas) -> None:
    body = {"access_token": "abc", "token_type": "bearer", "expires_in": "3600"}
    assert spec.token_response(body) == []


def test_a_jwks_with_kty_kid_use_and_alg_passes(spec: schemas.Schemas) -> None:
    key = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAY", "kid": "k1", "use": "sig", "alg": "EdDSA"}
    assert spec.jwks({"keys": [key]}) == []


def test_a_jwks_key_without_use_fails(spec: schemas.Schemas) -> None:
    key = {"kty": "OKP", "kid": "k1", "alg": "EdDSA"}
    assert spec.jwks({"keys": [key]}) == [Problem("keys[0]", "'use' is a required property")]


def test_the_schemas_are_loaded_once(spec: schemas.Schemas) -> None:
    assert schemas.load() is spec
