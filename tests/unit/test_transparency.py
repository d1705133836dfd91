"""The transparency indicators (docs/transparency.md): counts that agree with an
independent recount, disclosure control that an attacker cannot undo, and a signed
publication that any change breaks."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from consent.model import ConsentRecord, Status, SubjectKind
from gateway.audit.record import AuditRecord
from gateway.contests.cases import CaseEvent
from gateway.pipeline import programmes
from gateway.transparency import disclosure, indicators, publication
from gateway.transparency.indicators import Counts, Durations
from gateway.transparency.publication import Method
from gateway.transparency.sources import month_of

NOVEMBER = month_of("2026-11")
CATALOGUE = programmes.load_default()
DAY = indicators.DAY_US
K = 10


def _counts(rows: dict[tuple[str, ...], int]) -> Counts:
    return Counts("t", "a table", ("institution",), rows)


# -- the month -------------------------------------------------------------------------


def test_a_month_is_its_calendar_days_in_utc() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1_000_000
    end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp() * 1_000_000
    assert (NOVEMBER.start_us, NOVEMBER.end_us) == (start, end)
    assert month_of("2026-12").end_us == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6


@pytest.mark.parametrize("text", ["2026-13", "11/2026", "2026-1-1", "2026-1", "2026-00", ""])
def test_a_month_that_is_not_yyyy_mm_is_refused_naming_the_format(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_of(text)


# -- disclosure control ------------------------------------------------------------------


def test_a_count_below_the_threshold_is_suppressed() -> None:
    table = disclosure.protect(_counts({("A",): 3, ("B",): 40, ("C",): 12}), K)
    assert {c.key[0]: c.value for c in table.cells} == {"A": None, "B": 40, "C": 12}


def test_one_suppressed_cell_suppresses_the_total_too() -> None:
    table = disclosure.protect(_counts({("A",): 3, ("B",): 40}), K)
    assert table.total is None


def test_suppressed_cells_summing_below_the_threshold_suppress_the_total() -> None:
    table = disclosure.protect(_counts({("A",): 1, ("B",): 2, ("C",): 40}), K)
    assert table.total is None


def test_suppressed_cells_summing_to_the_threshold_leave_the_total() -> None:
    table = disclosure.protect(_counts({("A",): 4, ("B",): 6, ("C",): 40}), K)
    assert table.total == 50


def test_a_total_below_the_threshold_is_suppressed() -> None:
    assert disclosure.protect(_counts({("A",): 4}), K).total is None


def test_a_table_with_nothing_suppressed_publishes_its_total() -> None:
    assert disclosure.protect(_counts({("A",): 10, ("B",): 11}), K).total == 21


@pytest.mark.parametrize("threshold", [0, 1, 2])
def test_a_threshold_that_protects_nobody_is_refused(threshold: int) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        disclosure.protect(_counts({("A",): 4}), threshold)


def test_a_median_of_a_small_group_is_suppressed() -> None:
    durations = Durations("d", "days", ("institution",), {("A",): [1.0, 2.0], ("B",): [3.0] * K})
    groups = {g.key[0]: g for g in disclosure.protect_durations(durations, K).groups}
    assert (groups["A"].count, groups["A"].median_days) == (None, None)
    assert (groups["B"].count, groups["B"].median_days) == (K, 3.0)


def _derivable(table: disclosure.Table) -> list[tuple[str, ...]]:
    """What an attacker recovers from cells and total: a suppressed cell is known when it
    is the only one and the total is published, and each is bounded to a handful when the
    suppressed cells' sum (total minus the published cells) is below the threshold."""
    hidden = [c for c in table.cells if c.value is None]
    if table.total is None or not hidden:
        return []
    rest = table.total - sum(c.value or 0 for c in table.cells)
    if len(hidden) == 1 or rest < K:
        return [c.key for c in hidden]
    return []


def test_a_planted_household_cannot_be_found_in_the_published_tables() -> None:
    """One household contested its proposed action at the CNDP-escalated stage in a month
    where every other institution's figures are large; the attacker knows everyone else's
    exact counts and the published table, and tries to recover the planted one's."""
    rng = random.Random(7)
    for _ in range(200):
        rows: dict[tuple[str, ...], int] = {
            (f"I{i}",): rng.randint(K, 500) for i in range(rng.randint(1, 6))
        }
        rows |= {(f"S{i}",): rng.randint(1, K - 1) for i in range(rng.randint(0, 3))}
        planted = ("PLANTED",)
        rows[planted] = 1
        table = disclosure.protect(_counts(rows), K)
        published = {c.key: c.value for c in table.cells}
        assert published[planted] is None
        assert _derivable(table) == []


# -- the counts against an independent recount -------------------------------------------


def _record(rng: random.Random, seq: int) -> AuditRecord:
    return AuditRecord(
        node="n1",
        seq=seq,
        at_us=rng.randint(NOVEMBER.start_us - 5 * DAY, NOVEMBER.end_us + 5 * DAY),
        trace_id="",
        requester=rng.choice(["ANSS", "CNSS", "MEN"]),
        requester_sub="s",
        method=rng.choice(
            [
                "/jisr.v1.RegistryExchange/VerifyEligibility",
                "/jisr.v1.RegistryExchange/GetPersonStatus",
                "/jisr.v1.DueProcess/ProposeAction",
            ]
        ),
        purpose=rng.choice(["ASD_ELIGIBILITY", "AMO_ENROLMENT"]),
        basis="",
        subjects=(),
        fields=(),
        decision=rng.choice(["permit", "deny"]),
        reason=rng.choice(["", "PURPOSE_NOT_ALLOWED"]),
        rh="",
        sh="",
        jti="",
        part=rng.choice([0, 0, 0, 1, 2]),
        latency_us=1,
    )


def test_exchanges_agree_with_an_independent_recount() -> None:
    rng = random.Random(11)
    records = [_record(rng, i) for i in range(1, 3_000)]
    counted = indicators.exchanges(records, NOVEMBER).rows
    recount: dict[tuple[str, ...], int] = {}
    for r in records:
        in_month = NOVEMBER.start_us <= r.at_us < NOVEMBER.end_us
        if in_month and r.part == 0 and "DueProcess" not in r.method:
            key = (r.requester, r.purpose, r.method.split("/")[-1], r.decision, r.reason)
            recount[key] = recount.get(key, 0) + 1
    assert counted == recount
    assert sum(counted.values()) > 100


def _step(at_us: int, action: str) -> CaseEvent:
    return CaseEvent("case-1", 2, at_us, "dpo", "ANSS", "o1", action, "open", "answered", "")


def test_answer_days_count_answers_given_in_the_month_from_the_opening() -> None:
    opened = NOVEMBER.start_us - 3 * DAY
    steps = [
        ("ANSS", _step(NOVEMBER.start_us + 2 * DAY, "answer"), opened),
        ("ANSS", _step(NOVEMBER.start_us + 2 * DAY, "escalate"), opened),
        ("ANSS", _step(NOVEMBER.end_us + DAY, "answer"), opened),
    ]
    assert indicators.answer_days(steps, NOVEMBER).values == {("ANSS",): [5.0]}


# -- the publication -------------------------------------------------------------------


def _key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, object]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return key, {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}


def _publish(folder: Path, rows: dict[tuple[str, ...], int]) -> dict[str, object]:
    key, jwks = _key()
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    tables = [disclosure.protect(_counts(rows), K)]
    files = publication.contents("2026-11", now, Method(K), tables, [])
    publication.write(folder, "2026-11", files, key=key, kid="k1", now=now)
    return jwks


def test_a_publication_verifies_against_the_gateways_keys(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {("A",): 12, ("B",): 3})
    assert publication.verify(tmp_path / "p", jwks) == []
    document = json.loads((tmp_path / "p" / "indicators.json").read_text())
    assert document["method"]["threshold"] == K
    assert document["tables"][0]["cells"][1] == {
        "key": {"institution": "B"},
        "count": None,
        "suppressed": True,
    }


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {("A",): 12})
    csv = tmp_path / "p" / "t.csv"
    csv.write_text(csv.read_text().replace("12", "13"))
    assert publication.verify(tmp_path / "p", jwks) == ["t.csv: changed since it was signed"]


def test_an_added_or_removed_file_is_named(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {("A",): 12})
    (tmp_path / "p" / "extra.csv").write_text("x\n")
    (tmp_path / "p" / "t.csv").unlink()
    assert publication.verify(tmp_path / "p", jwks) == [
        "t.csv: missing",
        "extra.csv: not signed (added)",
    ]


def test_a_publication_signed_by_another_key_does_not_verify(tmp_path: Path) -> None:
    _publish(tmp_path / "p", {("A",): 12})
    _, other = _key()
    assert publication.verify(tmp_path / "p", other) == [
        "manifest.jws: the signature does not verify"
    ]


def test_an_empty_month_is_a_signed_publication_saying_so(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {})
    assert publication.verify(tmp_path / "p", jwks) == []
    document = json.loads((tmp_path / "p" / "indicators.json").read_text())
    assert document["note"] == "no data for this month"
    assert (tmp_path / "p" / "t.csv").read_text().splitlines() == [
        "institution,count,suppressed",
        "(total),0,no",
    ]


def test_every_table_counted_is_a_named_table() -> None:
    by_band, by_region = indicators.eligibility_snapshot([], CATALOGUE, dt.date(2026, 11, 30))
    counts = [
        indicators.exchanges([], NOVEMBER),
        indicators.lookups_by_region([], {}, NOVEMBER),
        indicators.consents([], [], NOVEMBER),
        indicators.contest_steps([], NOVEMBER),
        indicators.due_process([], NOVEMBER),
        indicators.steps_by_region([], [], [], {}, NOVEMBER),
        by_band,
        by_region,
    ]
    durations = [
        indicators.answer_days([], NOVEMBER),
        indicators.death_to_end_days([], NOVEMBER),
    ]
    names = [c.name for c in counts] + [d.name for d in durations]
    assert tuple(names) == indicators.TABLES


def _consent(revision: int, recorded_s: int, status: Status, valid_until_s: int) -> ConsentRecord:
    return ConsentRecord(
        consent_id="c-1",
        revision=revision,
        subject_kind=SubjectKind.HOUSEHOLD,
        subject="H000000001",
        grantor="AB123456",
        grantee="MEN",
        purposes=("SCHOOL_SUPPORT",),
        scopes=("composition",),
        valid_from=0,
        valid_until=valid_until_s,
        use_cap=None,
        status=status,
        collected_by="ANSS",
        collection_method="counter",
        artefact="x",
        recorded_at=recorded_s,
        prev_hash="",
    )


def test_consents_count_grants_revocations_and_expiries_in_the_month() -> None:
    start = NOVEMBER.start_us // 1_000_000
    later = start + 86_400
    revisions = [
        _consent(1, later, Status.ACTIVE, later + 10),
        _consent(2, later + 5, Status.REVOKED, later + 10),
        _consent(1, start - 1, Status.ACTIVE, later),  # granted the month before
    ]
    expiring = [_consent(1, start - 1, Status.ACTIVE, later)]
    rows = indicators.consents(revisions, expiring, NOVEMBER).rows
    assert rows == {
        ("MEN", "SCHOOL_SUPPORT", "granted"): 1,
        ("MEN", "SCHOOL_SUPPORT", "revoked"): 1,
        ("MEN", "SCHOOL_SUPPORT", "expired"): 1,
    }


def test_lookups_are_placed_in_their_households_region() -> None:
    rng = random.Random(3)
    records = [
        replace(
            _record(rng, i), at_us=NOVEMBER.start_us + i, subjects=(s,), method="/x/GetPersonStatus"
        )
        for i, s in enumerate(["h1", "h1", "p2", "unknown"], 1)
    ]
    where = {"h1": ("ORIENTAL", "RURAL"), "p2": ("SOUSS_MASSA", "URBAN")}
    rows = indicators.lookups_by_region(records, where, NOVEMBER).rows
    assert sum(rows.values()) == 3
    assert {k[:2] for k in rows} == {("ORIENTAL", "RURAL"), ("SOUSS_MASSA", "URBAN")}


def test_the_eligibility_snapshot_agrees_with_a_recount_from_the_thresholds() -> None:
    """The recount applies the published thresholds directly (ASD: score below 9.743001;
    AMO Tadamon: below 9.3264284 and no AMO scheme but AMO Tadamon's own)."""
    rng = random.Random(5)
    homes = [
        indicators.Household(
            rng.randint(1, 12),
            rng.randint(1, 2),
            round(rng.uniform(8.5, 11.0), 3),
            tuple(rng.sample(["AMO_SALARIES", "AMO_TADAMON", "AMO_TNS"], rng.randint(0, 2))),
        )
        for _ in range(2_000)
    ]
    by_band, _ = indicators.eligibility_snapshot(homes, CATALOGUE, dt.date(2026, 11, 30))
    counted: dict[tuple[str, str], int] = {}
    for (programme, _, outcome), n in by_band.rows.items():
        counted[(programme, outcome)] = counted.get((programme, outcome), 0) + n
    asd = sum(1 for h in homes if h.score < 9.743001)
    amot = sum(1 for h in homes if h.score < 9.3264284 and set(h.schemes) <= {"AMO_TADAMON"})
    assert counted[("ASD", "eligible")] == asd
    assert counted[("ASD", "not_eligible")] == len(homes) - asd
    assert counted[("AMOT", "eligible")] == amot


def test_steps_are_placed_in_the_region_of_the_household_concerned() -> None:
    start_s = NOVEMBER.start_us // 1_000_000
    granted = _consent(1, start_s + 10, Status.ACTIVE, start_s + 99_999)
    opened = replace(_step(NOVEMBER.start_us + DAY, "open"))
    where = {"h1": ("ORIENTAL", "RURAL"), "h2": ("SOUSS_MASSA", "URBAN")}
    rows = indicators.steps_by_region(
        [("h1", granted), ("nowhere", granted)], [("h2", opened)], [], where, NOVEMBER
    ).rows
    assert rows == {
        ("ORIENTAL", "RURAL", "consent", "granted"): 1,
        ("SOUSS_MASSA", "URBAN", "contest", "open"): 1,
    }


# -- attacks across tables (found by review) -------------------------------------------------


Group = tuple[str, ...]


def _known(table: disclosure.Table, dims: Group, sums: dict[Group, int]) -> list[tuple[Group, int]]:
    """What an attacker recovers knowing each group's sum (`sums`, from another table):
    the suppressed cells of a group where exactly one is suppressed."""
    at = [table.dimensions.index(d) for d in dims]
    found: list[tuple[Group, int]] = []
    for group, total in sums.items():
        members = [c for c in table.cells if tuple(c.key[i] for i in at) == group]
        hidden = [c for c in members if c.value is None]
        if len(hidden) == 1:
            found.append((hidden[0].key, total - sum(c.value or 0 for c in members)))
    return found


def test_a_household_in_a_region_is_not_recovered_from_the_programmes_table() -> None:
    """22 actions proposed: 11 ASD and 11 AMOT (published); by region 21 and 1."""
    by_region = Counts(
        "steps_by_region",
        "",
        ("region", "area", "kind", "step"),
        {
            ("CASABLANCA_SETTAT", "URBAN", "due_process", "proposed"): 21,
            ("DRAA_TAFILALET", "RURAL", "due_process", "proposed"): 1,
        },
        margins=(("kind", "step"),),
    )
    table = disclosure.protect(by_region, K)
    assert _known(table, ("kind", "step"), {("due_process", "proposed"): 22}) == []
    assert all(c.value is None for c in table.cells)


def test_every_programme_judging_the_same_households_gives_nothing_away() -> None:
    """11 households in a region: AMOT 11 not eligible; ASD 10 eligible and 1 not."""
    snapshot = Counts(
        "eligibility_by_region",
        "",
        ("programme", "region", "area", "decision"),
        {
            ("AMOT", "DRAA_TAFILALET", "RURAL", "not_eligible"): 11,
            ("ASD", "DRAA_TAFILALET", "RURAL", "eligible"): 10,
            ("ASD", "DRAA_TAFILALET", "RURAL", "not_eligible"): 1,
        },
        margins=(("programme", "region", "area"), ("programme", "decision")),
    )
    table = disclosure.protect(snapshot, K)
    households: dict[Group, int] = {("ASD", "DRAA_TAFILALET", "RURAL"): 11}  # AMOT's cell
    assert _known(table, ("programme", "region", "area"), households) == []


def test_one_household_looked_up_ten_times_is_one_household() -> None:
    lookups = Counts(
        "lookups_by_region",
        "",
        ("region", "area", "purpose", "decision"),
        {("ORIENTAL", "RURAL", "SCHOOL_SUPPORT", "permit"): 10},
        units={("ORIENTAL", "RURAL", "SCHOOL_SUPPORT", "permit"): 1},
    )
    assert [c.value for c in disclosure.protect(lookups, K).cells] == [None]


@pytest.mark.parametrize("seed", range(50))
def test_after_protection_no_margin_group_gives_a_cell_away(seed: int) -> None:
    rng = random.Random(seed)
    rows: dict[tuple[str, ...], int] = {
        (p, r, d): rng.choice([1, 2, 3, 5, 8, 12, 30, 200])
        for p in ("ASD", "AMOT")
        for r in ("R1", "R2", "R3")
        for d in ("eligible", "not_eligible")
        if rng.random() < 0.8
    }
    margins = (("programme", "region"), ("programme", "decision"), ("region", "decision"))
    dims_all = ("programme", "region", "decision")
    table = disclosure.protect(Counts("t", "", dims_all, rows, margins), K)
    for dims in margins:
        at = [dims_all.index(d) for d in dims]
        groups: dict[tuple[str, ...], list[disclosure.Cell]] = {}
        for cell in table.cells:
            groups.setdefault(tuple(cell.key[i] for i in at), []).append(cell)
        for members in groups.values():
            hidden = [rows[c.key] for c in members if c.value is None]
            shown = [c for c in members if c.value is not None]
            assert not hidden or not shown or (len(hidden) >= 2 and sum(hidden) >= K)


def test_a_publication_under_another_months_name_is_refused(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {("A",): 12})
    assert publication.verify(tmp_path / "p", jwks, "2026-12") == [
        "manifest.jws: is the publication of 2026-11, not of 2026-12"
    ]


def test_keys_that_are_not_a_jwks_are_a_problem_not_a_crash(tmp_path: Path) -> None:
    _publish(tmp_path / "p", {("A",): 12})
    bad: list[dict[str, object]] = [{"keys": []}, {}, {"keys": [{"kty": "RSA", "kid": "k1"}]}]
    for keys in bad:
        (problem,) = publication.verify(tmp_path / "p", keys)
        assert problem.startswith("manifest.jws: ")


def test_a_symlink_in_place_of_a_signed_file_is_missing(tmp_path: Path) -> None:
    jwks = _publish(tmp_path / "p", {("A",): 12})
    real = tmp_path / "p" / "t.csv"
    kept = real.read_bytes()
    (tmp_path / "elsewhere.csv").write_bytes(kept)
    real.unlink()
    real.symlink_to(tmp_path / "elsewhere.csv")
    assert publication.verify(tmp_path / "p", jwks) == ["t.csv: missing"]
