"""The access policy: what is granted is permitted with its basis and fields; nothing else is."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.security.policy import METHODS, ROLES, Policy, PolicyError, load, load_default, parse
from gateway.security.projection import FieldTree, all_paths, project, to_paths

GRANT = """
[[grant]]
institution = "CNSS"
method = "VerifyEligibility"
purposes = ["AMO_ENROLMENT"]
basis = "Law 65-00"
fields = ["programme", "eligible"]
"""

ROLES_TABLE = """
[roles]
regulator = ["CNDP"]
dpo = ["CNSS", "ANSS"]
"""

HOUSEHOLD_GRANT = """
[scopes]
composition = ['members.relationship', 'members.birth_date']

[[grant]]
institution = "MEN"
method = "GetHouseholdStatus"
purposes = ["SCHOOL_SUPPORT"]
basis = "consent"
fields = ["members.relationship", "members.birth_date"]
"""

DEMO_PURPOSES = ("AMO_ENROLMENT", "ASD_ELIGIBILITY", "RECERTIFICATION")


@pytest.fixture(scope="module")
def shipped() -> Policy:
    return load_default()


@pytest.fixture
def policy() -> Policy:
    return parse(ROLES_TABLE + GRANT + HOUSEHOLD_GRANT, "policy.toml")


# -- the shipped policy ---------------------------------------------------------------


def test_shipped_policy_loads(shipped: Policy) -> None:
    assert shipped.grants
    assert shipped.source.endswith("policy.toml")


EXCHANGE_METHODS = sorted(m for m, spec in METHODS.items() if "RegistryExchange" in spec.service)


@pytest.mark.parametrize("method", EXCHANGE_METHODS)
@pytest.mark.parametrize("purpose", DEMO_PURPOSES)
def test_shipped_demo_institution_may_call_every_method_for_the_demo_purposes(
    shipped: Policy, method: str, purpose: str
) -> None:
    assert shipped.authorize("DEMO", method, purpose) is not None


def test_shipped_demo_sees_every_household_field_except_birth_dates_for_recertification(
    shipped: Policy,
) -> None:
    every = set(all_paths(pb.HouseholdStatus.DESCRIPTOR))
    recert = shipped.authorize("DEMO", "GetHouseholdStatus", "RECERTIFICATION")
    enrol = shipped.authorize("DEMO", "GetHouseholdStatus", "AMO_ENROLMENT")
    assert recert is not None
    assert enrol is not None
    assert every - household_paths(recert.fields) == {"members.birth_date"}
    assert every - household_paths(enrol.fields) == set()


def test_shipped_cnss_eligibility_grant_withholds_the_score_band(shipped: Policy) -> None:
    grant = shipped.authorize("CNSS", "VerifyEligibility", "AMO_ENROLMENT")
    assert grant is not None
    decision = pb.EligibilityDecision(programme="AMOT", eligible=True, score_band="S1")
    assert project(decision, grant.fields)[1] == ["score_band"]


def test_shipped_men_household_grant_rests_on_consent(shipped: Policy) -> None:
    grant = shipped.authorize("MEN", "GetHouseholdStatus", "SCHOOL_SUPPORT")
    assert grant is not None
    assert grant.consent_based


def test_shipped_roles_are_held_by_the_documented_institutions(shipped: Policy) -> None:
    assert shipped.holders("regulator") == {"CNDP"}
    assert shipped.holders("citizen_portal") == {"ANR"}
    assert shipped.holders("consent_collector") == {"ANSS", "DEMO"}
    assert shipped.holders("dpo") == {"CNSS", "ANSS", "MEN", "MS", "DEMO"}


# -- authorize ------------------------------------------------------------------------


def test_authorize_returns_the_grant_with_its_basis_and_fields(policy: Policy) -> None:
    grant = policy.authorize("CNSS", "VerifyEligibility", "AMO_ENROLMENT")
    assert grant is not None
    assert (grant.institution, grant.method, grant.purpose) == (
        "CNSS",
        "VerifyEligibility",
        "AMO_ENROLMENT",
    )
    assert grant.basis == "Law 65-00"
    assert grant.paths == ("programme", "eligible")
    assert to_paths(grant.fields) == ["eligible", "programme"]


def test_authorize_accepts_the_full_grpc_method_name(policy: Policy) -> None:
    full = "/jisr.v1.RegistryExchange/VerifyEligibility"
    assert policy.authorize("CNSS", full, "AMO_ENROLMENT") == policy.authorize(
        "CNSS", "VerifyEligibility", "AMO_ENROLMENT"
    )


def test_authorize_denies_a_purpose_not_granted(policy: Policy) -> None:
    assert policy.authorize("CNSS", "VerifyEligibility", "RECERTIFICATION") is None


def test_authorize_denies_a_method_not_granted(policy: Policy) -> None:
    assert policy.authorize("CNSS", "GetHouseholdStatus", "AMO_ENROLMENT") is None


def test_authorize_denies_an_unknown_institution(policy: Policy) -> None:
    assert policy.authorize("NOBODY", "VerifyEligibility", "AMO_ENROLMENT") is None


def test_authorize_denies_a_grant_of_another_institution(policy: Policy) -> None:
    assert policy.authorize("MEN", "VerifyEligibility", "AMO_ENROLMENT") is None


def test_a_grant_listing_several_purposes_permits_each_of_them() -> None:
    policy = parse(GRANT.replace('["AMO_ENROLMENT"]', '["A_ONE", "A_TWO"]'), "policy.toml")
    assert policy.authorize("CNSS", "VerifyEligibility", "A_ONE") is not None
    assert policy.authorize("CNSS", "VerifyEligibility", "A_TWO") is not None


def test_purposes_of_lists_every_purpose_an_institution_holds_a_grant_for() -> None:
    policy = parse(
        GRANT
        + GRANT.replace("VerifyEligibility", "VerifyEligibilityBatch").replace(
            "AMO_ENROLMENT", "RECERTIFICATION"
        ),
        "policy.toml",
    )
    assert policy.purposes_of("CNSS") == {"AMO_ENROLMENT", "RECERTIFICATION"}
    assert policy.purposes_of("MEN") == frozenset()


# -- basis ----------------------------------------------------------------------------


def test_a_consent_basis_makes_the_grant_consent_based(policy: Policy) -> None:
    grant = policy.authorize("MEN", "GetHouseholdStatus", "SCHOOL_SUPPORT")
    assert grant is not None
    assert grant.consent_based


def test_a_statute_basis_is_not_consent_based(policy: Policy) -> None:
    grant = policy.authorize("CNSS", "VerifyEligibility", "AMO_ENROLMENT")
    assert grant is not None
    assert not grant.consent_based


# -- roles ----------------------------------------------------------------------------


def test_has_role_is_true_for_a_listed_institution(policy: Policy) -> None:
    assert policy.has_role("CNDP", "regulator")
    assert policy.has_role("ANSS", "dpo")


def test_has_role_is_false_for_an_unlisted_institution(policy: Policy) -> None:
    assert not policy.has_role("CNSS", "regulator")


def test_a_role_the_file_leaves_out_is_held_by_nobody(policy: Policy) -> None:
    assert policy.holders("citizen_portal") == frozenset()
    assert not policy.has_role("ANR", "citizen_portal")


def test_asking_for_an_unknown_role_is_a_programming_error(policy: Policy) -> None:
    with pytest.raises(ValueError, match="unknown role 'auditor'"):
        policy.has_role("CNDP", "auditor")


def test_roles_are_the_fixed_set() -> None:
    assert {"consent_collector", "dpo", "regulator", "citizen_portal"} == ROLES


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grant = [", "policy.toml: "),
        ("", "no [[grant]] defined"),
        (GRANT + "colour = 1", "grant[0].colour: unknown key"),
        ("owner = 1\n" + GRANT, "owner: unknown key"),
        (GRANT.replace('"CNSS"', '"cnss"'), "grant[0].institution: 'cnss' is not an institution"),
        (GRANT.replace('"CNSS"', '"C"'), "grant[0].institution"),
        (GRANT.replace('institution = "CNSS"\n', ""), "grant[0].institution: required"),
        (GRANT.replace('method = "VerifyEligibility"\n', ""), "grant[0].method: required"),
        (GRANT.replace('"VerifyEligibility"', '"GetScore"'), "grant[0].method: 'GetScore'"),
        (
            GRANT.replace('"VerifyEligibility"', '"/jisr.v1.RegistryExchange/VerifyEligibility"'),
            "grant[0].method",
        ),
        (GRANT.replace('["AMO_ENROLMENT"]', '["amo"]'), "grant[0].purposes[0]: 'amo'"),
        (GRANT.replace('["AMO_ENROLMENT"]', '["A"]'), "grant[0].purposes[0]: 'A'"),
        (GRANT.replace('["AMO_ENROLMENT"]', "[]"), "grant[0].purposes: must be a non-empty"),
        (GRANT.replace('["AMO_ENROLMENT"]', '"AMO_ENROLMENT"'), "grant[0].purposes: must be"),
        (
            GRANT.replace('["AMO_ENROLMENT"]', '["AMO_ENROLMENT", "AMO_ENROLMENT"]'),
            "grant[0].purposes[1]: AMO_ENROLMENT listed twice",
        ),
        (GRANT.replace('"Law 65-00"', '"  "'), "grant[0].basis: must be a statute reference"),
        (GRANT.replace('basis = "Law 65-00"\n', ""), "grant[0].basis"),
        (GRANT.replace('"Law 65-00"', '"Consent"'), "grant[0].basis: write a consent basis"),
        (GRANT.replace('["programme", "eligible"]', "[]"), "grant[0].fields: must be"),
        (
            GRANT.replace('"eligible"', '"score"'),
            "grant[0].fields[1]: EligibilityDecision has no field 'score'",
        ),
        (
            HOUSEHOLD_GRANT.replace('"members.birth_date"', '"score"'),
            "grant[0].fields[1]: HouseholdStatus has no field 'score'",
        ),
        (
            HOUSEHOLD_GRANT.replace('"members.birth_date"', '"members.score"'),
            "grant[0].fields[1]: MemberStatus has no field 'score'",
        ),
        (
            HOUSEHOLD_GRANT.replace('"members.birth_date"', '"region.name"'),
            "grant[0].fields[1]: 'region' is not a message",
        ),
        (
            HOUSEHOLD_GRANT.replace('"members.birth_date"', '"members.relationship"'),
            "grant[0].fields[1]: 'members.relationship' listed twice",
        ),
        (
            HOUSEHOLD_GRANT.replace('"members.birth_date"', '"members"'),
            "grant[0].fields[1]: 'members' covers 'members.relationship'",
        ),
        (
            HOUSEHOLD_GRANT.replace('["members.relationship", ', '["members", '),
            "grant[0].fields[1]: 'members.birth_date' is already covered by 'members'",
        ),
        (
            GRANT + GRANT.replace('["AMO_ENROLMENT"]', '["RECERT", "AMO_ENROLMENT"]'),
            "grant[1].purposes[1]: CNSS already has a grant for VerifyEligibility with "
            "purpose AMO_ENROLMENT (grant[0])",
        ),
        ("grant = 1", "grant: must be an array of tables"),
        ("[roles]\nauditor = ['CNDP']\n" + GRANT, "roles.auditor: unknown role"),
        ("[roles]\nregulator = 'CNDP'\n" + GRANT, "roles.regulator: must be a list"),
        ("[roles]\nregulator = ['cndp']\n" + GRANT, "roles.regulator[0]: 'cndp'"),
        ("[roles]\ndpo = ['MS', 'MS']\n" + GRANT, "roles.dpo[1]: MS listed twice"),
        ("roles = 3\n" + GRANT, "roles: must be a table"),
    ],
)
def test_an_invalid_policy_is_refused_naming_file_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse(text, "policy.toml")
    assert str(err.value).startswith("policy.toml: ")
    assert message in str(err.value)


def test_every_method_a_grant_can_name_discloses_a_message() -> None:
    assert set(METHODS) == {
        "GetPersonStatus",
        "GetHouseholdStatus",
        "VerifyEligibility",
        "VerifyEligibilityBatch",
        "GrantConsent",
        "RevokeConsent",
        "GetConsent",
        "ListConsents",
        "CheckConsent",
        "QueryAccess",
        "VerifyIntegrity",
        "GetCheckpoint",
        "AccessReport",
        "OpenCase",
        "ListCases",
        "GetCase",
        "AnswerCase",
        "AcceptCase",
        "EscalateCase",
        "WithdrawCase",
        "DecideCase",
        "CreateSubscription",
        "Subscribe",
        "Acknowledge",
        "GetDigest",
        "GetSubscription",
        "CancelSubscription",
        "ListPublications",
        "GetPublication",
    }
    assert METHODS["OpenCase"].path == "/jisr.v1.ContestCases/OpenCase"
    assert METHODS["VerifyEligibilityBatch"].disclosed is pb.EligibilityDecision.DESCRIPTOR
    assert METHODS["GetPersonStatus"].path == "/jisr.v1.RegistryExchange/GetPersonStatus"


# -- files ----------------------------------------------------------------------------


def test_load_reads_a_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GRANT, encoding="utf-8")
    assert load(path).authorize("CNSS", "VerifyEligibility", "AMO_ENROLMENT") is not None


def test_load_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(PolicyError, match=r"absent\.toml: cannot read"):
        load(missing)


def household_paths(tree: FieldTree) -> set[str]:
    """The HouseholdStatus leaf paths a tree discloses."""
    granted = to_paths(tree)
    return {
        path
        for path in all_paths(pb.HouseholdStatus.DESCRIPTOR)
        if any(path == g or path.startswith(g + ".") for g in granted)
    }


def _documented_rows() -> list[list[str]]:
    """The rows of docs/policy.md's table of the shipped policy."""
    text = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    table = text.split("| institution | method | purposes | basis | fields |")[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _methods(cell: str) -> list[str]:
    names = [name.strip() for name in cell.split(",")]
    return [f"{names[0]}Batch" if n == "…Batch" else n for n in names]


def test_the_documented_table_of_the_shipped_policy_names_its_exact_fields(
    shipped: Policy,
) -> None:
    checked = 0
    for institution, methods, purposes, _, fields in _documented_rows():
        if not fields.startswith("`"):
            continue  # described in words ("decision without `score_band`")
        listed = {field.strip().strip("`") for field in fields.split(",")}
        for method in _methods(methods):
            for purpose in [p.strip() for p in purposes.split(",")]:
                grant = shipped.authorize(institution, method, purpose)
                assert grant is not None, (institution, method, purpose)
                assert set(grant.paths) == listed, (institution, method, purpose)
                checked += 1
    assert checked >= 4


def test_every_registry_exchange_grant_of_the_shipped_policy_is_in_the_documented_table(
    shipped: Policy,
) -> None:
    documented = {
        (institution, method, purpose.strip())
        for institution, methods, purposes, _, _ in _documented_rows()
        for method in _methods(methods)
        for purpose in purposes.split(",")
    }
    exchange = ("GetPersonStatus", "GetHouseholdStatus", "VerifyEligibility")
    for institution in ("CNSS", "ANSS", "MEN", "MS"):
        for purpose in shipped.purposes_of(institution):
            for method in (*exchange, "VerifyEligibilityBatch"):
                if shipped.authorize(institution, method, purpose) is not None:
                    assert (institution, method, purpose) in documented


def test_a_subscribe_grant_names_the_event_types_it_allows() -> None:
    grant = load_default().authorize("CNSS", "Subscribe", "AMO_ENROLMENT")
    assert grant is not None
    assert "coverage.started" in grant.events
    assert "household.region_changed" not in grant.events


def test_a_subscribe_grant_without_events_is_refused_naming_the_field() -> None:
    text = """
[[grant]]
institution = "CNSS"
method = "Subscribe"
purposes = ["AMO_ENROLMENT"]
basis = "a statute"
fields = ["event_id"]
"""
    with pytest.raises(PolicyError, match=r"grant\[0\]\.events: must be a non-empty list"):
        parse(text, "p.toml")


def test_an_unknown_event_type_is_refused_naming_the_known_ones() -> None:
    text = """
[[grant]]
institution = "CNSS"
method = "Subscribe"
purposes = ["AMO_ENROLMENT"]
basis = "a statute"
fields = ["event_id"]
events = ["person.resurrected"]
"""
    with pytest.raises(PolicyError, match=r"events\[0\]: 'person.resurrected' .*person\.died"):
        parse(text, "p.toml")


def test_events_on_another_method_are_refused() -> None:
    text = """
[[grant]]
institution = "CNSS"
method = "GetPersonStatus"
purposes = ["AMO_ENROLMENT"]
basis = "a statute"
fields = ["vital_status"]
events = ["person.died"]
"""
    with pytest.raises(PolicyError, match=r"grant\[0\]\.events: only a Subscribe grant"):
        parse(text, "p.toml")
