"""A drafter service: one drafter running the speculative loop against remote verifiers.

`DrafterService.stream(request)` tokenises the prompt with the target's tokenizer, opens a
session on a verifier replica (`verifier_service.client`), and runs the same loop as the
in-process engine (`drafter_service.generation.speculate`), turning each round into a
`ChunkOut`. Expected failures end the stream with an error chunk that carries a gRPC status
name: INVALID_ARGUMENT for a prompt the verifier refuses (beyond the context, say), UNAVAILABLE
when no verifier replica can take the session, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED. The
verifier session and the draft session are closed however the stream ends, cancellation
included.

This module knows nothing about Ray or routing; `drafter_service.deployment` hosts it on Serve.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

from transformers import AutoTokenizer

from drafter_service.base import Drafter, create_drafter
from drafter_service.contracts import ChunkOut, GenerationRequest, ServiceErrorInfo
from core.reports import GenerationReport
from drafter_service.generation import StopConditions, speculate
from core.errors import ServiceError
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
            yield _error("INVALID_ARGUMENT", "the prompt is empty: it has no tokens")
            return
        try:
            session = self.pool.open(ids, request.sampling, request.request_id, request.timeout_s,
                                     request.max_new_tokens)
        except ServiceError as err:
            yield _error(err.code.value, err.message)
            return
        draft = None
        try:
            draft = self.drafter.start(ids, request.sampling)
            stats = GenerationReport(prefill_time_s=session.prefill_time_s)
            stop = StopConditions(request.max_new_tokens, session.eos_token_ids, tuple(request.stop))
            replica_sent = ""
            for chunk in speculate(session, draft, self.tokenizer, ids, stop, stats):
                if cancelled.is_set():
                    return
                r = chunk.round
                round_info = None if r is None else {
                    "num_drafted": r.num_drafted, "num_accepted": r.num_accepted, "num_emitted": r.num_emitted,
                    "draft_ms": r.draft_time_s * 1e3, "verify_ms": r.verify_time_s * 1e3, "rounds": 1}
                final = None
                if chunk.finish_reason is not None:
                    final = {**stats.as_dict(), "prefill_time_s": session.prefill_time_s, "prompt_tokens": len(ids),
                             "verifier_replica": session.replica, "failovers": session.failovers}
                replica = session.replica if session.replica != replica_sent else ""
                replica_sent = session.replica
                yield ChunkOut(chunk.token_ids, chunk.text, round_info, chunk.finish_reason, final,
                               verifier_replica=replica)
        except ServiceError as err:
            yield _error(err.code.value, err.message)
        finally:
            session.close()
            if draft is not None:
                draft.close()


def _error(code: str, message: str) -> ChunkOut:
    return ChunkOut(error=ServiceErrorInfo(code, message))
