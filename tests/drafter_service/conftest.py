"""Fixtures of the drafter service's tests: a `DrafterService` in process, on a real verifier server over loopback."""

from __future__ import annotations

import pytest

from drafter_service.base import create_drafter
from drafter_service.service import DrafterService
from verifier_service.client import VerifierPool
from verifier_service.server import VerifierServer, VerifierServerConfig


@pytest.fixture(scope="module")
def service(target, tiny_zoo):
    """The tiny Llama drafter's service, its sessions on a two-session verifier server."""
    server = VerifierServer(target, VerifierServerConfig(max_sessions=2), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    yield DrafterService("llama", create_drafter("model", {"path": tiny_zoo.llama_drafter}), target.tokenizer, pool)
    pool.close()
    server.stop(grace_s=0.5)
