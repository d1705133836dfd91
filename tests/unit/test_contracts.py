"""The jisr.v1 contracts: committed generated code is current, and buf lint passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "proto"))

import buf_deps  # noqa: E402
import generate  # noqa: E402


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    committed_root = ROOT
    stale = [
        str(rel)
        for rel, text in fresh.items()
        if not (committed_root / rel).is_file() or (committed_root / rel).read_text() != text
    ]
    assert stale == [], "run `make proto` and commit gateway/pb"


def test_no_generated_file_is_left_over_from_a_removed_proto(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    generated = ROOT / "gateway" / "pb"
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*")}
    committed = {p.relative_to(ROOT) for p in generated.rglob("*.py*")}
    assert committed - fresh == set()


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    if buf is None:
        pytest.fail("buf is missing: install the dev extra (buf-bin)")
    buf_deps.copy(ROOT / "build" / "googleapis")
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
