"""How `make bench` turns side-by-side loads into the tracing cost it reports."""

from __future__ import annotations

from typing import Any

import pytest

from bench import tracing as bench_tracing


def _loop(mode: str, round_no: int, rps: float, cpu: float, relay: float = 0.0) -> dict[str, Any]:
    return {
        "mode": mode,
        "round": round_no,
        "rps": rps,
        "p99_ms": 100.0,
        "server_cpu_us_per_call": cpu,
        "relay_cpu_us_per_call": relay,
        "overlapped": True,
    }


def test_the_relays_cpu_is_charged_to_tracing() -> None:
    # Same throughput side by side, but the traced gateway's relay used 100 µs a call more.
    off = _loop("off", 1, rps=300, cpu=1_900)
    traced = _loop("traces", 1, rps=300, cpu=1_900, relay=100)
    side = bench_tracing._side_by_side([off, traced])
    assert side["traces"]["cost"] == pytest.approx(0.05)
    assert side["traces"]["cpu_cost"] == pytest.approx(0.05)


def test_the_cost_is_the_median_of_the_rounds() -> None:
    loops = []
    for round_no, traced_rps in enumerate((270, 250, 290), start=1):
        loops += [
            _loop("off", round_no, rps=300, cpu=2_000),
            _loop("traces", round_no, rps=traced_rps, cpu=2_000),
        ]
    side = bench_tracing._side_by_side(loops)
    assert side["traces"]["cost_per_round"] == pytest.approx([0.1, 0.167, 0.033])
    assert side["traces"]["cost"] == pytest.approx(0.1)


def test_a_round_whose_loops_did_not_overlap_is_left_out() -> None:
    late = {**_loop("traces", 2, rps=100, cpu=2_000), "overlapped": False}
    loops = [
        _loop("off", 1, rps=300, cpu=2_000),
        _loop("traces", 1, rps=270, cpu=2_000),
        _loop("off", 2, rps=300, cpu=2_000),
        late,
    ]
    side = bench_tracing._side_by_side(loops)
    assert (side["rounds"], side["rounds_overlapped"]) == (2, 1)
    assert side["traces"]["cost_per_round"] == pytest.approx([0.1])


def test_a_round_without_cpu_figures_gives_no_cost_rather_than_a_wrong_one() -> None:
    off = {**_loop("off", 1, rps=300, cpu=2_000), "server_cpu_us_per_call": None}
    traced = {**_loop("traces", 1, rps=270, cpu=2_000), "server_cpu_us_per_call": None}
    side = bench_tracing._side_by_side([off, traced])
    assert side["traces"]["cost"] is None
    assert side["traces"]["cpu_cost"] is None
