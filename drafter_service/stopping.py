"""Learned stopping: a decision model predicts whether drafting deeper will be accepted, and a
rule stops drafting on its predictions.

Sources:
- DynaSD (Lu et al., 2024, "Improving Multi-candidate Speculative Decoding", arXiv 2409.10644;
  code github.com/JackZeng0208/DynaSD): an MLP with a sigmoid output on the drafter's last hidden
  state (hidden -> hidden/2 -> hidden/4 -> 1), or a "hard" variant on [entropy, top-10
  probabilities] of the drafter's distribution; drafting stops when no branch of the frontier
  scores above a threshold.
- SpecDec++ (Huang et al., 2024, arXiv 2405.19715): an acceptance-prediction head; stopping once
  the predicted probability of at least one rejection so far exceeds a threshold is the optimal
  policy of its decision process, so a path's predicted survival is what to threshold.
- DSpark: per-position confidences whose running product is the predicted survival of a prefix.

What a prediction means here. For a frontier node n, already drafted, the model reads n's
features (the drafter's hidden state after n, and the distribution q_n its children are drawn
from) and predicts p_n: the chance that expanding n yields an accepted child, given that the
verifier reaches n (n accepted, or the root). A node's predicted survival is the product of the
predictions of its ancestors' expansions: s(child of n) = s(n) * p_n, s(root) = 1. Two rules:
- `frontier` (DynaSD): stop when max_n p_n < threshold;
- `survival` (SpecDec++, DSpark): stop when max_n s(n) * p_n < threshold.

Labels (`LABELS`), from the acceptance logs (`drafter_service.acceptance_log`), one example per
expanded node the verifier reached:
- `hard`: its first child (the top token under greedy, the first draw under sampling) accepted;
- `soft`: any of its children accepted: what expanding it bought, whichever sibling it was.

Stopping is lossless: it only decides how many nodes are drafted, from the drafter's own state,
before the verifier sees anything.

This module knows nothing about trees, sessions or the verifier: features in, probabilities and
a stop decision out. A stop model directory holds `stop_model.safetensors` and `stop_model.json`
(`StopModelFile`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

TOP = 10
"""Probabilities of q the hard variant reads, largest first (DynaSD's top-10)."""
HARD_INPUTS = 1 + TOP
VARIANTS = ("mlp", "hard")
LABELS = ("soft", "hard")
RULES = ("frontier", "survival")
WEIGHTS_FILE, CONFIG_FILE = "stop_model.safetensors", "stop_model.json"
OPTION = "stop_model"
"""The drafter option that names a stop model directory (in every error message about one)."""


class StopModelFile(BaseModel):
    """`stop_model.json`: what the weights are and how the drafter uses them."""

    model_config = ConfigDict(extra="forbid")

    variant: Literal["mlp", "hard"]
    labels: Literal["soft", "hard"] = "soft"
    drafter_hidden_size: int = Field(ge=1, description="The hidden size of the drafter whose logs trained it.")
    drafter: str = Field("", description="The drafter's name, for people reading the file.")
    rule: Literal["frontier", "survival"] = "frontier"
    threshold: float = Field(0.4, ge=0.0, le=1.0, description="Stop when no frontier value reaches this "
                                                              "(DynaSD's code uses 0.4).")
    report: dict = Field(default_factory=dict, description="Held-out AUROC and calibration; the threshold sweep.")


class DecisionModel(torch.nn.Module):
    """DynaSD's decision models; `forward` returns logits (`predict`: probabilities)."""

    def __init__(self, variant: str, hidden_size: int):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown decision model variant {variant!r}; known: {VARIANTS}")
        self.variant, self.hidden_size = variant, hidden_size
        if variant == "mlp":
            h = hidden_size
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(h, max(1, h // 2)), torch.nn.ReLU(),
                torch.nn.Linear(max(1, h // 2), max(1, h // 4)), torch.nn.ReLU(),
                torch.nn.Linear(max(1, h // 4), 1))
        else:
            self.layers = torch.nn.Sequential(torch.nn.Linear(HARD_INPUTS, 4 * HARD_INPUTS), torch.nn.ReLU(),
                                              torch.nn.Linear(4 * HARD_INPUTS, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(self(x.float()))


def q_features(probs: torch.Tensor) -> torch.Tensor:
    """[entropy, top-10 probabilities] of each row of probs: [F, V] -> [F, 11] (float32)."""
    probs = probs.float()
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1, keepdim=True)
    top = torch.topk(probs, min(TOP, probs.shape[-1]), dim=-1).values
    if top.shape[-1] < TOP:
        top = torch.nn.functional.pad(top, (0, TOP - top.shape[-1]))
    return torch.cat([entropy, top], dim=-1)


def model_inputs(variant: str, hidden: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """The decision model's input rows: the hidden states [F, H] (mlp) or `q_features` [F, 11] (hard)."""
    if variant == "mlp":
        if hidden is None:
            raise ValueError("the mlp decision model needs the drafter's hidden states")
        return hidden.float()
    return q


class StopModelError(ValueError):
    """A stop model that cannot be used with this drafter; the message names the `stop_model` option."""


class StopModel:
    """A loaded decision model with its rule and threshold."""

    def __init__(self, net: DecisionModel, file: StopModelFile, path: Path | None = None):
        self.net, self.file, self.path = net, file, path

    @property
    def variant(self) -> str:
        return self.file.variant

    @property
    def needs_hidden(self) -> bool:
        return self.file.variant == "mlp"

    @classmethod
    def load(cls, path: str | Path, drafter_hidden_size: int | None = None,
             rule: str | None = None, threshold: float | None = None) -> "StopModel":
        """Loads DIR; raises StopModelError naming the option when it is missing, malformed or made
        for a drafter of another hidden size (the mlp variant reads the hidden state; the hard
        variant fits any drafter). rule/threshold override the file's."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise StopModelError(f"{OPTION}: {path} is not a stop model directory (it needs {CONFIG_FILE} and "
                                 f"{WEIGHTS_FILE}; `specroute train-stop` writes one)")
        try:
            file = StopModelFile.model_validate_json((path / CONFIG_FILE).read_text())
        except ValueError as err:
            raise StopModelError(f"{OPTION}: {path / CONFIG_FILE} is malformed: {err}") from None
        if file.variant == "mlp" and drafter_hidden_size is not None and drafter_hidden_size != file.drafter_hidden_size:
            raise StopModelError(f"{OPTION}: {path} reads hidden states of size {file.drafter_hidden_size} "
                                 f"(trained for drafter {file.drafter or '?'}), but this drafter's are "
                                 f"{drafter_hidden_size}: train one on this drafter's acceptance logs")
        net = DecisionModel(file.variant, file.drafter_hidden_size)
        try:
            net.load_state_dict(load_file(path / WEIGHTS_FILE))
        except (RuntimeError, KeyError) as err:
            raise StopModelError(f"{OPTION}: {path / WEIGHTS_FILE} does not fit its {CONFIG_FILE}: {err}") from None
        net.eval()
        updates = {k: v for k, v in (("rule", rule), ("threshold", threshold)) if v is not None}
        return cls(net, file.model_copy(update=updates) if updates else file, path)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(self.file.model_dump_json(indent=2))

    def predict(self, hidden: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
        """p_n for each frontier row: hidden [F, H] (None for the hard variant), q `q_features` [F, 11]."""
        return self.net.predict(model_inputs(self.variant, hidden, q))

    def values(self, predictions: torch.Tensor, survival: torch.Tensor) -> torch.Tensor:
        """What the rule thresholds, per frontier node: p_n, or s(n) * p_n."""
        return predictions if self.file.rule == "frontier" else survival * predictions

    def should_stop(self, predictions: torch.Tensor, survival: torch.Tensor) -> bool:
        """True when no frontier node's value reaches the threshold (module doc)."""
        return bool(self.values(predictions, survival).max() < self.file.threshold)


def write_config(path: Path, **fields) -> None:
    """Rewrites some fields of a stop model directory's config (the threshold a sweep chose, say);
    `report` entries are added to the file's report."""
    file = StopModelFile.model_validate_json((path / CONFIG_FILE).read_text())
    fields["report"] = {**file.report, **fields.get("report", {})}
    (path / CONFIG_FILE).write_text(file.model_copy(update=fields).model_dump_json(indent=2))
