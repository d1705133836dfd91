"""Regenerate the Python code for the jisr.v1 contracts into gateway/pb.

Run as `python proto/generate.py [OUTDIR]` (what `make proto` does). The generated modules
import each other as `jisr.v1....`; they are rewritten to `gateway.pb.jisr.v1....` so the
generated code lives in its own sub-package instead of claiming a top-level `jisr` package.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from buf_deps import googleapis_root
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "gateway.pb"
_IMPORT = re.compile(r"^(from|import) jisr\.v1\b", re.MULTILINE)


def generate(out_root: Path) -> list[Path]:
    """Write gateway/pb/jisr/v1/* under out_root and return the files written."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    wkt = resources.files("grpc_tools") / "_proto"
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{googleapis_root()}",
            f"-I{wkt}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        target = out_root / "gateway" / "pb"
        written: list[Path] = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.jisr.v1", src.read_text())
            dst.write_text(text)
            written.append(dst)
        for pkg in {target, *(p.parent for p in written)}:
            init = pkg / "__init__.py"
            while init.parent != target.parent:
                if not init.exists():
                    init.write_text(
                        '"""Generated code for the jisr.v1 contracts; do not edit."""\n'
                    )
                init = init.parent.parent / "__init__.py"
        return written


def main() -> None:
    out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    if out_root == ROOT:
        shutil.rmtree(ROOT / "gateway" / "pb" / "jisr", ignore_errors=True)
    for path in generate(out_root):
        print(path.relative_to(out_root))


if __name__ == "__main__":
    main()
