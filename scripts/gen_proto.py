"""Regenerate federation/generated/ from proto/ (run after editing a .proto file).

python scripts/gen_proto.py          # write the stubs
python scripts/gen_proto.py --check  # exit 1 if the committed stubs differ from a fresh build
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = "federation/generated"  # where the stubs live
IMPORT_PACKAGE = "hpf/federation/generated"  # the name they are imported by


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    (out_root / IMPORT_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{IMPORT_PACKAGE}={PROTO_DIR}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[f"{IMPORT_PACKAGE}/{p.name}" for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / IMPORT_PACKAGE).iterdir() if p.suffix in (".py", ".pyi"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target = ROOT / OUT_PACKAGE
        drift = [
            f.name
            for f in fresh
            if not (target / f.name).exists() or not filecmp.cmp(f, target / f.name, shallow=False)
        ]
        if args.check:
            if drift:
                print("generated stubs are out of date: " + ", ".join(drift), file=sys.stderr)
                return 1
            return 0
        for f in fresh:
            shutil.copyfile(f, target / f.name)
        (target / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
