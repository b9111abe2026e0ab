"""Every drafter kind at every node budget, from the root alone up, greedy and sampled.

The verifier's per-session node limit falls as sessions share it, so a drafter must draft a
valid tree (or the root alone) within any limit: greedy output stays the target's own, and a
sampled generation runs to its end. A regression: under sampling a level whose groups of
children all missed the node cap left an empty frontier, and drafting below it crashed.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from drafter_service.base import create_drafter, drafter_kinds
from drafter_service.datastore import Datastore
from drafter_service.feature_model import FeatureDraftConfig, FeatureDraftModel
from drafter_service.steering import default_layers
from specroute.engine import Engine
from specroute.zoo.steer import SteeredModel
from tests.conftest import PROMPTS
from core.sampling import SamplingParams

MAX_NEW = 20
BUDGETS = range(1, 18)
DEEP = {"top_k": 4, "max_depth": 8, "max_nodes": 16, "budget": {"adaptive": False}}


@pytest.fixture(scope="module")
def drafters(tiny_zoo, target, tmp_path_factory):
    """One drafter per registered kind, shaped to go deep (the self drafter is always confident)."""
    store = tmp_path_factory.mktemp("store") / "task.npz"
    Datastore.from_documents([target.tokenizer.encode(p) for p in PROMPTS], target.tokenizer.eos_token_id).save(store)
    made = {
        "model": create_drafter("model", {"path": tiny_zoo.self_drafter, **DEEP}),
        "ngram": create_drafter("ngram", {}),
        "plain": create_drafter("plain", {}),
        "hybrid": create_drafter("hybrid", {"path": tiny_zoo.llama_drafter, "datastore": store, **DEEP}),
        "feature": create_drafter("feature", {"path": _feature_dir(tiny_zoo, tmp_path_factory), **DEEP}),
        "steered": create_drafter("steered", {"path": _steered_dir(tiny_zoo, target, tmp_path_factory), **DEEP}),
    }
    assert set(made) == set(drafter_kinds()), "a new drafter kind must be added to this test"
    return made


def _feature_dir(tiny_zoo, tmp_path_factory):
    """An untrained feature drafter with position specialists: deep trees reach every specialist."""
    out = tmp_path_factory.mktemp("feature") / "feature"
    config = FeatureDraftConfig(position_specialists=2, train_depth=4)
    FeatureDraftModel.from_target(tiny_zoo.target, config, seed=0).save(out)
    return out


def _steered_dir(tiny_zoo, target, tmp_path_factory):
    """The self drafter with a random, non-zero steering (its trees move with the verdicts' states)."""
    out = tmp_path_factory.mktemp("steered") / "steered"
    model = SteeredModel.around(AutoModelForCausalLM.from_pretrained(tiny_zoo.self_drafter), target.hidden_size)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.steering.w_s.weight, std=0.05)
    model.save(out, target.tokenizer, default_layers(target.num_layers), max_offset=4, base=None)
    return out


@pytest.fixture(scope="module")
def plain(target):
    return {p: Engine(target).generate(p, MAX_NEW).token_ids for p in PROMPTS[:3]}


@pytest.mark.parametrize("kind", ["model", "ngram", "hybrid", "plain", "feature", "steered"])
def test_every_node_budget_greedy_and_sampled(target, drafters, plain, kind):
    for budget in BUDGETS:
        engine = Engine(target, drafters[kind], max_tree_nodes=budget)
        for prompt, reference in plain.items():
            assert engine.generate(prompt, MAX_NEW).token_ids == reference, (kind, budget, prompt)
            for seed in range(2):
                result = engine.generate(prompt, MAX_NEW, sampling=SamplingParams(temperature=1.0, seed=seed))
                assert result.stats.num_generated == MAX_NEW or result.finish_reason != "length", (kind, budget)
