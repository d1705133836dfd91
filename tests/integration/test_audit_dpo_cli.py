"""A DPO's search and a citizen's access report from the command line (issue 14, point 1):
`jisr audit query` and `jisr audit report` against the session's gateway process, with
the caller's credentials, and the SDK's Trail underneath."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.trail import AccessQuery, Trail
from tests.support import processes, registry_rows

# Households no other test of the session looks at.
_offsets = itertools.count(5000)


def jisr(pki_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "--pki-dir", str(pki_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def person(registry_dir: Path) -> tuple[str, str]:
    """(IDCS, household id) of a member of a household no other test reads."""
    with registry_rows.connect(registry_dir) as db:
        idcs, hid = db.execute(
            "SELECT idcs, household_id FROM membership ORDER BY idcs LIMIT 1 OFFSET ?",
            (next(_offsets),),
        ).fetchone()
    return str(idcs), str(hid)


@pytest.fixture
def looked_at(gateway: processes.Proc, pki_dir: Path, person: tuple[str, str]) -> tuple[str, str]:
    """CNSS reads the person once, then asks for a purpose it holds no grant for."""
    idcs, _ = person
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS"), timeout=30) as cnss:
        cnss.person_status("AMO_ENROLMENT", idcs)
        with pytest.raises(JisrError):
            cnss.person_status("SCHOOL_SUPPORT", idcs)
    return person


def _target(gateway: processes.Proc) -> list[str]:
    return ["--target", gateway.target]


def test_a_dpo_lists_its_institutions_accesses_to_a_person_newest_first(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    idcs, _ = looked_at
    done = jisr(pki_dir, "query", *_target(gateway), "--institution", "CNSS", "--subject", idcs)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert "deny PURPOSE_NOT_ALLOWED" in lines[0]
    assert " permit " in lines[1]
    assert all("CNSS" in line and "GetPersonStatus" in line for line in lines)
    assert idcs not in done.stdout
    assert done.stderr.strip() == "jisr audit query: 2 records"


def test_records_are_printed_as_json_lines_with_subject_hashes_only(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    idcs, _ = looked_at
    done = jisr(
        pki_dir, "query", *_target(gateway), "--institution", "CNSS", "--subject", idcs, "--json"
    )
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["decision"] for r in records] == ["deny", "permit"]
    assert {r["requester"] for r in records} == {"CNSS"}
    assert all(r["subject_hashes"] and r["record_id"] for r in records)
    assert idcs not in done.stdout


def test_filters_by_decision_reason_and_bare_method_name(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    idcs, _ = looked_at
    common = [*_target(gateway), "--institution", "CNSS", "--subject", idcs, "--json"]
    denied = jisr(
        pki_dir, "query", *common, "--decision", "deny", "--reason", "PURPOSE_NOT_ALLOWED"
    )
    assert [json.loads(x)["reason"] for x in denied.stdout.splitlines()] == ["PURPOSE_NOT_ALLOWED"]
    by_method = jisr(pki_dir, "query", *common, "--method", "GetPersonStatus")
    methods = {json.loads(x)["method"] for x in by_method.stdout.splitlines()}
    assert methods == {"/jisr.v1.RegistryExchange/GetPersonStatus"}
    other = jisr(pki_dir, "query", *common, "--method", "GetHouseholdStatus")
    assert (other.returncode, other.stdout) == (0, "")


def test_a_dpo_asking_for_another_institutions_requests_is_refused(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    done = jisr(pki_dir, "query", *_target(gateway), "--institution", "CNSS", "--requester", "ANSS")
    assert done.returncode == 1
    assert "PERMISSION_DENIED NOT_AN_AUDITOR" in done.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--subject", "12"], "--subject: not an IDCS"),
        (["--reason", "NOPE"], "--reason: 'NOPE' is not a reason"),
        (["--method", "Nope"], "--method: no Jisr service has a method 'Nope'"),
        (["--since", "yesterday"], "--since: 'yesterday' is not YYYY-MM-DD"),
        (["--since", "2026-12-05", "--until", "2026-12-01"], "--until: must be after --since"),
        (["--limit", "0"], "--limit: 0 is not a positive number"),
    ],
    ids=["subject", "reason", "method", "date", "range", "limit"],
)
def test_a_bad_filter_names_itself_and_asks_nothing(
    gateway: processes.Proc, pki_dir: Path, flags: list[str], named: str
) -> None:
    done = jisr(pki_dir, "query", *_target(gateway), "--institution", "CNSS", *flags)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"jisr audit query: {named}")
    assert "Traceback" not in done.stderr


def test_unknown_credentials_are_named(gateway: processes.Proc, pki_dir: Path) -> None:
    done = jisr(pki_dir, "query", *_target(gateway), "--institution", "NOBODY")
    assert done.returncode == 2
    assert done.stderr.startswith(f"jisr audit query: credentials of NOBODY in {pki_dir}")


def test_the_regulator_reads_a_persons_access_report(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    idcs, _ = looked_at
    done = jisr(pki_dir, "report", idcs, *_target(gateway), "--json")
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["institution"], e["decision"]) for e in entries] == [
        ("CNSS", "deny"),
        ("CNSS", "permit"),
    ]
    assert entries[1]["purpose"] == "AMO_ENROLMENT"


def test_a_dpo_may_not_ask_a_citizens_access_report(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    idcs, _ = looked_at
    done = jisr(pki_dir, "report", idcs, *_target(gateway), "--institution", "CNSS")
    assert done.returncode == 1
    assert "PURPOSE_NOT_ALLOWED" in done.stderr


# -- the SDK underneath ------------------------------------------------------------------------


def test_the_sdk_follows_pages_up_to_its_limit(
    gateway: processes.Proc, pki_dir: Path, looked_at: tuple[str, str]
) -> None:
    """Each query is recorded too (naming the subject), so these ask for the exchanges."""
    idcs, _ = looked_at
    exchanges = AccessQuery(who=idcs, method="/jisr.v1.RegistryExchange/GetPersonStatus")
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS"), timeout=30) as cnss:
        trail = Trail(cnss)
        both = list(trail.query(exchanges, page_size=1))
        one = list(trail.query(exchanges, limit=1, page_size=1))
    assert [r.decision for r in both] == ["deny", "permit"]
    assert [r.record_id for r in one] == [both[0].record_id]


def test_the_gateway_refuses_a_reason_filter_that_is_no_reason(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    credentials = Credentials.from_pki(pki_dir, "CNSS")
    with (
        JisrClient(gateway.target, credentials, timeout=30) as cnss,
        pytest.raises(JisrError) as refused,
    ):
        list(Trail(cnss).query(AccessQuery(reason="NOPE")))
    assert (refused.value.reason, refused.value.metadata) == ("INVALID_REASON", {"field": "reason"})


def test_a_batch_part_is_found_by_any_of_its_items_reasons(
    gateway: processes.Proc, pki_dir: Path, person: tuple[str, str]
) -> None:
    """A batch part's reason lists its items' failures: each one finds it."""
    idcs, _ = person
    unknown = "H999999998"
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS"), timeout=30) as cnss:
        list(cnss.verify_batches("AMO_ENROLMENT", "AMOT", [[idcs, "12", unknown]]))
        trail = Trail(cnss)
        parts = [
            list(trail.query(AccessQuery(who=unknown, reason=reason)))
            for reason in ("INVALID_IDCS", "SUBJECT_NOT_FOUND")
        ]
    assert [len(found) for found in parts] == [1, 1]
    assert parts[0][0].reason == "INVALID_IDCS,SUBJECT_NOT_FOUND"
