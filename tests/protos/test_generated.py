"""The committed generated code matches the .proto files (CI fails if it is stale)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current():
    result = subprocess.run([sys.executable, "-m", "protos.generate", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_and_internal_services_are_versioned():
    from protos.specroute.v1 import specroute_pb2, verifier_pb2
    assert specroute_pb2.DESCRIPTOR.package == verifier_pb2.DESCRIPTOR.package == "specroute.v1"
    assert set(specroute_pb2.DESCRIPTOR.services_by_name["SpecRoute"].methods_by_name) == {
        "Generate", "Classify", "ListDrafters", "Health"}
    session = verifier_pb2.DESCRIPTOR.services_by_name["Verifier"].methods_by_name["Session"]
    assert session.client_streaming and session.server_streaming
