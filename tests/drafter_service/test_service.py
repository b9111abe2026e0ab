"""The drafter service without Ray: `DrafterService.stream` against a real verifier gRPC server on
loopback, with the tiny target and a model drafter."""

import pytest

from core.errors import Code
from core.sampling import SamplingParams
from drafter_service.contracts import ChunkOut, GenerationRequest
from specroute.engine import Engine
from tests.conftest import PROMPTS

MAX_NEW = 16


def _run(service, prompt: str, max_new: int = MAX_NEW) -> list[ChunkOut]:
    return list(service.stream(GenerationRequest(prompt, max_new, SamplingParams(), request_id="t")))


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_greedy_output_is_the_targets_own(service, target, prompt):
    chunks = _run(service, prompt)
    own = Engine(target).generate(target.tokenizer.encode(prompt, add_special_tokens=False), MAX_NEW)
    assert [t for c in chunks for t in c.token_ids] == own.token_ids
    assert "".join(c.text for c in chunks) == own.text
    assert all(c.error is None for c in chunks) and chunks[-1].finish_reason == own.finish_reason


def test_the_reports_counts_add_up(service, target):
    prompt = PROMPTS[0]
    chunks = _run(service, prompt)
    report = chunks[-1].report
    assert all(c.report is None for c in chunks[:-1])
    rounds = [c.round for c in chunks if c.round is not None]
    assert report.rounds == len(rounds) == sum(r.rounds for r in rounds)
    for name in ("num_drafted", "num_accepted", "num_emitted", "rounds_drafted_ahead"):
        assert getattr(report, name) == sum(getattr(r, name) for r in rounds), name
    assert report.num_emitted == report.num_accepted + report.rounds  # one bonus token a round
    assert report.num_generated == sum(len(c.token_ids) for c in chunks) <= MAX_NEW
    assert report.prompt_tokens == len(target.tokenizer.encode(prompt, add_special_tokens=False))
    assert (report.verifier_replica, report.failovers) == ("v0", 0)
    assert report.prefill_time_s > 0 and report.wall_time_s > 0
    assert chunks[0].verifier_replica == "v0" and all(not c.verifier_replica for c in chunks[1:])
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged.then(c)
    assert merged.round.num_emitted == report.num_emitted and merged.report is report
    assert merged.token_ids == tuple(t for c in chunks for t in c.token_ids)


@pytest.mark.parametrize("prompt", ["", "word " * 400], ids=["empty", "over-context"])
def test_a_prompt_it_cannot_serve_ends_with_an_invalid_argument_chunk(service, prompt):
    chunks = _run(service, prompt)
    assert len(chunks) == 1 and chunks[0].last and chunks[0].error is not None
    assert chunks[0].error.code is Code.INVALID_ARGUMENT


def test_the_deployment_merges_rounds_that_arrive_together_but_never_an_error():
    import asyncio

    from core.errors import ServiceError
    from core.reports import RoundReport
    from drafter_service.deployment import coalesced

    async def run(items, merge=True):
        queue = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        return [c async for c in coalesced(queue, 10.0, merge)]

    rounds = [ChunkOut((i,), str(i), RoundReport(num_emitted=1)) for i in range(3)]
    last = ChunkOut((3,), "3", RoundReport(num_emitted=1), "length")
    out = asyncio.run(run([*rounds, last, None]))
    assert [c.text for c in out] == ["0", "123"]  # the first goes out at once; the rest arrived together
    assert out[1].round.rounds == 3 and out[1].finish_reason == "length"
    error = ChunkOut(error=ServiceError(Code.UNAVAILABLE, "gone"))
    out = asyncio.run(run([*rounds, error, None]))
    assert [c.text for c in out] == ["0", "12", ""] and out[-1].error is error.error
    assert [c.text for c in asyncio.run(run([*rounds, None], merge=False))] == ["0", "1", "2"]
