"""A gateway that cannot open its state says so in one line naming where, and exits;
never a traceback (docs/configuration.md)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import processes

_ARGS = ("serve", "--listen", "127.0.0.1:0", "--data-dir")


def _serve(registry_dir: Path, pki_dir: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *_ARGS, str(registry_dir), "--pki-dir", str(pki_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "JISR_STATE_DIR": str(state)},
    )


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for the gateway: a read-only bind mount when run as root (root
    ignores permission bits), else permission bits."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
        for path in modes:
            path.chmod(stat.S_IRUSR | stat.S_IXUSR if path == folder else stat.S_IRUSR)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("cannot bind-mount a read-only state directory as root")
        pytest.skip("this machine refuses bind mounts; runs in CI")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder), str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _one_line_naming(result: subprocess.CompletedProcess[str], where: Path) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jisr: ")
    assert str(where) in lines[0]


def test_a_read_only_state_directory_is_one_line_naming_it(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = processes.start(
        [*_ARGS, str(registry_dir), "--pki-dir", str(pki_dir)],
        tmp_path / "first.log",
        env={"JISR_STATE_DIR": str(state)},
    )
    assert first.stop() == 0
    with read_only(state):
        result = _serve(registry_dir, pki_dir, state)
    _one_line_naming(result, state)


def test_a_state_store_that_is_not_a_database_is_one_line_naming_it(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit.sqlite").write_bytes(b"this is not a database" * 100)
    result = _serve(registry_dir, pki_dir, state)
    _one_line_naming(result, state)


def test_a_port_already_in_use_is_one_line_naming_the_address(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    first = processes.start(
        [*_ARGS, str(registry_dir), "--pki-dir", str(pki_dir)],
        tmp_path / "first.log",
        env={"JISR_STATE_DIR": str(tmp_path / "first")},
    )
    try:
        taken = first.target
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--listen",
                taken,
                "--data-dir",
                str(registry_dir),
                "--pki-dir",
                str(pki_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "JISR_STATE_DIR": str(tmp_path / "second")},
        )
    finally:
        first.stop()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jisr: cannot listen on {taken}: Address already in use")
