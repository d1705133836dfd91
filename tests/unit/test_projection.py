"""Field-level minimisation: only the allowed fields leave, and the withheld ones are named."""

from __future__ import annotations

import math

import pytest
from google.protobuf.struct_pb2 import Struct
from google.type.date_pb2 import Date

from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.security.projection import (
    FieldTree,
    all_paths,
    field_tree,
    intersect,
    minimise,
    path_error,
    project,
    to_paths,
    validate_paths,
)

ALIVE = rec.VitalStatus.VITAL_STATUS_ALIVE
CHILD = rec.Relationship.RELATIONSHIP_CHILD
SPOUSE = rec.Relationship.RELATIONSHIP_SPOUSE


def household(*, birth_dates: bool = True) -> pb.HouseholdStatus:
    """A household with every field set (member birth dates optional)."""
    status = pb.HouseholdStatus(
        household_id="H000000017",
        region=rec.Region.REGION_SOUSS_MASSA,
        area=rec.Area.AREA_RURAL,
        score_band="S2",
        registered_on=Date(year=2022, month=3, day=1),
        scored_on=Date(year=2024, month=5, day=2),
        enrolments=[rec.ProgrammeEnrolment(programme="ASD", since=Date(year=2024, month=1))],
    )
    for idcs, relationship, year in (("1000000017", SPOUSE, 1980), ("1000000025", CHILD, 2015)):
        member = status.members.add(idcs=idcs, relationship=relationship, vital_status=ALIVE)
        if birth_dates:
            member.birth_date.CopyFrom(Date(year=year, month=6, day=1))
    return status


def decision() -> pb.EligibilityDecision:
    return pb.EligibilityDecision(
        programme="AMOT",
        eligible=True,
        reasons=[pb.REASON_CODE_SCORE_BELOW_THRESHOLD],
        threshold_version="AMOT-2022",
        legal_reference="ref",
        as_of=Date(year=2025, month=1, day=2),
        score_band="S1",
    )


# -- projecting -----------------------------------------------------------------------


def test_top_level_fields_outside_the_tree_are_dropped_and_listed_as_withheld() -> None:
    out, withheld = project(decision(), field_tree(["programme", "eligible", "reasons"]))
    assert out == pb.EligibilityDecision(
        programme="AMOT", eligible=True, reasons=[pb.REASON_CODE_SCORE_BELOW_THRESHOLD]
    )
    assert withheld == ["as_of", "legal_reference", "score_band", "threshold_version"]


def test_a_path_into_a_repeated_message_keeps_that_field_of_every_element() -> None:
    out, _ = project(household(), field_tree(["members.relationship"]))
    assert [m.relationship for m in out.members] == [SPOUSE, CHILD]
    assert all(m.idcs == "" and not m.HasField("birth_date") for m in out.members)


def test_fields_of_repeated_elements_are_withheld_by_their_dotted_path() -> None:
    _, withheld = project(household(), field_tree(["members.relationship"]))
    assert {"members.idcs", "members.birth_date", "members.vital_status"} <= set(withheld)
    assert "members" not in withheld


def test_an_element_field_set_in_no_element_is_not_listed_as_withheld() -> None:
    _, withheld = project(household(birth_dates=False), field_tree(["members.relationship"]))
    assert "members.birth_date" not in withheld
    assert "members.idcs" in withheld


def test_a_path_naming_a_message_field_discloses_its_whole_subtree() -> None:
    out, withheld = project(household(), field_tree(["enrolments"]))
    assert list(out.enrolments) == list(household().enrolments)
    assert not any(path.startswith("enrolments") for path in withheld)


def test_a_path_into_a_singular_message_keeps_only_that_subfield() -> None:
    out, withheld = project(decision(), field_tree(["as_of.year"]))
    assert out.as_of == Date(year=2025)
    assert {"as_of.month", "as_of.day"} <= set(withheld)


def test_a_singular_message_left_with_nothing_disclosed_is_not_present() -> None:
    out, withheld = project(pb.EligibilityDecision(as_of=Date(month=1)), field_tree(["as_of.year"]))
    assert not out.HasField("as_of")
    assert withheld == ["as_of.month"]


def test_an_empty_tree_withholds_every_set_field() -> None:
    out, withheld = project(household(), {})
    assert out == pb.HouseholdStatus()
    assert withheld == sorted(field.name for field in pb.HouseholdStatus.DESCRIPTOR.fields)


def test_unset_fields_are_not_listed_as_withheld() -> None:
    _, withheld = project(pb.PersonStatus(idcs="1000000017", vital_status=ALIVE), {})
    assert withheld == ["idcs", "vital_status"]


def test_a_fully_allowed_message_is_an_equal_copy_with_nothing_withheld() -> None:
    message = household()
    out, withheld = project(message, field_tree(all_paths(pb.HouseholdStatus.DESCRIPTOR)))
    assert out == message
    assert out is not message
    assert withheld == []


def test_the_input_message_is_not_modified() -> None:
    message = household()
    project(message, field_tree(["members.relationship", "region"]))
    assert message == household()


@pytest.mark.parametrize(
    "paths",
    [[], ["region"], ["members.relationship", "region"], ["members"], ["score_band", "enrolments"]],
)
def test_minimising_in_place_leaves_what_projecting_answers(paths: list[str]) -> None:
    tree = field_tree(paths)
    message = household()
    withheld = minimise(message, tree)
    assert (message, withheld) == project(household(), tree)


def test_minimising_under_a_grant_of_every_field_changes_nothing() -> None:
    message = household()
    assert minimise(message, field_tree(all_paths(pb.HouseholdStatus.DESCRIPTOR))) == []
    assert message == household()


def test_the_withheld_list_is_sorted_and_free_of_duplicates() -> None:
    _, withheld = project(household(), field_tree(["members.relationship"]))
    assert withheld == sorted(set(withheld))
    assert withheld.count("members.idcs") == 1


def test_a_plain_dict_works_as_a_tree() -> None:
    out, _ = project(household(), {"members": {"idcs": {}}})
    assert [m.idcs for m in out.members] == ["1000000017", "1000000025"]


def test_a_oneof_member_not_allowed_is_withheld() -> None:
    out, withheld = project(pb.Subject(idcs="1000000017"), field_tree(["household_id"]))
    assert out.WhichOneof("subject") is None
    assert withheld == ["idcs"]


def test_a_map_field_is_disclosed_or_withheld_whole() -> None:
    message = Struct()
    message.update({"a": 1})
    assert project(message, field_tree(["fields"]))[0] == message
    assert project(message, {}) == (Struct(), ["fields"])


def test_unknown_fields_of_the_input_are_never_copied() -> None:
    message = pb.PersonStatus()
    message.ParseFromString(pb.PersonStatus(idcs="1").SerializeToString() + b"\xf8\x06\x01")
    out, _ = project(message, field_tree(["idcs"]))
    assert out.SerializeToString() == pb.PersonStatus(idcs="1").SerializeToString()


def test_a_negative_zero_double_is_not_disclosed() -> None:
    out, _ = project(rec.HouseholdRecord(household_id="H1", score=-0.0), field_tree(["area"]))
    assert math.copysign(1.0, out.score) == 1.0
    assert out.SerializeToString() == b""


def test_a_tree_naming_a_missing_field_is_refused() -> None:
    with pytest.raises(ValueError, match="PersonStatus has no field 'score'"):
        project(pb.PersonStatus(), field_tree(["score"]))


# -- trees and paths ------------------------------------------------------------------


def test_a_path_absorbs_the_paths_below_it_in_either_order() -> None:
    expected: FieldTree = {"members": {}}
    assert field_tree(["members.idcs", "members"]) == expected
    assert field_tree(["members", "members.idcs"]) == expected


def test_field_tree_and_to_paths_are_inverse() -> None:
    paths = ["area", "members.birth_date", "members.relationship"]
    assert to_paths(field_tree(paths)) == paths


def test_equal_trees_are_equal_and_hash_alike() -> None:
    a = field_tree(["members.idcs", "region"])
    b = field_tree(["region", "members.idcs"])
    assert a == b
    assert hash(a) == hash(b)


def test_intersect_keeps_fields_in_both_trees_at_the_narrower_depth() -> None:
    granted = field_tree(["members.relationship", "members.birth_date", "region", "enrolments"])
    asked = field_tree(["members", "enrolments.programme", "score_band"])
    assert to_paths(intersect(granted, asked)) == [
        "enrolments.programme",
        "members.birth_date",
        "members.relationship",
    ]


def test_validate_paths_returns_exactly_the_bad_paths() -> None:
    paths = ["members.relationship", "score", "members.score", "region.code", "", "enrolments"]
    assert validate_paths(pb.HouseholdStatus.DESCRIPTOR, paths) == [
        "score",
        "members.score",
        "region.code",
        "",
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("score", "HouseholdStatus has no field 'score'"),
        ("members.score", "MemberStatus has no field 'score'"),
        ("region.code", "'region' is not a message"),
        ("members..idcs", "MemberStatus has no field ''"),
    ],
)
def test_path_error_says_which_message_lacks_which_field(path: str, message: str) -> None:
    assert message in str(path_error(pb.HouseholdStatus.DESCRIPTOR, path))


def test_path_error_is_none_for_a_valid_path() -> None:
    assert path_error(pb.HouseholdStatus.DESCRIPTOR, "members.birth_date.year") is None


def test_a_path_cannot_enter_a_map() -> None:
    assert path_error(Struct.DESCRIPTOR, "fields.key") is not None


def test_all_paths_walks_own_messages_and_stops_at_foreign_ones() -> None:
    paths = all_paths(pb.HouseholdStatus.DESCRIPTOR)
    assert "members.idcs" in paths
    assert "enrolments.since" in paths
    assert "registered_on" in paths
    assert "members" not in paths
    assert not any(path.startswith("registered_on.") for path in paths)
