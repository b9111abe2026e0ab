"""Session-wide fixtures and the suite's two tiers.

Fixtures: tiny models built once per test session (see tests/tiny_models.py), the zoo's `tiny` preset.

Tiers: `pytest_collection_modifyitems` marks `integration` every test that starts Ray, Serve,
`specroute serve` or a Redis server, builds a zoo, trains, or is long (by module and by the fixtures it
uses), so `pytest -m "not integration"` is the fast tier; a test outside it that initialises Ray fails.

Ray: the modules in SHARED_RAY_MODULES run on one local Ray and one Serve
(tests/specroute/systems.py's SHARED), brought up before their first integration test and down before
a module that needs a Ray of its own (OWN_RAY_MODULES) and at the end of the session; the two groups run
last, in that order, so the shared Ray starts once.

This module does not know what the tests check.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import tiny_models
from tests.specroute.systems import SHARED

torch.set_num_threads(2)

# Every test in these modules is integration (paths relative to tests/).
INTEGRATION_MODULES = {
    "bench/test_scale_bench.py", "bench/test_services_bench.py",
    "bench/test_target_bench.py",  # trains a lever on the tiny target
    "specroute/test_autoscaling.py", "specroute/test_fuzz.py", "specroute/test_serve.py",
    "specroute/test_observability.py", "specroute/test_soak.py", "specroute/test_system.py", "specroute/test_tls.py",
    "specroute/test_training.py", "specroute/test_distill.py", "specroute/test_zoo.py",
    "verifier_service/test_sampling_lossless.py",  # the statistical test: thousands of seeded generations
}
# These tests (module path::name) are integration.
INTEGRATION_TESTS = {
    "router/test_redis_server.py::test_a_supervised_server_that_dies_is_restarted_with_its_data",  # redis-server
    "core/test_sampling_domain.py::test_generation_runs_for_every_accepted_value",  # long: a sweep of generations
}
# A test using any of these fixtures (directly or through another fixture) is integration.
INTEGRATION_FIXTURES = {
    "built_zoo",  # builds the zoo's tiny preset: corpus, training, routing
    "redis_server",  # a redis-server process (tests/router/conftest.py)
    "hf_reference",  # HF generate over every prompt: the long losslessness sweeps (drafter_service/test_generation.py)
}
# Modules whose systems all come from `start_tiny_system`, with no endpoints of their own and nothing
# that needs Ray to be started by the test itself: they share one Ray and one Serve.
SHARED_RAY_MODULES = {
    "specroute/test_autoscaling.py", "specroute/test_fuzz.py", "specroute/test_loadtest.py",
    "specroute/test_observability.py", "specroute/test_soak.py", "specroute/test_system.py",
}
# Modules that need a Ray of their own (the shared one is shut down before them):
OWN_RAY_MODULES = {
    "specroute/test_demo.py",  # `specroute demo` starts (and stops) a local Ray itself
    "specroute/test_serve.py",  # checks that LocalSystem.stop() shuts its own Ray down
    "specroute/test_tls.py",  # Ray's processes must inherit the TLS proxy's environment at ray.init
    "bench/test_services_bench.py",  # pins the Ray it starts to CPUs (ray_cpus)
    "bench/test_scale_bench.py",  # starts one system (and Ray) per variant, on ports of its own
}
TESTS = Path(__file__).parent


def _module(item: pytest.Item) -> str:
    return item.path.relative_to(TESTS).as_posix()


def _ray_group(item: pytest.Item) -> int:
    """0: no Ray of its own; 1: the shared Ray; 2: a Ray of its own."""
    module = _module(item)
    return 1 if module in SHARED_RAY_MODULES else 2 if module in OWN_RAY_MODULES else 0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (_module(item) in INTEGRATION_MODULES or f"{_module(item)}::{item.originalname}" in INTEGRATION_TESTS
                or INTEGRATION_FIXTURES & set(item.fixturenames)):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_ray_group)  # stable: modules stay whole and in order within a group


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of the item (module-scoped ones included) is set up."""
    group = _ray_group(item)
    if group == 2:
        SHARED.down()
    elif group == 1 and item.get_closest_marker("integration"):
        SHARED.up()


def pytest_sessionfinish(session, exitstatus):
    SHARED.down()


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def _no_ray_outside_integration(request):
    """A test of the fast tier must not start Ray: ray.init raises, and a Ray started anyway fails it."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    message = (f"{request.node.nodeid} initialises Ray but is not marked integration: add its module to "
               f"INTEGRATION_MODULES or its fixture to INTEGRATION_FIXTURES in tests/conftest.py")
    ray = sys.modules.get("ray")
    before = _ray_initialized()
    real_init = getattr(ray, "init", None)

    def refuse(*args, **kwargs):
        raise RuntimeError(message)

    if real_init is not None:
        ray.init = refuse
    try:
        yield
    finally:
        if real_init is not None:
            ray.init = real_init
    if not before and _ray_initialized():
        sys.modules["ray"].shutdown()
        pytest.fail(message)


@dataclass(frozen=True)
class TinyZoo:
    target: Path
    llama_drafter: Path  # the target's weights plus noise: high but imperfect acceptance
    gpt2_drafter: Path  # an unrelated GPT-2: low acceptance
    self_drafter: Path  # the target itself: everything is accepted
    vocab_size: int
    eos_id: int
    max_positions: int


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> TinyZoo:
    root = tmp_path_factory.mktemp("tiny_zoo")
    dirs = {name: root / name for name in ("target", "llama_drafter", "gpt2_drafter", "self_drafter")}
    tokenizer = tiny_models.build_tokenizer(dirs["target"])
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    max_positions = 160
    tiny_models.build_llama(dirs["target"], vocab, hidden=64, layers=2, seed=1, eos_id=eos,
                            max_positions=max_positions, sharpen=4.0)
    tiny_models.perturbed_copy(dirs["target"], dirs["llama_drafter"], noise=0.3, seed=2)
    tiny_models.perturbed_copy(dirs["target"], dirs["self_drafter"], noise=0.0, seed=3)
    tiny_models.build_gpt2(dirs["gpt2_drafter"], vocab, hidden=32, layers=1, seed=4, eos_id=eos,
                           max_positions=max_positions, sharpen=4.0)
    tiny_models.copy_tokenizer(tokenizer, dirs["llama_drafter"], dirs["gpt2_drafter"], dirs["self_drafter"])
    return TinyZoo(dirs["target"], dirs["llama_drafter"], dirs["gpt2_drafter"], dirs["self_drafter"],
                   vocab, eos, max_positions)


@pytest.fixture(scope="session")
def target(tiny_zoo):
    from verifier_service.target import TargetModel
    return TargetModel.from_dir(tiny_zoo.target)


PROMPTS = [
    "def __init__(self, width=70, initial_indent=\"\",",
    "import re",
    "class JSONDecodeError(ValueError):",
    "    def _split_chunks(self, text):",
    "héllo wörld",
    "return",
    "if not self.break_on_hyphens:",
    "parser.add_argument(",
    "The quick brown fox",
    "for i in range(10):",
    "    chunks = self.wordsep_re.split(text)",
    "x = {\"a\": [1, 2, 3]}",
    "# -*- coding: utf-8 -*-",
    "    while chunks:",
    "日本語",
    "raise TypeError(",
    "lines = []",
    "def fill(text, width=70, **kwargs):",
    "    \"\"\"Wrap a single paragraph of text",
    "self.",
    "else:",
    "w",
]


@pytest.fixture(scope="session")
def built_zoo(tmp_path_factory) -> Path:
    """The zoo's `tiny` preset, built once per test session (about 20 s)."""
    from specroute.zoo.build import build_zoo
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo("tiny", out)
    return out
