"""The gateway's decisions agree with eligibility recomputed from the registry rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import JisrClient
from tests.support import registry_rows

HOUSEHOLDS = 10_000


def _reasons(decision: pb.EligibilityDecision) -> list[str]:
    return [pb.ReasonCode.Name(r).removeprefix("REASON_CODE_") for r in decision.reasons]


@pytest.mark.parametrize("programme", ["AMOT", "ASD"])
def test_unary_decisions_agree_with_the_rows_for_ten_thousand_households(
    client: JisrClient, registry_dir: Path, programme: str
) -> None:
    households = registry_rows.households(registry_dir, HOUSEHOLDS)
    assert len(households) == HOUSEHOLDS

    def ask(hid: str) -> pb.EligibilityDecision:
        return client.verify("ASD_ELIGIBILITY", hid, programme).message.decision

    with ThreadPoolExecutor(max_workers=16) as pool:
        decisions = list(pool.map(ask, [h.household_id for h in households]))
    disagreements = [
        (h.household_id, registry_rows.expected(programme, h), (d.eligible, _reasons(d)))
        for h, d in zip(households, decisions, strict=True)
        if registry_rows.expected(programme, h) != (d.eligible, _reasons(d))
    ]
    assert disagreements == []
    eligible = sum(d.eligible for d in decisions)
    assert 0 < eligible < HOUSEHOLDS  # the data straddles the threshold


def test_a_score_equal_to_the_threshold_is_not_eligible(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = registry_rows.one(
        registry_dir,
        f"SELECT household_id FROM household WHERE score = {registry_rows.ASD_THRESHOLD}",
    )
    decision = client.verify("ASD_ELIGIBILITY", hid, "ASD").message.decision
    assert not decision.eligible
    assert _reasons(decision) == ["SCORE_ABOVE_THRESHOLD"]
