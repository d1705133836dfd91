"""Copy the googleapis protos the contracts import into a folder buf can read.

buf resolves imports only from its modules; these two files come from the installed
googleapis-common-protos package rather than from the network (buf.yaml).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import google.rpc.status_pb2
import google.type.date_pb2

FILES = ("google/type/date.proto", "google/rpc/status.proto")


def googleapis_root() -> Path:
    """Where googleapis-common-protos installed its google/type and google/rpc sources."""
    root = Path(google.type.date_pb2.__file__).resolve().parent.parent.parent
    assert Path(google.rpc.status_pb2.__file__).resolve().is_relative_to(root)
    return root


def copy(dest: Path) -> None:
    """Place each imported googleapis .proto under `dest`."""
    root = googleapis_root()
    for name in FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)


if __name__ == "__main__":
    copy(Path(sys.argv[1]))
