"""Generates the Python code of the protos, or checks that the committed code is current.

    python -m protos.generate          # rewrites protos/specroute/v1/*_pb2*.py(i)
    python -m protos.generate --check  # exits 1 if the committed code differs from a fresh run

The generated code depends on the grpcio-tools version (it embeds it), so the test extra pins
grpcio-tools; generate with that version. Run from anywhere: paths are relative to the repo root.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protos/specroute/v1")
OUTPUT_GLOBS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Runs protoc over every .proto, writing under out_root (mirroring the repo layout)."""
    from grpc_tools import protoc
    import grpc_tools
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / PROTO_DIR).glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    (out_root / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    return sorted(p for g in OUTPUT_GLOBS for p in (out_root / PROTO_DIR).glob(g))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for path in fresh:
            committed = ROOT / path.relative_to(tmp)
            if args.check:
                if not committed.is_file() or not filecmp.cmp(path, committed, shallow=False):
                    stale.append(str(committed.relative_to(ROOT)))
            else:
                shutil.copyfile(path, committed)
        committed_now = sorted(p for g in OUTPUT_GLOBS for p in (ROOT / PROTO_DIR).glob(g))
        extra = {str(p.relative_to(ROOT)) for p in committed_now} - {str(p.relative_to(tmp)) for p in fresh}
    if args.check:
        if stale or extra:
            print("generated proto code is stale: run `python -m protos.generate`\n  "
                  + "\n  ".join(sorted(stale + list(extra))), file=sys.stderr)
            return 1
        print(f"generated proto code is current ({len(fresh)} files)")
        return 0
    print(f"wrote {len(fresh)} files under {PROTO_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
