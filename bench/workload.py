"""The bench's requests, built once from the registry and serialized before any timing.

Subjects are a seeded random mix of household ids and member IDCS taken from the registry
(so every call reaches a real household), programmes AMOT and ASD, no as_of (the gateway
decides for today, as a counter would). Unary calls ask for UNARY_PURPOSE; batches, the
EligibilityBatch messages a caller signs, for BATCH_PURPOSE (bench.common).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench.common import BATCH_PURPOSE, UNARY_PURPOSE
from gateway.pb.jisr.v1 import registry_pb2 as pb
from tests.support.registry_rows import connect

PROGRAMMES = ("AMOT", "ASD")


@dataclass(frozen=True, slots=True)
class Subjects:
    """Household ids and member IDCS present in the registry."""

    household_ids: list[str]
    member_idcs: list[str]


def load_subjects(data_dir: Path) -> Subjects:
    """Every household id and every member IDCS of the registry in `data_dir`."""
    with connect(data_dir) as db:
        households = [r[0] for r in db.execute("SELECT household_id FROM household")]
        members = [r[0] for r in db.execute("SELECT idcs FROM membership")]
    if not households or not members:
        raise ValueError(f"{data_dir}: no households or members in the registry")
    return Subjects(households, members)


def _subject(subjects: Subjects, rng: random.Random) -> pb.Subject:
    if rng.random() < 0.5:
        return pb.Subject(household_id=rng.choice(subjects.household_ids))
    return pb.Subject(idcs=rng.choice(subjects.member_idcs))


def unary_requests(subjects: Subjects, count: int, seed: int) -> list[bytes]:
    """`count` serialized VerifyEligibilityRequest, random subjects and programmes."""
    rng = random.Random(seed)
    return [
        pb.VerifyEligibilityRequest(
            purpose=UNARY_PURPOSE, subject=_subject(subjects, rng), programme=rng.choice(PROGRAMMES)
        ).SerializeToString()
        for _ in range(count)
    ]


def batch_requests(subjects: Subjects, batches: int, size: int, seed: int) -> list[bytes]:
    """`batches` serialized EligibilityBatch of `size` subjects each, programmes
    alternating AMOT and ASD (unsigned: see bench.identity.signed_stream)."""
    rng = random.Random(seed)
    return [
        pb.EligibilityBatch(
            purpose=BATCH_PURPOSE,
            programme=PROGRAMMES[i % len(PROGRAMMES)],
            subjects=[_subject(subjects, rng) for _ in range(size)],
        ).SerializeToString()
        for i in range(batches)
    ]
