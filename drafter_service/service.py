"""A drafter service: one drafter running the speculative loop against remote verifiers.

`DrafterService.stream(request)` tokenises the prompt with the target's tokenizer, opens a
session on a verifier replica (`verifier_service.client`), and runs the same loop as the
in-process engine (`drafter_service.generation.speculate`), turning each round into a
`ChunkOut` that carries the round's `RoundReport`; the last one carries the generation's
`GenerationReport`, with the prompt's length, the verifier replica and the failovers filled in
here. Expected failures end the stream with an error chunk that carries a
`core.errors.ServiceError`: INVALID_ARGUMENT for an empty prompt or one the verifier refuses
(beyond the context, say), UNAVAILABLE when no verifier replica can take the session,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED. The verifier session and the draft session are closed
however the stream ends, cancellation included.

It logs one INFO line when a request starts (drafter, verifier replica, prompt tokens) and one
when it ends (tokens, rounds, tau, failovers; or how it failed). The caller's thread carries the
request's id (`core.logs.request_scope`, entered by the deployment's worker).

This module knows nothing about Ray or routing; `drafter_service.deployment` hosts it on Serve.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

from transformers import AutoTokenizer

from core.errors import Code, ServiceError
from core.reports import GenerationReport
from drafter_service.base import Drafter, create_drafter
from drafter_service.contracts import ChunkOut, GenerationRequest
from drafter_service.generation import StopConditions, speculate
from verifier_service.client import VerifierPool

log = logging.getLogger(__name__)


class DrafterService:
    def __init__(self, name: str, drafter: Drafter, tokenizer, pool: VerifierPool):
        if drafter.tokenizer is not None and drafter.tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"drafter {name!r} does not share the target's tokenizer")
        self.name, self.drafter, self.tokenizer, self.pool = name, drafter, tokenizer, pool

    @classmethod
    def load(cls, name: str, kind: str, options: dict, target_dir: str | Path, pool: VerifierPool) -> "DrafterService":
        return cls(name, create_drafter(kind, options), AutoTokenizer.from_pretrained(target_dir), pool)

    def stream(self, request: GenerationRequest, cancelled: threading.Event | None = None) -> Iterator[ChunkOut]:
        cancelled = cancelled or threading.Event()
        ids = self.tokenizer.encode(request.prompt, add_special_tokens=False)
        if not ids:
            yield _error(ServiceError(Code.INVALID_ARGUMENT, "the prompt is empty: it has no tokens"))
            return
        try:
            session = self.pool.open(ids, request.sampling, request.request_id, request.timeout_s,
                                     request.max_new_tokens, self.drafter.state_request)
        except ServiceError as err:
            log.info("request failed: drafter %s, %d prompt tokens, no verifier session: %s %s", self.name,
                     len(ids), err.code.name, err.message)
            yield _error(err)
            return
        log.info("request started: drafter %s, verifier %s, %d prompt tokens", self.name, session.replica, len(ids))
        draft = None
        ended = "stopped early"  # the consumer went away, or a bug (the caller reports it)
        try:
            draft = self.drafter.start(ids, request.sampling)
            report = GenerationReport(prefill_time_s=session.prefill_time_s, prompt_tokens=len(ids))
            stop = StopConditions(request.max_new_tokens, session.eos_token_ids, tuple(request.stop))
            replica_sent = ""
            for chunk in speculate(session, draft, self.tokenizer, ids, stop, report):
                if cancelled.is_set():
                    ended = "cancelled"
                    return
                final = None
                if chunk.finish_reason is not None:
                    report.prefill_time_s = session.prefill_time_s  # a failover prefills again
                    report.verifier_replica, report.failovers = session.replica, session.failovers
                    final = report
                    ended = (f"{report.num_generated} tokens, {report.rounds} rounds, tau {report.tau:.2f}, "
                             f"{report.failovers} failovers, {chunk.finish_reason}")
                replica = session.replica if session.replica != replica_sent else ""
                replica_sent = session.replica
                yield ChunkOut(chunk.token_ids, chunk.text, chunk.round, chunk.finish_reason, final,
                               verifier_replica=replica)
        except ServiceError as err:
            ended = f"failed: {err.code.name} {err.message}"
            yield _error(err)
        finally:
            log.info("request ended: %s", ended)
            session.close()
            if draft is not None:
                draft.close()


def _error(err: ServiceError) -> ChunkOut:
    return ChunkOut(error=err)
