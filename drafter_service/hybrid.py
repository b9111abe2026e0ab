"""The `hybrid` drafter: a model's dynamic tree, with lookup branches grafted onto it.

A small model drafts well where the next tokens follow from local statistics and poorly where
the target copies: a span of the prompt (prompt lookup, Saxena 2023), its own earlier output, or
text it learned by heart. Lookups draft those well and nothing else. The hybrid drafts the
model's tree (`drafter_service.model_drafter`, or a feature drafter's when `path` is one:
`drafter_service.feature_drafter`; the hybrid then asks for the states its base reads and passes
them on), then adds to the same tree, within `lookup_nodes` more nodes:
1. continuations of the context's suffix found earlier in the context (`drafter_service.ngram`);
2. with a `datastore`, the most frequent continuations of the suffix in a task's datastore
   (REST, He et al., 2024; `drafter_service.datastore`).
A grafted continuation shares the model's nodes where it agrees with them and branches off
where it does not, so one verification checks both.

Greedy only. Under sampling the verifier's recursive rejection needs every child of a node drawn
from that node's q, in draw order (`drafter_service.model_drafter`); a copied token was not, so
sampled requests get the model's tree alone, and stay lossless.

The model session sees the verdict on its own nodes only: an accepted path leaves the model's
nodes at most once (a grafted node's children are all grafted), and the accepted tokens past
that point reach the model as committed context, which it runs in the next round.

This module knows nothing about how the model or the datastore were made.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from drafter_service.base import (DRAFTER_FILE, DraftLimit, DraftSession, Drafter, create_drafter, directory_kind,
                                  register_drafter)
from drafter_service.datastore import Datastore
from drafter_service.model_drafter import TreeConfig
from drafter_service.ngram import NgramConfig, NgramDrafter, Trie
from core.contracts import DraftTree, Verdict
from core.sampling import SamplingParams
from core.states import HiddenStates

MODEL_KIND = "model"
"""The kind of a plain model directory (one that records no kind)."""


class HybridConfig(TreeConfig):
    """A model-backed drafter's directory and tree settings, and the lookups grafted onto its trees."""

    path: Path = Field(description="The drafter whose trees the lookups graft onto: a model directory, or a "
                                   "directory that records its kind (a feature drafter's).")
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field("float32", description="One of float32, bfloat16, float16.")
    lookup: NgramConfig = Field(default_factory=NgramConfig, description="Prompt lookup in the context.")
    datastore: Path | None = Field(None, description="A task datastore file (`.npz`, written by `Datastore.save`).")
    datastore_matches: int = Field(64, ge=1, description="Occurrences of the suffix read from the datastore.")
    lookup_nodes: int = Field(16, ge=1, description="Most nodes the lookups add to the model's tree.")

    @field_validator("path")
    @classmethod
    def _is_drafter_dir(cls, path: Path) -> Path:
        if not (path / "config.json").is_file() and directory_kind(path) is None:
            raise ValueError(f"{path} is not a drafter directory: it has neither config.json nor {DRAFTER_FILE}")
        return path

    @field_validator("datastore")
    @classmethod
    def _datastore_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"datastore {path} does not exist")
        return path

    @model_validator(mode="after")
    def _no_draft_ahead(self) -> "HybridConfig":
        if self.draft_ahead:
            raise ValueError("a hybrid drafter does not draft ahead: set draft_ahead to 0")
        return self


@register_drafter("hybrid")
class HybridDrafter(Drafter):
    Config = HybridConfig

    def __init__(self, config: HybridConfig):
        self.config = config
        base = directory_kind(config.path) or MODEL_KIND
        if base == self.kind:
            raise ValueError(f"{config.path}: a hybrid cannot graft onto another hybrid")
        options = config.model_dump(include={"path", "device", "dtype", *TreeConfig.model_fields})
        self.model = create_drafter(base, options)
        self.tokenizer = self.model.tokenizer
        self.state_request = self.model.state_request
        self.lookup = NgramDrafter(config.lookup)
        self.datastore = Datastore.load(config.datastore) if config.datastore is not None else None

    @property
    def name(self) -> str:
        return self.model.name

    def record_to(self, recorder) -> bool:
        """Its model part's nodes are logged; the lookups' grafted nodes are not."""
        return self.model.record_to(recorder)

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> "HybridSession":
        return HybridSession(self, prompt_ids, sampling)


class HybridSession(DraftSession):
    def __init__(self, drafter: HybridDrafter, prompt_ids: list[int], sampling: SamplingParams):
        super().__init__(prompt_ids, sampling)
        self.drafter = drafter
        self.model = drafter.model.start(prompt_ids, sampling)
        self.lookup = drafter.lookup.start(prompt_ids, sampling)
        self._model_nodes = 1  # nodes of the last proposed tree that the model drafted, root included

    def prime(self, states: HiddenStates) -> None:
        self.model.prime(states)

    def propose(self, limit: DraftLimit) -> DraftTree:
        tree = self.model.propose(limit)
        self._model_nodes = tree.num_nodes
        if not self.sampling.greedy or not limit.allows_drafting:
            return tree
        config = self.drafter.config
        trie = Trie.from_tree(tree, min(limit.max_nodes, tree.num_nodes + config.lookup_nodes))
        depth = min(config.lookup.max_depth, limit.max_depth)
        self.lookup.graft(trie, depth)
        if self.drafter.datastore is not None:
            for prefix in self.drafter.datastore.ranked_prefixes(self.context, depth, config.datastore_matches):
                if trie.is_full:
                    break
                trie.insert(prefix)
        return trie.to_tree(deterministic=False)

    def observe(self, verdict: Verdict) -> None:
        on_model = []
        for node in verdict.accepted_nodes:
            if node >= self._model_nodes:
                break
            on_model.append(node)
        # The model's view: its own nodes on the accepted path; every emitted token is committed.
        self.model.observe(replace(verdict, accepted_nodes=tuple(on_model)))
        self.lookup.observe(verdict)
        super().observe(verdict)

    def close(self) -> None:
        self.model.close()
