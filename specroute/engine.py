"""The in-process engine: a target and (optionally) one drafter, generating in one process.

    engine = Engine.load("zoo/target", drafter="zoo/drafter-code")   # or "ngram", or None
    result = engine.generate("def fib(n):", max_new_tokens=64)
    print(result.text, result.stats.tau)
    for chunk in engine.stream("def fib(n):", max_new_tokens=64):
        print(chunk.text, end="")

A drafter spec is "none" (plain target decoding), "ngram", a drafter directory (a model, or a
directory that records its kind, such as a feature drafter's), or a `Drafter`.
This module wires the pieces together; it holds no algorithm of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from drafter_service.base import Drafter, create_drafter, directory_kind, drafter_config_model
from core.reports import GenerationReport
from drafter_service.generation import Chunk, Generation, StopConditions, collect, speculate
from core.sampling import SamplingParams
from verifier_service.session import DEFAULT_MAX_TREE_NODES, VerifierSession
from verifier_service.target import TargetModel

NO_DRAFTER = "none"
MODEL_KIND = "model"  # the kind a model directory is loaded as


def load_drafter(spec: str | Path | Drafter | None, device: str = "auto", dtype: str = "float32",
                 tree: dict | None = None) -> Drafter | None:
    """'none' or None -> None; a registered kind without a model ('ngram') -> that drafter;
    a directory -> the drafter of the kind it records (a feature drafter, say), else a model
    drafter. `tree` overrides the drafter's tree settings."""
    if spec is None or isinstance(spec, Drafter):
        return spec
    spec = str(spec)
    if spec == NO_DRAFTER:
        return None
    kind, options = drafter_spec(spec)
    if Path(spec).is_dir():
        options |= {"device": device, "dtype": dtype}
    return create_drafter(kind, options | (tree or {}))


def drafter_spec(spec: str | Path) -> tuple[str, dict]:
    """A drafter spec's (kind, options): a directory -> (the kind it records, else MODEL_KIND,
    {"path": DIR}); otherwise a registered kind with its default settings (ValueError from the
    registry when it is none)."""
    if Path(spec).is_dir():
        return directory_kind(spec) or MODEL_KIND, {"path": str(spec)}
    drafter_config_model(str(spec))  # unknown kind: ValueError naming the known ones
    return str(spec), {}


class Engine:
    def __init__(self, target: TargetModel, drafter: Drafter | None = None,
                 max_tree_nodes: int = DEFAULT_MAX_TREE_NODES):
        if drafter is not None and drafter.tokenizer is not None \
                and drafter.tokenizer.get_vocab() != target.tokenizer.get_vocab():
            raise ValueError(f"drafter {drafter.name!r} does not share the target's tokenizer: "
                             "speculative decoding needs one vocabulary")
        self.target = target
        self.drafter = drafter
        self.max_tree_nodes = max_tree_nodes

    @classmethod
    def load(cls, target_dir: str | Path, drafter: str | Path | Drafter | None = None,
             device: str = "auto", dtype: str = "float32", tree: dict | None = None) -> "Engine":
        target = TargetModel.from_dir(target_dir, device=device, dtype=dtype)
        return cls(target, load_drafter(drafter, device=device, dtype=dtype, tree=tree))

    @property
    def tokenizer(self):
        return self.target.tokenizer

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=False)
            if not ids:
                raise ValueError("the prompt is empty")
            return ids
        return list(prompt)

    def stream(self, prompt: str | list[int], max_new_tokens: int = 64, sampling: SamplingParams | None = None,
               stop_strings: tuple[str, ...] = (), stats: GenerationReport | None = None) -> Iterator[Chunk]:
        """Yields one Chunk per round; `stats`, if given, is filled in as rounds complete."""
        sampling = sampling or SamplingParams()
        stats = stats if stats is not None else GenerationReport()
        prompt_ids = self.encode(prompt)
        start = time.perf_counter()
        states = self.drafter.state_request if self.drafter is not None else None
        verifier = VerifierSession(self.target, prompt_ids, sampling, self.max_tree_nodes, states)  # prefills
        stats.prefill_time_s = time.perf_counter() - start
        draft_session = self.drafter.start(prompt_ids, sampling) if self.drafter is not None else None
        stop = StopConditions(max_new_tokens, self.target.eos_token_ids, tuple(stop_strings))
        try:
            yield from speculate(verifier, draft_session, self.tokenizer, prompt_ids, stop, stats)
        finally:
            if draft_session is not None:
                draft_session.close()

    def generate(self, prompt: str | list[int], max_new_tokens: int = 64, sampling: SamplingParams | None = None,
                 stop_strings: tuple[str, ...] = ()) -> Generation:
        stats = GenerationReport()
        return collect(self.stream(prompt, max_new_tokens, sampling, stop_strings, stats), stats)
