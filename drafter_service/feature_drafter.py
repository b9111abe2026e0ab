"""The `feature` drafter: EAGLE-style drafting from the target's own hidden states.

The network (`drafter_service.feature_model`) reads pairs (f_t, x_{t+1}): the target's feature
after token t and the next token. Committed pairs carry the target's real features, which reach
the session with the verifier's prefill and verdicts (`Drafter.state_request`: the last layer
before the final norm, as EAGLE reads; `core.states`). A tree node's pair carries its parent's
predicted feature (the drafter's own output g at the parent) and the node's token (EAGLE, Li et
al., 2024). So after `prime` and each `observe`, the session holds one target feature per
committed token but the last, and the pair ending at the root is the last one.

Trees are the model drafter's EAGLE-2 dynamic trees: this session is a `ModelDraftSession` whose
forwards run the feature network instead of a causal LM (`_run_context`, `_forward_nodes`), so
tree shape, lossless sampling (Gumbel-top-k over the truncated q, the node budget spent at
expansion), adaptive depth and the verdict bookkeeping are that module's, unchanged. Two things
differ:
- after a verdict it keeps no tree node's cache entry: an accepted node ran on a predicted
  feature, and the next round runs its pair again on the target's real one (as EAGLE does);
- it does not draft ahead: the next tree needs the verdict's features, which only the verdict
  brings. `draft_ahead` is refused in its configuration.

Position specialists (PosS): the context pairs and the root run at step 0, a node at depth d at
step d; the network picks the specialist layer for the step.

The directory (`specroute_drafter.json`) names the target it was trained for; its embedding,
final norm and head are loaded from there. This module knows nothing about how the network was
trained, nor about the verifier beyond the states it sends.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from transformers import AutoConfig, AutoTokenizer

from core.contracts import DraftTree, Verdict
from core.hf import DEFAULT_CONTEXT, context_window, resolve_device
from core.sampling import SamplingParams
from core.states import HiddenStates, StateRequest
from core.tree_mask import additive_mask
from drafter_service.base import DraftLimit, Drafter, register_drafter
from drafter_service.feature_model import CONFIG_FILE, FeatureDraftModel, FeatureDrafterFile
from drafter_service.model_drafter import ModelDraftSession, TreeConfig, _Candidates

FEATURE_LAYER = -1
"""The target layer the network reads: the last decoder layer's output, before the final norm."""


class FeatureDrafterConfig(TreeConfig):
    """A feature drafter: its directory, placement, and the shape of its trees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Field(description=f"A feature drafter directory (with {CONFIG_FILE}, written by FeatureDraftModel.save).")
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field("float32", description="One of float32, bfloat16, float16.")
    states_dtype: str = Field("float16", description="The dtype the verifier sends the features in.")

    @field_validator("path")
    @classmethod
    def _is_feature_dir(cls, path: Path) -> Path:
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"{path} is not a feature drafter directory: it has no {CONFIG_FILE}")
        return path

    @model_validator(mode="after")
    def _no_draft_ahead(self) -> "FeatureDrafterConfig":
        if self.draft_ahead:
            raise ValueError("a feature drafter does not draft ahead (its next tree needs the verdict's "
                             "features): set draft_ahead to 0")
        return self


@register_drafter("feature")
class FeatureDrafter(Drafter):
    Config = FeatureDrafterConfig

    def __init__(self, config: FeatureDrafterConfig):
        self.config = config
        self.model = FeatureDraftModel.from_dir(config.path, device=resolve_device(config.device), dtype=config.dtype)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(config.path)
        self.file = FeatureDrafterFile.model_validate_json((config.path / CONFIG_FILE).read_text())
        self.vocab_size: int = self.model.vocab_size
        self.max_context: int = context_window(AutoConfig.from_pretrained(self.model.target_dir)) or DEFAULT_CONTEXT
        self.state_request = StateRequest(layers=(self.file.feature_layer,), dtype=config.states_dtype)
        self.hidden_size: int = self.model.hidden_size
        self.stop = config.load_stop_model(self.hidden_size)
        self.recorder = None

    def record_to(self, recorder) -> bool:
        self.recorder = recorder
        return True

    @property
    def name(self) -> str:
        return self.config.path.name

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> "FeatureDraftSession":
        return FeatureDraftSession(self, prompt_ids, sampling)


class FeatureDraftSession(ModelDraftSession):
    """A model draft session whose forwards run the feature network on the target's features."""

    keeps_node_entries = False

    def __init__(self, drafter: FeatureDrafter, prompt_ids: list[int], sampling: SamplingParams):
        super().__init__(drafter, prompt_ids, sampling)
        self.max_guesses = 0
        self._features: list[torch.Tensor] = []  # target features, [rows, H] each; rows = len(context) - 1
        self._rows = 0
        self._node_features: dict[int, torch.Tensor] = {}  # candidate -> its predicted feature g

    # --- the target's features ---------------------------------------------------------------

    def prime(self, states: HiddenStates) -> None:
        self._take(states)

    def observe(self, verdict: Verdict) -> None:
        if verdict.states is None:
            raise ValueError("a feature drafter needs the target's states with every verdict: open the verifier "
                             "session with the drafter's state_request")
        self._take(verdict.states)
        super().observe(verdict)

    def _take(self, states: HiddenStates) -> None:
        if states.layers != 1:
            raise ValueError(f"a feature drafter reads one target layer; the states have {states.layers}")
        if states.rows:
            self._features.append(states.tensor()[:, 0, :])
            self._rows += states.rows

    def _feature_rows(self, start: int, stop: int) -> torch.Tensor:
        if len(self._features) > 1:
            self._features = [torch.cat(self._features)]
        return self._features[0][start:stop]

    # --- the forwards ModelDraftSession delegates ----------------------------------------------

    def propose(self, limit: DraftLimit) -> DraftTree:
        if self._rows != len(self.context) - 1:
            raise ValueError(f"the session holds {self._rows} target features for {len(self.context)} committed "
                             "tokens; it needs one per token but the last (`prime`, then every verdict's)")
        if len(self.context) < 2:  # a one-token prompt: no pair to start from yet
            return DraftTree.root_only(self.context[-1])
        self._node_features = {}
        return super().propose(limit)

    def _new_cache(self):
        return self.drafter.model.new_cache()

    def _install_hidden_tap(self) -> None:
        pass  # its hidden states are the features it predicts, kept per node

    def _hidden_of(self, nodes: list[int]) -> torch.Tensor:
        return torch.stack([self._node_features[n] for n in nodes]).float().cpu()

    def _context_entries(self) -> int:
        """One entry per pair (f_t, x_{t+1}): every context token but the first."""
        return len(self.context) - 1

    def _run_context(self) -> torch.Tensor:
        """Runs the pairs the cache lacks, on the target's features; their logits [n, V]. The last
        pair's predicted feature is the root's, its children's input."""
        start, stop = self.num_run, self._context_entries()
        features = self._feature_rows(start, stop)
        tokens = torch.tensor(self.context[start + 1:stop + 1])
        positions = torch.arange(start + 1, stop + 1)
        g, logits = self.drafter.model.step(features, tokens, positions, self.cache, None, step=0)
        self.num_run = stop
        self._node_features[0] = g[-1]
        return logits

    def _forward_nodes(self, cands: _Candidates, nodes: list[int], mask_rows: torch.Tensor,
                       positions: list[int]) -> torch.Tensor:
        """One level of the tree: each node's pair is (its parent's predicted feature, its token)."""
        model = self.drafter.model
        depths = {cands.depths[i] for i in nodes}
        if len(depths) != 1:
            raise ValueError("a feature drafter runs one tree level at a time")
        features = torch.stack([self._node_features[cands.parents[i]] for i in nodes])
        tokens = torch.tensor([cands.tokens[i] for i in nodes])
        mask = additive_mask(mask_rows, model.dtype)
        g, logits = model.step(features, tokens, torch.tensor(positions), self.cache, mask, step=depths.pop())
        for node, feature in zip(nodes, g):
            self._node_features[node] = feature
        return logits

    def close(self) -> None:
        super().close()
        self._node_features = {}

