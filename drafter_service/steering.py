"""Steering a pretrained drafter with the verifier's hidden states (SD²).

Berdoz, Rheinboldt and Wattenhofer, "Steering Pretrained Drafters during Speculative Decoding"
(AAAI 2026, arXiv 2511.09844; reference code: github.com/ETH-DISCO/SD-square). After each
verdict the verifier's hidden states at the last returned position, from a low, a middle and a
high layer, are mixed and projected into one bias per drafter layer:

    g = W_hml [h, m, l]                  W_hml: Linear(3 d_V -> d_V), initialised to [I, I, I]
    b = W_s LayerNorm(g)                 W_s: Linear(d_V -> n_layers * d_ff), initialised to 0

and each drafter layer's MLP adds its bias before the activation:
- Llama-family (SwiGLU, any model whose MLP has `up_proj`): down((W_u a + b) * act(W_g a)), the
  paper's placement (on the up-projection, beside the gate);
- GPT-2-family (`mlp.c_fc`, then the activation, then `c_proj`): act(W_fc a + b). GPT-2 has no
  gate, so the bias goes on its only up-projection, the same point before the nonlinearity.

The bias is computed once per draft block and reaches the block's root and tree, so it also shapes
the keys and values those tokens leave in the drafter's cache (a committed token run late runs with
the bias it was drafted under: `drafter_service.steered_drafter`). With W_s zero the bias is
zero and the drafter is exactly the pretrained one.

`SteeringModule` is the two maps; `SteeringHooks` adds a bias inside a drafter's MLPs with
forward hooks, so any HF model of those families is steered without a copy of its code. The bias
a forward uses is per thread (`SteeringHooks.steer`), so sessions that share one model in a
threaded server never see each other's. A bias is either [n_layers, d_ff] (one vector for every
token: inference) or [B, T, n_layers, d_ff] (one per token: training with random offsets).

`SteeringFile` is what a steered drafter directory records beside the drafter's own weights. This
module knows nothing about sessions, verdicts or training.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from core.hf import decoder_layers

STEERING_WEIGHTS = "steering.safetensors"
STEERED_KIND = "steered"


class SteeringFile(BaseModel):
    """`specroute_drafter.json` of a steered drafter directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(STEERED_KIND, pattern=f"^{STEERED_KIND}$")
    layers: tuple[int, int, int] = Field(description="The target's low, middle and high layers read "
                                         "(`core.states` numbering, resolved: 0..L).")
    target_hidden: int = Field(ge=1, description="The target's hidden size d_V.")
    max_offset: int = Field(ge=1, description="Training steered position t with the state of t - e, e in [1, k]; k.")
    base: str | None = Field(None, description="The drafter directory this one was trained from (a record).")


def default_layers(num_layers: int) -> tuple[int, int, int]:
    """Low, middle and high layers of a target with num_layers decoder layers, spread as the paper's
    choice for a 32-layer target (3, 16, 29): about a tenth in, the middle, three from the top. A
    two-layer target gives (0, 1, 2): the embeddings and both layers."""
    if num_layers < 2:
        raise ValueError(f"steering reads three distinct target layers (0..L); the target has L = {num_layers}")
    if num_layers == 2:
        return 0, 1, 2
    low = max(1, round(num_layers / 10))
    high = max(low + 2, num_layers - 3)
    middle = min(max(low + 1, num_layers // 2), high - 1)
    return low, middle, high


def mlp_inputs(model) -> list[torch.nn.Module]:
    """Per decoder layer, the module whose output the bias is added to (see the module docstring)."""
    found = []
    for index, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None)
        module = getattr(mlp, "up_proj", None)
        if module is None:
            module = getattr(mlp, "c_fc", None)
        if module is None:
            raise ValueError(f"cannot steer {type(model).__name__}: layer {index}'s MLP has neither up_proj "
                             "(Llama-family) nor c_fc (GPT-2-family)")
        found.append(module)
    return found


def intermediate_size(module: torch.nn.Module) -> int:
    """The output width of an MLP input projection (a Linear, or GPT-2's Conv1D with `nf`)."""
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if not isinstance(width, int):
        raise ValueError(f"cannot read the output width of {type(module).__name__}")
    return width


class SteeringModule(torch.nn.Module):
    """g = W_hml [h, m, l]; bias = W_s LayerNorm(g), one d_ff vector per drafter layer."""

    def __init__(self, target_hidden: int, n_layers: int, d_ff: int):
        super().__init__()
        self.target_hidden, self.n_layers, self.d_ff = target_hidden, n_layers, d_ff
        self.hml = torch.nn.Linear(3 * target_hidden, target_hidden, bias=False)
        self.norm = torch.nn.LayerNorm(target_hidden)
        self.w_s = torch.nn.Linear(target_hidden, n_layers * d_ff, bias=False)
        with torch.no_grad():
            eye = torch.eye(target_hidden)
            self.hml.weight.copy_(torch.cat([eye, eye, eye], dim=1))
            self.w_s.weight.zero_()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states [..., 3, d_V] (low, middle, high) -> biases [..., n_layers, d_ff]."""
        if states.shape[-2:] != (3, self.target_hidden):
            raise ValueError(f"steering reads states [..., 3, {self.target_hidden}], got {tuple(states.shape)}")
        g = self.hml(states.flatten(-2))
        return self.w_s(self.norm(g)).unflatten(-1, (self.n_layers, self.d_ff))

    def save(self, directory: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(Path(directory) / STEERING_WEIGHTS))

    @classmethod
    def load(cls, directory: Path, target_hidden: int, n_layers: int, d_ff: int) -> "SteeringModule":
        """The module saved in directory; its shapes must be these (the drafter's and the target's)."""
        module = cls(target_hidden, n_layers, d_ff)
        state = load_file(str(Path(directory) / STEERING_WEIGHTS))
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            raise ValueError(f"{Path(directory) / STEERING_WEIGHTS} has shapes {found}; this drafter and target "
                             f"need {expected}")
        module.load_state_dict(state)
        return module


class SteeringHooks:
    """Adds the current thread's bias inside every MLP of `model` (see the module docstring)."""

    def __init__(self, model):
        self.modules = mlp_inputs(model)
        widths = {intermediate_size(m) for m in self.modules}
        if len(widths) != 1:
            raise ValueError(f"steering needs one MLP width across layers, found {sorted(widths)}")
        self.n_layers, self.d_ff = len(self.modules), widths.pop()
        self._local = threading.local()
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]

    def _hook(self, layer: int):
        def add_bias(module, args, output):
            bias = getattr(self._local, "bias", None)
            if bias is None:
                return None
            return output + bias.select(-2, layer).to(output.dtype)
        return add_bias

    @contextmanager
    def steer(self, bias: torch.Tensor | None) -> Iterator[None]:
        """Forwards in this thread, while open, add `bias` ([n_layers, d_ff] or [B, T, n_layers, d_ff];
        None: unsteered)."""
        if bias is not None and bias.shape[-2:] != (self.n_layers, self.d_ff):
            raise ValueError(f"a steering bias must end in [{self.n_layers}, {self.d_ff}], got {tuple(bias.shape)}")
        previous = getattr(self._local, "bias", None)
        self._local.bias = bias
        try:
            yield
        finally:
            self._local.bias = previous

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def sample_offsets(length: int, max_offset: int, generator: torch.Generator | None = None,
                   batch: int = 1) -> torch.Tensor:
    """Per position t of `batch` rows, an offset e uniform in [1, max_offset]: position t is steered by
    the state of t - e (`offset_biases` leaves it unsteered where t - e < 0). [batch, length] int64."""
    return torch.randint(1, max_offset + 1, (batch, length), generator=generator)


def offset_biases(biases: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Position t's bias is the bias computed from the state at t - offsets[t]; zero where that is before
    the first position. biases [B, T, n_layers, d_ff]; offsets [B, T] -> [B, T, n_layers, d_ff]."""
    batch, length = offsets.shape
    source = torch.arange(length, device=offsets.device).unsqueeze(0) - offsets  # [B, T]
    valid = source >= 0
    gathered = biases[torch.arange(batch, device=offsets.device).unsqueeze(1), source.clamp_min(0)]
    return gathered * valid.unsqueeze(-1).unsqueeze(-1).to(gathered.dtype)
