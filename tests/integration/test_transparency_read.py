"""The observatory's gRPC read of the publications, against a real gateway: the ONDH lists
the months and fetches one, byte for byte as signed, and verifies it offline with the
gateway's published keys; nobody else may, and a month not published is NOT_FOUND
(docs/transparency.md, "The observatory's read")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.transparency import Publications
from gateway.security import pki
from gateway.transparency import disclosure, publication
from gateway.transparency.indicators import Counts
from gateway.transparency.publication import Method
from tests.support import processes

pytestmark = pytest.mark.integration


def _publish(folder: Path, pki_dir: Path, month: str) -> None:
    counts = Counts("exchanges", "Exchanges.", ("institution",), {("CNSS",): 40, ("MEN",): 2})
    key, kid = pki.load_gateway_signing_key(pki_dir)
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    files = publication.contents(month, now, Method(10), [disclosure.protect(counts, 10)], [])
    publication.write(folder / month, month, files, key=key, kid=kid, now=now)


@pytest.fixture(scope="module")
def gateway(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    folder = tmp_path_factory.mktemp("read")
    for month in ("2026-10", "2026-11", "2026-08"):
        _publish(folder / "publications", pki_dir, month)
    # 2026-08 holds a file its signature does not name: it is not served at all.
    (folder / "publications" / "2026-08" / "secret.key").write_text("x", encoding="utf-8")
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    env = {
        "JISR_STATE_DIR": str(folder / "state"),
        "JISR_PUBLICATIONS_DIR": str(folder / "publications"),
    }
    proc = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env)
    try:
        yield proc
    finally:
        assert proc.stop() == 0


@pytest.fixture(scope="module")
def clients(gateway: processes.Proc, pki_dir: Path) -> Iterator[dict[str, JisrClient]]:
    made = {
        i: JisrClient(gateway.target, Credentials.from_pki(pki_dir, i)) for i in ("ONDH", "DEMO")
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


def test_the_observatory_lists_the_published_months_newest_first(
    clients: dict[str, JisrClient],
) -> None:
    assert list(Publications(clients["ONDH"]).months().message.months) == [
        "2026-11",
        "2026-10",
        "2026-08",
    ]


def test_a_fetched_publication_verifies_offline(
    clients: dict[str, JisrClient], pki_dir: Path, tmp_path: Path
) -> None:
    saved = Publications(clients["ONDH"]).save("2026-11", tmp_path / "2026-11")
    assert publication.verify(saved, pki.gateway_jwks(pki_dir)) == []
    assert (saved / "exchanges.csv").read_text().splitlines()[1:3] == [
        "CNSS,40,no",
        "MEN,,yes",
    ]


def test_another_institution_may_not_read_them(clients: dict[str, JisrClient]) -> None:
    with pytest.raises(JisrError) as caught:
        Publications(clients["DEMO"]).months()
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("month", "code", "reason"),
    [
        ("2026-09", grpc.StatusCode.NOT_FOUND, "PUBLICATION_NOT_FOUND"),
        ("2026-08", grpc.StatusCode.NOT_FOUND, "PUBLICATION_NOT_FOUND"),
        ("2026-13", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MONTH"),
        ("../../etc", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MONTH"),
    ],
)
def test_a_month_not_published_or_not_a_month_is_refused(
    clients: dict[str, JisrClient], month: str, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(JisrError) as caught:
        Publications(clients["ONDH"]).get(month)
    assert (caught.value.code, caught.value.reason) == (code, reason)
