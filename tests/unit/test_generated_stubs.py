"""The committed gRPC stubs are exactly what proto/ generates (Flower-style drift check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_stubs_import_and_expose_both_services() -> None:
    from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc

    assert hasattr(pb_grpc, "CoordinatorStub") and hasattr(pb_grpc, "NodeStub")
