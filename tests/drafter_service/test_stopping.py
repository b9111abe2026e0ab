"""Learned stopping: decision models load, score and stop as the rule says; the model drafter logs
its nodes and stops on a stop model without changing greedy output; bad stop models fail at load."""

import json

import pytest
import torch

from drafter_service.acceptance_log import AcceptanceLog, AcceptanceRecorder
from core.sampling import SamplingParams
from drafter_service.base import DraftLimit, create_drafter
from drafter_service.stopping import CONFIG_FILE, DecisionModel, StopModel, StopModelError, StopModelFile, q_features
from specroute.engine import Engine
from tests.conftest import PROMPTS


def _stop_model(path, variant="mlp", hidden=64, rule="frontier", threshold=0.4, bias=None) -> StopModel:
    torch.manual_seed(0)
    model = StopModel(DecisionModel(variant, hidden), StopModelFile(variant=variant, drafter_hidden_size=hidden,
                                                                   rule=rule, threshold=threshold))
    if bias is not None:  # a constant prediction sigmoid(bias): zero weights in the last layer
        last = model.net.layers[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, bias)
    model.save(path)
    return model


def test_the_mlp_has_dynasds_shape_and_the_hard_variant_reads_entropy_and_top_10(tmp_path):
    mlp = DecisionModel("mlp", 64)
    assert [m.out_features for m in mlp.layers if isinstance(m, torch.nn.Linear)] == [32, 16, 1]
    hard = DecisionModel("hard", 64)
    assert hard.layers[0].in_features == 11
    probs = torch.tensor([[0.5, 0.25, 0.25] + [0.0] * 9])
    q = q_features(probs)
    assert q.shape == (1, 11)
    assert q[0, 0] == pytest.approx(-(0.5 * torch.log(torch.tensor(0.5)) + 0.5 * torch.log(torch.tensor(0.25))))
    assert q[0, 1:4].tolist() == [0.5, 0.25, 0.25] and q[0, 4:].abs().sum() == 0


def test_a_saved_stop_model_loads_and_predicts_the_same(tmp_path):
    saved = _stop_model(tmp_path / "s")
    loaded = StopModel.load(tmp_path / "s", drafter_hidden_size=64)
    hidden, q = torch.randn(3, 64), torch.rand(3, 11)
    assert torch.allclose(saved.predict(hidden, q), loaded.predict(hidden, q))
    assert 0 <= float(loaded.predict(hidden, q).min()) and float(loaded.predict(hidden, q).max()) <= 1


def test_the_rules_stop_as_they_say(tmp_path):
    frontier = _stop_model(tmp_path / "f", rule="frontier", threshold=0.5)
    survival = StopModel.load(tmp_path / "f", rule="survival", threshold=0.5)
    p = torch.tensor([0.6, 0.3])
    assert not frontier.should_stop(p, torch.tensor([0.5, 1.0]))  # 0.6 reaches 0.5
    assert frontier.should_stop(torch.tensor([0.4, 0.3]), torch.tensor([1.0, 1.0]))
    assert survival.should_stop(p, torch.tensor([0.5, 1.0]))  # 0.3 and 0.3: below 0.5
    assert not survival.should_stop(p, torch.tensor([1.0, 0.2]))  # 0.6


def test_a_missing_or_mismatched_stop_model_fails_at_load_naming_the_option(tiny_zoo, tmp_path):
    with pytest.raises(ValueError, match="stop_model"):
        create_drafter("model", {"path": tiny_zoo.llama_drafter, "stop_model": tmp_path / "nowhere"})
    _stop_model(tmp_path / "other", hidden=32)  # trained for another drafter's hidden size
    with pytest.raises(StopModelError, match="stop_model.*32.*64"):
        create_drafter("model", {"path": tiny_zoo.llama_drafter, "stop_model": tmp_path / "other"})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_FILE).write_text(json.dumps({"variant": "mlp"}))
    with pytest.raises(ValueError, match="stop_model"):
        create_drafter("model", {"path": tiny_zoo.llama_drafter, "stop_model": tmp_path / "broken"})
    with pytest.raises(ValueError, match="need a stop_model"):
        create_drafter("model", {"path": tiny_zoo.llama_drafter, "stop_threshold": 0.5})
    _stop_model(tmp_path / "hard", variant="hard", hidden=32)  # the hard variant reads q only: any drafter
    assert create_drafter("model", {"path": tiny_zoo.llama_drafter, "stop_model": tmp_path / "hard"}).stop is not None


def test_greedy_output_is_the_targets_with_a_stop_model_and_the_threshold_sets_depth(target, tiny_zoo, tmp_path):
    """A stop model that always predicts 0.5: threshold 0.4 never stops (full depth), 0.6 stops after
    the first level (always drafted); the survival rule at 0.2 drafts two: a depth-1 node's value is
    0.5 * 0.5 = 0.25, a depth-2 node's 0.125."""
    _stop_model(tmp_path / "half", bias=0.0)
    ids = target.tokenizer.encode(PROMPTS[0])
    expected = Engine(target).generate(ids, 24).token_ids
    depths = {}
    for rule, threshold in (("frontier", 0.4), ("frontier", 0.6), ("survival", 0.2)):
        drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter, "top_k": 1, "max_depth": 5,
                                           "max_nodes": 6, "stop_model": tmp_path / "half", "stop_rule": rule,
                                           "stop_threshold": threshold})
        tree = drafter.start(ids, SamplingParams()).propose(DraftLimit(max_nodes=6, max_depth=5))
        depths[(rule, threshold)] = tree.num_nodes - 1
        assert Engine(target, drafter).generate(ids, 24).token_ids == expected
    assert depths == {("frontier", 0.4): 5, ("frontier", 0.6): 1, ("survival", 0.2): 2}


@pytest.mark.parametrize("kind", ["model", "hybrid"])
def test_the_recorder_logs_every_drafted_node_with_its_verdict(target, tiny_zoo, kind):
    log = AcceptanceLog()
    drafter = create_drafter(kind, {"path": tiny_zoo.llama_drafter})
    assert drafter.record_to(AcceptanceRecorder(log))
    result = Engine(target, drafter).generate(PROMPTS[1], 24)
    columns = log.columns()
    n = len(columns["depth"])
    assert n > 0 and columns["hidden"].shape == (n, 64) and columns["q"].shape == (n, 11)
    assert (columns["accepted"] <= columns["reached"]).all() and (columns["accepted"] <= columns["group_accepted"]).all()
    assert (columns["depth"] >= 1).all() and (columns["prob"] > 0).all() and (columns["prob"] <= 1 + 1e-6).all()
    if kind == "model":  # every drafted node logged; accepted nodes: the verdicts' count
        assert n == result.stats.num_drafted and int(columns["accepted"].sum()) == result.stats.num_accepted
    drafter.record_to(None)
    Engine(target, drafter).generate(PROMPTS[1], 8)
    assert len(log.columns()["depth"]) == n, "no recording once detached"


def test_a_log_saves_and_loads(tmp_path):
    log = AcceptanceLog(meta={"drafter": "d"})
    log.add({"depth": torch.tensor([1, 2], dtype=torch.int32), "q": torch.rand(2, 11)})
    log.save(tmp_path / "log.safetensors")
    back = AcceptanceLog.load(tmp_path / "log.safetensors")
    assert back.meta == {"drafter": "d"} and torch.equal(back.columns()["depth"], torch.tensor([1, 2], dtype=torch.int32))
