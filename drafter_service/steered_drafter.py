"""The `steered` drafter: a model drafter steered by the verifier's hidden states (SD²).

A steered drafter directory is a plain HF causal LM (the drafter, fine-tuned with its steering)
plus `steering.safetensors` (W_hml and the per-layer steering map) and `specroute_drafter.json`
(`drafter_service.steering.SteeringFile`: the three target layers it reads, the target's hidden
size). Its sessions ask the verifier for those layers, the last row only
(`core.states.StateRequest.last_only`): the states at the last position the verifier returned,
which is the position just before the root of the next tree. From them the session computes one
bias per drafter layer when the states arrive (with the prefill, `prime`, then with each verdict,
`observe`), and the next draft block adds it inside the drafter's MLPs (`drafter_service.steering`).
So the root runs steered by the state one position back, and a node at depth d by the state d + 1
positions back, the offsets the training samples. Committed tokens run before the root (the prompt,
an accepted leaf the drafter never ran) get the bias they were drafted under, the block before's
(the prompt: none), so no token is steered by a state at or after its own position, which training
never shows.

Everything else is the model drafter's (`drafter_service.model_drafter`): EAGLE-2 dynamic trees,
lossless sampling (the bias changes q, and q is what the tree sends), adaptive depth, the cache
kept across verdicts (entries keep the bias they were computed with). It does not draft ahead:
the next block's bias needs the verdict's states.

A one-token prompt has no prefilled state; its first block runs unsteered. A tree deeper than the
training's offsets reach (max_depth + 1 > max_offset) still works, but is logged as a warning: its
deepest nodes are steered by older states than training showed. This module knows
nothing about how the steering was trained.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from pydantic import Field, field_validator, model_validator

from core.contracts import Verdict
from core.sampling import SamplingParams
from core.states import WIRE_DTYPES, HiddenStates, StateRequest
from drafter_service.base import DRAFTER_FILE, register_drafter
from drafter_service.model_drafter import ModelDrafter, ModelDrafterConfig, ModelDraftSession, _Candidates
from drafter_service.steering import STEERED_KIND, STEERING_WEIGHTS, SteeringFile, SteeringHooks, SteeringModule

log = logging.getLogger(__name__)


class SteeredDrafterConfig(ModelDrafterConfig):
    """A steered drafter: its directory, placement, and the shape of its trees."""

    directory_kind: ClassVar[str | None] = STEERED_KIND
    states_dtype: str = Field("float16", description="The dtype the verifier sends the three state vectors in.")

    @field_validator("path")
    @classmethod
    def _is_steered_dir(cls, path):
        if not (path / DRAFTER_FILE).is_file() or not (path / STEERING_WEIGHTS).is_file():
            raise ValueError(f"{path} is not a steered drafter directory: it needs {DRAFTER_FILE} and "
                             f"{STEERING_WEIGHTS} (written by `specroute steer`)")
        return path

    @field_validator("states_dtype")
    @classmethod
    def _wire_dtype(cls, dtype: str) -> str:
        if dtype not in WIRE_DTYPES:
            raise ValueError(f"states_dtype must be one of {sorted(WIRE_DTYPES)}, got {dtype!r}")
        return dtype

    @model_validator(mode="after")
    def _no_draft_ahead(self) -> "SteeredDrafterConfig":
        if self.draft_ahead:
            raise ValueError("a steered drafter does not draft ahead (its next block's steering needs the verdict's "
                             "states): set draft_ahead to 0")
        return self


@register_drafter(STEERED_KIND)
class SteeredDrafter(ModelDrafter):
    Config = SteeredDrafterConfig

    def __init__(self, config: SteeredDrafterConfig):
        super().__init__(config)
        self.file = SteeringFile.model_validate_json((config.path / DRAFTER_FILE).read_text())
        self.hooks = SteeringHooks(self.model)
        self.steering = SteeringModule.load(config.path, self.file.target_hidden, self.hooks.n_layers,
                                            self.hooks.d_ff).to(device=self.model.device, dtype=self.model.dtype)
        self.steering.eval()
        self.state_request = StateRequest(layers=self.file.layers, dtype=config.states_dtype, last_only=True)
        if config.max_depth + 1 > self.file.max_offset:
            log.warning("steered drafter %s: trees of depth %d steer their deepest nodes by the state %d positions "
                        "back, but it was trained with offsets up to %d only", config.path, config.max_depth,
                        config.max_depth + 1, self.file.max_offset)

    def bias(self, states: HiddenStates) -> torch.Tensor | None:
        """The per-layer bias [n_layers, d_ff] from the last row of states (None when there is no row)."""
        if states.rows == 0:
            return None
        if (states.layers, states.hidden) != (3, self.file.target_hidden):
            raise ValueError(f"a steered drafter reads 3 target layers of hidden size {self.file.target_hidden}; the "
                             f"states have {states.layers} of {states.hidden}")
        last = states.tensor()[-1].to(device=self.model.device, dtype=self.model.dtype)
        with torch.inference_mode():
            return self.steering(last)

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> "SteeredDraftSession":
        return SteeredDraftSession(self, prompt_ids, sampling)


class SteeredDraftSession(ModelDraftSession):
    """A model draft session whose forwards add the bias of the verifier's last states."""

    def __init__(self, drafter: SteeredDrafter, prompt_ids: list[int], sampling: SamplingParams):
        super().__init__(drafter, prompt_ids, sampling)
        self._bias: torch.Tensor | None = None  # this block's: from the last state the verifier returned
        self._drafted_under: dict[int, torch.Tensor] = {}  # context position -> the bias a committed token not
        # yet run was drafted under (the prompt has none: it runs unsteered)

    def prime(self, states: HiddenStates) -> None:
        self._bias, self._drafted_under = self.drafter.bias(states), {}

    def observe(self, verdict: Verdict) -> None:
        if verdict.states is None:
            raise ValueError("a steered drafter needs the target's states with every verdict: open the verifier "
                             "session with the drafter's state_request")
        root = len(self.context) - 1
        super().observe(verdict)
        if self._bias is not None:  # the root and the accepted tokens were drafted under this block's bias
            for position in range(root, len(self.context) - 1):
                self._drafted_under.setdefault(position, self._bias)
        self._bias = self.drafter.bias(verdict.states)

    def _run_context(self) -> torch.Tensor:
        """Runs the committed tokens the cache lacks. The root gets this block's bias; each token before
        it the bias of the block it was drafted in (the prompt: none), so no token is steered by a state
        at or after its own position, as in training, however many rounds passed without a run (a
        root-only tree runs nothing)."""
        with self.drafter.hooks.steer(self._context_bias()):
            logits = super()._run_context()
        self._drafted_under = {}  # every committed token has run
        return logits

    def _context_bias(self) -> torch.Tensor | None:
        """The bias of each committed token the cache lacks, root last: [1, pending, n_layers, d_ff], or
        the root's alone when it is the only one (or every token's), None when none is steered."""
        biases = [self._drafted_under.get(p) for p in range(self.num_run, len(self.context) - 1)] + [self._bias]
        if all(b is biases[-1] for b in biases):
            return self._bias
        like = next(b for b in biases if b is not None)
        return torch.stack([b if b is not None else torch.zeros_like(like) for b in biases]).unsqueeze(0)

    def _forward_nodes(self, cands: _Candidates, nodes: list[int], mask_rows: torch.Tensor,
                       positions: list[int]) -> torch.Tensor:
        with self.drafter.hooks.steer(self._bias):
            return super()._forward_nodes(cands, nodes, mask_rows, positions)
