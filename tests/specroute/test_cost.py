"""The measured decoding step cost the zoo records for every model."""

from transformers import AutoModelForCausalLM

from specroute.zoo.cost import decode_step_ms


def test_decode_step_ms_measures_a_cached_one_token_forward(tiny_zoo):
    model = AutoModelForCausalLM.from_pretrained(tiny_zoo.target).eval()
    ms = decode_step_ms(model, context=32, steps=5)
    assert 0 < ms < 1000
    assert not model.training


def test_step_cost_ratio_alternates_drafter_and_target(tiny_zoo):
    from specroute.zoo.cost import step_cost_ratio
    target = AutoModelForCausalLM.from_pretrained(tiny_zoo.target).eval()
    drafter = AutoModelForCausalLM.from_pretrained(tiny_zoo.gpt2_drafter).eval()
    cost = step_cost_ratio(drafter, target, rounds=3, steps=3, context=16)
    assert set(cost) == {"ratio", "drafter_ms", "target_ms"}
    assert cost["ratio"] > 0 and cost["drafter_ms"] > 0 and cost["target_ms"] > 0
