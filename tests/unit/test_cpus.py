"""The CPUs `jisr serve` runs one process per by default (gateway/runtime/cpus.py): the
fewer of the affinity's and the cgroup quota's (a container's or a unit's CPU limit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.runtime import cpus


def _cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text, encoding="ascii")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", None),  # no quota
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),  # 1.5 CPUs: two processes, the quota shared
        ("50000 100000\n", 1),  # half a CPU is still one process
    ],
)
def test_the_cgroup_quota_in_cpus(tmp_path: Path, text: str, expected: int | None) -> None:
    assert cpus.quota_cpus(_cpu_max(tmp_path, text)) == expected


@pytest.mark.parametrize("text", ["", "garbage\n", "100000 0\n", "x 100000\n"])
def test_an_unreadable_quota_is_no_quota(tmp_path: Path, text: str) -> None:
    assert cpus.quota_cpus(_cpu_max(tmp_path, text)) is None


def test_no_quota_file_is_no_quota(tmp_path: Path) -> None:
    assert cpus.quota_cpus(tmp_path / "absent") is None


def test_the_processes_are_the_fewer_of_the_affinity_and_the_quota(tmp_path: Path) -> None:
    mine = len(os.sched_getaffinity(0))
    assert cpus.available(_cpu_max(tmp_path, "max 100000\n")) == mine
    assert cpus.available(_cpu_max(tmp_path, "100000 100000\n")) == 1
    assert cpus.available(_cpu_max(tmp_path, f"{(mine + 4) * 100000} 100000\n")) == mine


def test_pinned_workers_take_the_allowed_cpus_in_turn() -> None:
    assert [cpus.cpu_for(i, [2, 5]) for i in range(5)] == [2, 5, 2, 5, 2]
