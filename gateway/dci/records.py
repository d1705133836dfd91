"""A registry answer as DCI social-registry records (docs/dci.md, "Records").

The standard names its records (Group, Member) only by example; Jisr maps the fields of
its own answers onto those names where one exists and keeps its own where none does. The
mapping is applied to the answer *after* the grant's minimisation: a field the grant did
not disclose is unset in the message, so it is absent from the record too, never filled.
"""

from __future__ import annotations

from typing import Any

from gateway.pb.jisr.v1 import records_pb2 as rpb
from gateway.pb.jisr.v1 import registry_pb2 as pb

PERSON_ID = "IDCS"
HOUSEHOLD_ID = "HOUSEHOLD_ID"


def _enum(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _date(message: Any, name: str) -> str | None:
    if not message.HasField(name):
        return None
    d = getattr(message, name)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _identifier(kind: str, value: str) -> list[dict[str, str]]:
    return [{"identifier_type": kind, "identifier_value": value}] if value else []


def _pruned(record: dict[str, Any]) -> dict[str, Any]:
    """Without the members the answer did not hold (unset, empty)."""
    return {k: v for k, v in record.items() if v not in (None, "", [], {})}


def member(m: pb.MemberStatus) -> dict[str, Any]:
    return _pruned(
        {
            "@type": "Member",
            "member_identifier": _identifier(PERSON_ID, m.idcs),
            "relationship_head": _enum(rpb.Relationship, m.relationship, "RELATIONSHIP_")
            if m.relationship
            else None,
            "demographic_info": _pruned({"birth_date": _date(m, "birth_date")}),
            "vital_status": _enum(rpb.VitalStatus, m.vital_status, "VITAL_STATUS_")
            if m.vital_status
            else None,
        }
    )


def group(h: pb.HouseholdStatus) -> dict[str, Any]:
    """A household as a DCI Group: its members, place, score band and enrolments."""
    place = _pruned(
        {
            "region": _enum(rpb.Region, h.region, "REGION_") if h.region else None,
            "area": _enum(rpb.Area, h.area, "AREA_") if h.area else None,
        }
    )
    return _pruned(
        {
            "@type": "Group",
            "group_identifier": _identifier(HOUSEHOLD_ID, h.household_id),
            "group_size": len(h.members) or None,
            "member_list": [member(m) for m in h.members],
            "place": place,
            "poverty_score_type": "RSU_SCORE_BAND" if h.score_band else None,
            "poverty_score_band": h.score_band,
            "registration_date": _date(h, "registered_on"),
            "last_scored": _date(h, "scored_on"),
            "programme_enrolments": [
                _pruned({"programme": e.programme, "since": _date(e, "since")})
                for e in h.enrolments
            ],
        }
    )


def person(p: pb.PersonStatus) -> dict[str, Any]:
    """A person as a DCI Member of their household (or of none)."""
    return _pruned(
        {
            "@type": "Member",
            "member_identifier": _identifier(PERSON_ID, p.idcs),
            "group_identifier": _identifier(HOUSEHOLD_ID, p.household_id),
            "relationship_head": _enum(rpb.Relationship, p.relationship, "RELATIONSHIP_")
            if p.relationship
            else None,
            "demographic_info": _pruned(
                {
                    "birth_date": _date(p, "birth_date"),
                    "death_date": _date(p, "death_date"),
                    "marital_status": _enum(rpb.CivilStatus, p.civil_status, "CIVIL_STATUS_")
                    if p.civil_status
                    else None,
                }
            ),
            "vital_status": _enum(rpb.VitalStatus, p.vital_status, "VITAL_STATUS_")
            if p.vital_status
            else None,
        }
    )
