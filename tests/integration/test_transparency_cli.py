"""`jisr transparency publish` and `verify` against a real gateway's stores: the month's
exchanges counted from its audit trail, small counts suppressed, the publication signed by
the gateway's key and checked offline (docs/transparency.md)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import processes, registry_rows

pytestmark = pytest.mark.integration

CALLS = 12  # permitted: above the threshold of 10, published
REFUSED = 2  # refused: below it, suppressed


@dataclass(frozen=True)
class Trail:
    """A gateway's state after it served and stopped, and where its keys are."""

    state: Path
    data_dir: Path
    pki_dir: Path
    month: str


def _jisr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.jisr(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=processes.environment(env),
    )


@pytest.fixture(scope="module")
def trail(registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trail:
    folder = tmp_path_factory.mktemp("transparency")
    state = folder / "state"
    state.mkdir()
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    gateway = processes.start(
        [*args, "--pki-dir", str(pki_dir)],
        folder / "gateway.log",
        env={"JISR_STATE_DIR": str(state)},
    )
    household = registry_rows.subjects(registry_dir).household_ids[0]
    try:
        with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS")) as cnss:
            for _ in range(CALLS):
                cnss.verify("AMO_ENROLMENT", household, "AMOT")
            for _ in range(REFUSED):
                with pytest.raises(JisrError):
                    cnss.verify("SCHOOL_SUPPORT", household, "AMOT")
    finally:
        assert gateway.stop() == 0
    return Trail(state, registry_dir, pki_dir, month)


def _publish(trail: Trail, out: Path, month: str | None = None) -> subprocess.CompletedProcess[str]:
    return _jisr(
        "transparency",
        "publish",
        "--month",
        month or trail.month,
        "--out",
        str(out),
        "--data-dir",
        str(trail.data_dir),
        "--pki-dir",
        str(trail.pki_dir),
        env={"JISR_STATE_DIR": str(trail.state)},
    )


def _jwks(trail: Trail, folder: Path) -> Path:
    exported = _jisr("keys", "--dir", str(trail.pki_dir), "export")
    assert exported.returncode == 0, exported.stderr
    path = folder / "jwks.json"
    path.write_text(exported.stdout, encoding="utf-8")
    return path


def _exchanges(out: Path) -> dict[tuple[str, ...], int | None]:
    document = json.loads((out / "indicators.json").read_text(encoding="utf-8"))
    (table,) = [t for t in document["tables"] if t["name"] == "exchanges"]
    return {
        (c["key"]["institution"], c["key"]["purpose"], c["key"]["decision"]): c["count"]
        for c in table["cells"]
        if c["key"]["method"] == "VerifyEligibility"
    }


def test_the_months_exchanges_are_published_and_small_counts_suppressed(
    trail: Trail, tmp_path: Path
) -> None:
    done = _publish(trail, tmp_path / "pub")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"published {trail.month} in ")
    cells = _exchanges(tmp_path / "pub")
    assert cells[("CNSS", "AMO_ENROLMENT", "permit")] == CALLS
    assert cells[("CNSS", "SCHOOL_SUPPORT", "deny")] is None


def test_a_publication_verifies_offline_and_a_change_is_named(trail: Trail, tmp_path: Path) -> None:
    assert _publish(trail, tmp_path / "pub").returncode == 0
    jwks = _jwks(trail, tmp_path)
    ok = _jisr("transparency", "verify", str(tmp_path / "pub"), "--jwks", str(jwks))
    assert ok.returncode == 0, ok.stderr
    csv = tmp_path / "pub" / "exchanges.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace(str(CALLS), "99"), encoding="utf-8")
    bad = _jisr("transparency", "verify", str(tmp_path / "pub"), "--jwks", str(jwks))
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"{csv}: changed since it was signed"


def test_a_month_without_data_is_an_empty_signed_publication(trail: Trail, tmp_path: Path) -> None:
    assert _publish(trail, tmp_path / "pub", "2020-01").returncode == 0
    document = json.loads((tmp_path / "pub" / "indicators.json").read_text(encoding="utf-8"))
    assert document["note"] == "no data for this month"
    jwks = _jwks(trail, tmp_path)
    ok = _jisr("transparency", "verify", str(tmp_path / "pub"), "--jwks", str(jwks))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("month", ["2026-13", "november"])
def test_a_bad_month_is_refused_in_one_line(trail: Trail, tmp_path: Path, month: str) -> None:
    done = _publish(trail, tmp_path / "pub", month)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "YYYY-MM" in done.stderr
    assert not (tmp_path / "pub").exists()


def _table(out: Path, name: str) -> dict[str, object]:
    document = json.loads((out / "indicators.json").read_text(encoding="utf-8"))
    (table,) = [t for t in document["tables"] if t["name"] == name]
    return dict(table)


def test_twelve_lookups_of_one_household_are_masked_in_its_region(
    trail: Trail, tmp_path: Path
) -> None:
    """Counted in the household's region, but one household looked up twelve times is
    one household: below the threshold, however many times it was looked up."""
    assert _publish(trail, tmp_path / "pub").returncode == 0
    table = _table(tmp_path / "pub", "lookups_by_region")
    cells = [c for c in table["cells"] if c["key"]["purpose"] == "AMO_ENROLMENT"]  # type: ignore[attr-defined]
    assert [(c["count"], c["suppressed"]) for c in cells] == [(None, True)]
    assert cells[0]["key"]["area"] in {"URBAN", "RURAL"}


def test_the_registrys_households_are_counted_by_programme_and_band(
    trail: Trail, tmp_path: Path
) -> None:
    assert _publish(trail, tmp_path / "pub").returncode == 0
    table = _table(tmp_path / "pub", "eligibility_by_band")
    programmes = {c["key"]["programme"] for c in table["cells"]}  # type: ignore[attr-defined]
    assert programmes == {"ASD", "AMOT"}
    households = len(registry_rows.subjects(trail.data_dir).household_ids)
    assert table["total"] in (None, 2 * households)  # every household, once per programme
