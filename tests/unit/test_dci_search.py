"""How a DCI search item becomes the registry call that answers it (gateway/dci/search.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.dci import search

PURPOSE = {"authorize": {"purpose": {"code": "AMO_TADAMON_ENROLMENT"}}}


def nosql(
    query: object, collection: str | None = None, kind: str = "ns:org:QueryType:NoSql"
) -> dict[str, Any]:
    expression: dict[str, Any] = {"query": query}
    if collection is not None:
        expression["collection"] = collection
    return {
        "query_type": "expression",
        "query": {"type": kind, "value": {"expression": expression}},
        **PURPOSE,
    }


def test_an_identifier_search_asks_for_the_person() -> None:
    planned = search.plan(
        {"query_type": "idtype-value", "query": {"type": "IDCS", "value": "X1"}, **PURPOSE}
    )
    assert isinstance(planned, search.Lookup)
    assert (planned.method, planned.purpose) == ("GetPersonStatus", "AMO_TADAMON_ENROLMENT")


@pytest.mark.parametrize("selector", [{"HOUSEHOLD_ID": "H1"}, {"HOUSEHOLD_ID": {"$eq": "H1"}}])
def test_a_nosql_expression_naming_one_household_asks_for_it(selector: object) -> None:
    planned = search.plan(nosql(selector, collection="Group"))
    assert isinstance(planned, search.Lookup)
    assert planned.method == "GetHouseholdStatus"
    assert planned.request.subject.household_id == "H1"  # type: ignore[attr-defined]


def test_a_nosql_expression_on_the_group_collection_answers_a_persons_household() -> None:
    planned = search.plan(nosql({"IDCS": {"$eq": "X1"}}, collection="Group"))
    assert isinstance(planned, search.Lookup)
    assert planned.method == "GetHouseholdStatus"
    assert planned.request.subject.idcs == "X1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "selector",
    [
        {"$and": [{"poverty_score": {"$lt": 5}}, {"location": {"$eq": "central"}}]},
        {"HOUSEHOLD_ID": {"$ne": "H1"}},
        {"HOUSEHOLD_ID": {"$eq": "H1", "$ne": "H2"}},
        {"HOUSEHOLD_ID": "H1", "region": "Souss-Massa"},
        {"HOUSEHOLD_ID": {"$in": ["H1", "H2"]}},
        {"HOUSEHOLD_ID": 7},
        {"poverty_score": "5"},
        {},
    ],
)
def test_a_nosql_expression_describing_a_population_is_rejected(selector: object) -> None:
    planned = search.plan(nosql(selector))
    assert isinstance(planned, search.Rejected)
    assert planned.code == "rjct.search_criteria.invalid"


def test_an_expression_in_another_query_language_is_rejected() -> None:
    planned = search.plan(nosql({"HOUSEHOLD_ID": "H1"}, kind="ns:org:QueryType:GraphQl"))
    assert isinstance(planned, search.Rejected)


def test_an_expression_over_an_unknown_collection_is_rejected() -> None:
    planned = search.plan(nosql({"HOUSEHOLD_ID": "H1"}, collection="Payments"))
    assert isinstance(planned, search.Rejected)


def test_a_household_identifier_cannot_answer_a_member() -> None:
    planned = search.plan(nosql({"HOUSEHOLD_ID": "H1"}, collection="Member"))
    assert isinstance(planned, search.Rejected)
    assert "Group" in planned.message
