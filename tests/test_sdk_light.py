"""The packaging promise of the light SDK: `pip install specroute` (or `specroute[client]`) brings grpcio and
protobuf only; the system's dependencies are the `serve` extra, which the `test` extra includes.

This checks pyproject.toml's metadata; `.ci/run` installs the light SDK into a clean environment and runs it.
It does not know what the SDK does (tests/specroute/test_client.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_the_base_install_is_the_client_sdk():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert _names(project["dependencies"]) == {"grpcio", "protobuf"}
    extras = project["optional-dependencies"]
    assert extras["client"] == []
    assert {"torch", "transformers", "ray", "numpy"} <= _names(extras["serve"])
    assert "specroute[serve]" in extras["test"]
