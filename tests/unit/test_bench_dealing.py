"""How the load generator deals a run's batches between its streams (bench/load.py): each
stream carries the workload's own mix, so no stream is left with the costlier kind."""

from __future__ import annotations

import pytest

from bench.load import _dealt


def test_every_batch_is_dealt_once_and_in_order() -> None:
    batches = [bytes([i]) for i in range(10)]
    shares = _dealt(batches, 3)
    assert [b for share in shares for b in share] == batches
    assert [len(share) for share in shares] == [4, 3, 3]


def test_each_stream_carries_both_programmes_when_they_alternate() -> None:
    batches = [b"AMOT" if i % 2 == 0 else b"ASD" for i in range(100)]
    for share in _dealt(batches, 2):
        assert share.count(b"AMOT") == share.count(b"ASD") == 25


def test_more_streams_than_batches_is_refused_with_both_counts() -> None:
    with pytest.raises(ValueError, match="2 batches cannot fill 3 streams"):
        _dealt([b"a", b"b"], 3)
