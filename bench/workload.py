"""The bench's requests, serialized from the registry before any timing: a seeded random
mix of household ids and member IDCS (every call reaches a real household), programmes AMOT
and ASD, no as_of (the gateway decides for today)."""

from __future__ import annotations

import random

from bench.common import BATCH_PURPOSE, UNARY_PURPOSE
from gateway.pb.jisr.v1 import registry_pb2 as pb
from tests.support import registry_rows

PROGRAMMES = ("AMOT", "ASD")
Subjects = registry_rows.Subjects
load_subjects = registry_rows.subjects  # where bench.tracing imports it from


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
    """`batches` serialized EligibilityBatch of `size` subjects, unsigned (identity signs)."""
    rng = random.Random(seed)
    return [
        pb.EligibilityBatch(
            purpose=BATCH_PURPOSE,
            programme=PROGRAMMES[i % len(PROGRAMMES)],
            subjects=[_subject(subjects, rng) for _ in range(size)],
        ).SerializeToString()
        for i in range(batches)
    ]
