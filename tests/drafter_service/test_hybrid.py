"""The hybrid drafter: a model's tree with lookup branches grafted on, greedy only, lossless."""

import pytest
from pydantic import ValidationError

from drafter_service.base import DraftLimit, create_drafter
from drafter_service.datastore import Datastore
from specroute.engine import Engine
from core.sampling import SamplingParams

GREEDY = SamplingParams()
SAMPLED = SamplingParams(temperature=0.8, seed=3)
WIDE = DraftLimit(max_nodes=64, max_depth=16)
PROMPT = [11, 12, 13, 14, 11, 12, 13]


def test_greedy_tree_keeps_the_model_tree_and_grafts_lookups(tiny_zoo):
    model = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    hybrid = create_drafter("hybrid", {"path": tiny_zoo.llama_drafter, "lookup_nodes": 8})
    alone = model.start(PROMPT, GREEDY).propose(WIDE)
    tree = hybrid.start(PROMPT, GREEDY).propose(WIDE)
    tree.validate_structure()
    assert tree.tokens[:alone.num_nodes] == alone.tokens and tree.parents[:alone.num_nodes] == alone.parents
    assert alone.num_nodes < tree.num_nodes <= alone.num_nodes + 8
    # The context repeats [11, 12, 13], so prompt lookup proposes what followed it: 14, 11, ...
    walk, node = [], 0
    for token in (14, 11, 12):
        node = next(c for c in tree.children()[node] if tree.tokens[c] == token)
        walk.append(node)
    assert len(walk) == 3


def test_sampling_gets_the_model_tree_alone(tiny_zoo):
    model = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    hybrid = create_drafter("hybrid", {"path": tiny_zoo.llama_drafter})
    alone = model.start(PROMPT, SAMPLED).propose(WIDE)
    tree = hybrid.start(PROMPT, SAMPLED).propose(WIDE)
    assert tree == alone
    tree.validate_sampling()


def test_limits_bound_the_grafted_tree(tiny_zoo):
    hybrid = create_drafter("hybrid", {"path": tiny_zoo.llama_drafter})
    tree = hybrid.start(PROMPT, GREEDY).propose(DraftLimit(max_nodes=5, max_depth=2))
    assert tree.num_nodes <= 5
    assert hybrid.start(PROMPT, GREEDY).propose(DraftLimit(max_nodes=1, max_depth=0)).num_nodes == 1


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED])
def test_greedy_output_is_the_targets_own_and_a_datastore_of_it_is_accepted(tiny_zoo, target, tmp_path, sampling):
    prompt = target.tokenizer.encode("def fill(text, width=70, **kwargs):")
    plain = Engine(target).generate(prompt, 40, sampling=sampling)
    # A datastore that holds the target's own continuation: its lookups are accepted (greedy).
    Datastore.from_documents([prompt + plain.token_ids], target.tokenizer.eos_token_id).save(tmp_path / "task.npz")
    model = Engine(target, create_drafter("model", {"path": tiny_zoo.gpt2_drafter})).generate(prompt, 40, sampling=sampling)
    hybrid = Engine(target, create_drafter("hybrid", {"path": tiny_zoo.gpt2_drafter, "datastore": tmp_path / "task.npz"}))
    result = hybrid.generate(prompt, 40, sampling=sampling)
    if sampling.greedy:
        assert result.token_ids == plain.token_ids
        assert result.stats.tau > 2 * model.stats.tau
    else:  # the model's trees alone: the same draws, the same output
        assert result.token_ids == model.token_ids and result.stats.tau == model.stats.tau


@pytest.mark.parametrize("options, message", [
    ({"draft_ahead": 2}, "draft ahead"),
    ({"lookup_nodes": 0}, "lookup_nodes"),
    ({"datastore": "/nowhere/code.npz"}, "datastore /nowhere/code.npz does not exist"),
])
def test_config_is_validated(tiny_zoo, options, message):
    with pytest.raises(ValidationError, match=message):
        create_drafter("hybrid", {"path": tiny_zoo.llama_drafter, **options})
