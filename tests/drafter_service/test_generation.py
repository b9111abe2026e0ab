"""The speculative loop: greedy losslessness against HF generate, stop conditions, edge cases."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from drafter_service.base import DraftLimit, create_drafter
from core.reports import GenerationReport
from drafter_service.generation import (FINISH_CONTEXT, FINISH_EOS, FINISH_LENGTH, FINISH_STOP, StopConditions, collect, speculate)
from specroute.engine import Engine
from tests.conftest import PROMPTS
from core.sampling import SamplingParams
from verifier_service.session import VerifierSession

MAX_NEW = 24
TREE_SHAPES = {
    "chain": {"top_k": 1, "max_depth": 5, "max_nodes": 6},
    "eagle2": {"top_k": 4, "max_depth": 6, "max_nodes": 16},
    "wide-shallow": {"top_k": 6, "max_depth": 2, "max_nodes": 12},
    "static-deep": {"top_k": 2, "max_depth": 8, "max_nodes": 12, "budget": {"adaptive": False}},
    "static-chain": {"top_k": 1, "max_depth": 8, "max_nodes": 9, "budget": {"adaptive": False}},
}


@pytest.fixture(scope="module")
def hf_reference(tiny_zoo, target):
    model = AutoModelForCausalLM.from_pretrained(tiny_zoo.target).eval()
    refs = {}
    for prompt in PROMPTS:
        ids = target.tokenizer.encode(prompt)
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=MAX_NEW,
                             pad_token_id=tiny_zoo.eos_id)
        refs[prompt] = out[0, len(ids):].tolist()
    return refs


def drafter_for(tiny_zoo, family, shape="eagle2"):
    if family == "ngram":
        return create_drafter("ngram", {})
    if family == "none":
        return None
    path = {"llama": tiny_zoo.llama_drafter, "gpt2": tiny_zoo.gpt2_drafter, "self": tiny_zoo.self_drafter}[family]
    return create_drafter("model", {"path": path, **TREE_SHAPES[shape]})


@pytest.mark.parametrize("family", ["none", "ngram", "llama", "gpt2", "self"])
def test_greedy_is_lossless_over_prompts(tiny_zoo, target, hf_reference, family):
    engine = Engine(target, drafter_for(tiny_zoo, family))
    accepted = 0
    for prompt in PROMPTS:
        result = engine.generate(prompt, max_new_tokens=MAX_NEW)
        assert result.token_ids == hf_reference[prompt], prompt
        accepted += result.stats.num_accepted
    if family in ("llama", "self"):
        assert accepted > 0, "the test should exercise accepted drafts"


@pytest.mark.parametrize("shape", sorted(TREE_SHAPES))
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_is_lossless_over_tree_shapes(tiny_zoo, target, hf_reference, family, shape):
    engine = Engine(target, drafter_for(tiny_zoo, family, shape))
    for prompt in PROMPTS[:6]:
        assert engine.generate(prompt, max_new_tokens=MAX_NEW).token_ids == hf_reference[prompt], prompt


def test_sampling_is_seeded(tiny_zoo, target):
    engine = Engine(target, drafter_for(tiny_zoo, "llama"))
    params = SamplingParams(temperature=0.9, top_p=0.9, seed=123)
    first = engine.generate(PROMPTS[0], 30, params)
    assert first.token_ids == engine.generate(PROMPTS[0], 30, params).token_ids
    other = engine.generate(PROMPTS[0], 30, params.model_copy(update={"seed": 124}))
    assert other.token_ids != first.token_ids


def test_max_new_tokens_zero_and_one(tiny_zoo, target, hf_reference):
    engine = Engine(target, drafter_for(tiny_zoo, "self"))
    zero = engine.generate(PROMPTS[1], max_new_tokens=0)
    assert zero.token_ids == [] and zero.text == "" and zero.finish_reason == FINISH_LENGTH
    assert zero.stats.rounds == 0
    one = engine.generate(PROMPTS[1], max_new_tokens=1)
    assert one.token_ids == hf_reference[PROMPTS[1]][:1]
    assert one.stats.num_drafted == 0, "with one token left there is nothing to draft"


def test_eos_inside_an_accepted_run(tiny_zoo, target, hf_reference):
    """Declare the 6th greedy token an EOS: the self drafter accepts past it in one round, and
    generation must stop right at it, like HF generate."""
    prompt = PROMPTS[3]
    ids = target.tokenizer.encode(prompt)
    eos = hf_reference[prompt][5]
    expected = hf_reference[prompt][: hf_reference[prompt].index(eos) + 1]
    drafter = drafter_for(tiny_zoo, "self", "static-chain")
    verifier = VerifierSession(target, ids, SamplingParams())
    stats = GenerationReport()
    chunks = list(speculate(verifier, drafter.start(ids, SamplingParams()), target.tokenizer, ids,
                            StopConditions(MAX_NEW, frozenset({eos})), stats))
    result = collect(iter(chunks), stats)
    assert result.token_ids == expected
    assert result.finish_reason == FINISH_EOS
    last = chunks[-1]
    assert last.round.num_emitted > len(last.token_ids), "EOS should fall inside an accepted run"


def test_stop_strings(tiny_zoo, target):
    engine = Engine(target, drafter_for(tiny_zoo, "self"))
    full = engine.generate(PROMPTS[0], max_new_tokens=MAX_NEW)
    stop = full.text[6:9]
    assert stop and "\ufffd" not in stop
    result = engine.generate(PROMPTS[0], max_new_tokens=MAX_NEW, stop_strings=(stop,))
    assert result.finish_reason == FINISH_STOP
    assert result.text == full.text[: full.text.index(stop)]
    assert len(result.token_ids) < len(full.token_ids)
    assert result.token_ids == full.token_ids[: len(result.token_ids)]


def test_streamed_chunks_add_up(tiny_zoo, target, hf_reference):
    engine = Engine(target, drafter_for(tiny_zoo, "llama"))
    stats = GenerationReport()
    chunks = list(engine.stream(PROMPTS[2], max_new_tokens=MAX_NEW, stats=stats))
    assert [t for c in chunks for t in c.token_ids] == hf_reference[PROMPTS[2]]
    assert all(c.round is not None for c in chunks)
    assert stats.rounds == len(chunks)
    assert stats.num_emitted == sum(c.round.num_emitted for c in chunks)
    assert stats.tau == pytest.approx(stats.num_emitted / stats.rounds)
    assert stats.num_emitted == stats.num_accepted + stats.rounds, "tau counts the bonus token"
    assert chunks[-1].finish_reason in (FINISH_LENGTH, FINISH_EOS)


def test_prompt_at_the_context_limit(tiny_zoo, target):
    engine = Engine(target, drafter_for(tiny_zoo, "llama"))
    prompt = [(5 * i) % 40 + 1 for i in range(tiny_zoo.max_positions)]
    result = engine.generate(prompt, max_new_tokens=10)
    assert len(result.token_ids) == 1 and result.finish_reason == FINISH_CONTEXT
    near = engine.generate(prompt[:-4], max_new_tokens=10)
    assert len(near.token_ids) == 5 and near.finish_reason == FINISH_CONTEXT


class _Remote:
    """An in-process verifier session behind the remote verifier's split verify (submit, then
    collect), so the loop drafts ahead as it does against a verifier replica."""

    def __init__(self, session: VerifierSession):
        self.session, self.tree = session, None

    def __getattr__(self, name):
        return getattr(self.session, name)

    def submit(self, tree):
        self.tree = tree

    def collect(self):
        return self.session.verify(self.tree)


@pytest.mark.parametrize("family", ["llama", "self"])
def test_drafting_ahead_is_lossless_and_hits(tiny_zoo, target, hf_reference, family):
    path = {"llama": tiny_zoo.llama_drafter, "self": tiny_zoo.self_drafter}[family]
    drafter = create_drafter("model", {"path": path, **TREE_SHAPES["eagle2"], "draft_ahead": 2})
    rounds = ahead = 0
    for prompt in PROMPTS[:6]:
        ids = target.tokenizer.encode(prompt)
        stats = GenerationReport()
        verifier = _Remote(VerifierSession(target, ids, SamplingParams()))
        result = collect(speculate(verifier, drafter.start(ids, SamplingParams()), target.tokenizer, ids,
                                   StopConditions(MAX_NEW), stats), stats)
        assert result.token_ids == hf_reference[prompt], prompt
        rounds, ahead = rounds + stats.rounds, ahead + stats.rounds_drafted_ahead
    assert ahead > 0, "some guessed verdicts should come true"
    if family == "self":  # the target drafting for itself: its best path and next token are the verdict
        assert ahead >= rounds / 2


def test_a_failure_while_drafting_ahead_does_not_cost_the_request(tiny_zoo, target, hf_reference):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter, **TREE_SHAPES["eagle2"], "draft_ahead": 2})
    prompt = PROMPTS[2]
    ids = target.tokenizer.encode(prompt)
    session = drafter.start(ids, SamplingParams())

    def broken(*args):
        raise RuntimeError("a bug in drafting ahead")
    session.draft_ahead = broken
    stats = GenerationReport()
    result = collect(speculate(_Remote(VerifierSession(target, ids, SamplingParams())), session, target.tokenizer,
                               ids, StopConditions(MAX_NEW), stats), stats)
    assert result.token_ids == hf_reference[prompt]
    assert stats.rounds_drafted_ahead == 0


def test_drafting_ahead_only_with_a_remote_verifier_and_greedy(tiny_zoo, target):
    drafter = create_drafter("model", {"path": tiny_zoo.self_drafter, "draft_ahead": 2})
    ids = target.tokenizer.encode(PROMPTS[0])
    stats = GenerationReport()
    collect(speculate(VerifierSession(target, ids, SamplingParams()), drafter.start(ids, SamplingParams()),
                      target.tokenizer, ids, StopConditions(MAX_NEW), stats), stats)
    assert stats.rounds_drafted_ahead == 0, "in one process there is nothing to overlap"
    sampled = drafter.start(ids, SamplingParams(temperature=0.8, seed=1))
    assert sampled.max_guesses == 0


def test_guesses_leave_the_session_unchanged(tiny_zoo, target):
    """A session that drafts ahead proposes what one that does not would: after a verdict nobody
    guessed it observes as usual, and after a guessed one it adopts the guess, whose tree is the
    tree the other session then proposes."""
    drafter = create_drafter("model", {"path": tiny_zoo.self_drafter, **TREE_SHAPES["eagle2"], "draft_ahead": 3})
    ids = target.tokenizer.encode(PROMPTS[1])
    plain, ahead = drafter.start(ids, SamplingParams()), drafter.start(ids, SamplingParams())
    verifier = VerifierSession(target, ids, SamplingParams())
    tree, adopted = ahead.propose(DraftLimit(verifier.max_tree_nodes, verifier.max_draft_depth)), 0
    for _ in range(6):
        limit = DraftLimit(verifier.max_tree_nodes, verifier.max_draft_depth)
        assert plain.propose(limit) == tree
        guesses = ahead.draft_ahead(tree, lambda emitted: DraftLimit(limit.max_nodes, limit.max_depth - emitted), 3)
        assert 0 < len(guesses) <= 3
        verdict = verifier.verify(tree)
        plain.observe(verdict)
        hit = next((g for g in guesses if g.matches(verdict)), None)
        if hit is None:
            ahead.observe(verdict)
            tree = ahead.propose(DraftLimit(verifier.max_tree_nodes, verifier.max_draft_depth))
        else:
            ahead.adopt(hit)
            tree, adopted = hit.tree, adopted + 1
        assert ahead.context == plain.context == verifier.committed
        assert tree.tokens[0] == verifier.root
    assert adopted > 0
