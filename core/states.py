"""The target's hidden states as they travel with verdicts: what a session asks for, and the packed rows.

A drafter that reads the target (a feature drafter, EAGLE-style; a steered drafter, SD²) asks for
states when it opens a session (`StateRequest`): which layers, and the dtype on the wire. The
verifier then returns `HiddenStates` with the prefill (one row per prefilled token) and with each
verdict (one row per processed position on the committed path: the root, then the accepted nodes).
With `last_only`, each of those holds only its last row (none for an empty prefill): a drafter that
reads the target at the last committed position only (SD², Berdoz et al. 2026) gets one row per message.

Layer numbering, for a target of L decoder layers: 0 is the embedding output (the first layer's
input), k in 1..L is the output of decoder layer k, before the final norm; negative numbers count
from L + 1 (so -1 is layer L, the last layer's output before the final norm, the feature EAGLE
reads, and the default).

`HiddenStates` is plain data (bytes and a shape), so it serialises to one proto field without a
copy through numpy; `tensor()` and `pack()` convert at the edges. This module knows nothing about
models, sessions or which drafter reads the states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import Code, ServiceError

WIRE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
"""The dtypes a verifier sends states in, by name."""


class InvalidStateRequestError(ServiceError):
    """States a verifier cannot return (an unknown layer, a dtype it does not offer): INVALID_ARGUMENT."""

    def __init__(self, message: str):
        super().__init__(Code.INVALID_ARGUMENT, message)

    def __reduce__(self):  # keeps the subclass when pickled (Ray)
        return type(self), (self.message,)


@dataclass(frozen=True)
class StateRequest:
    """Which of the target's hidden states a session wants with every verdict, and in what dtype;
    `last_only`: just the last row of each (`last_rows`)."""

    layers: tuple[int, ...] = (-1,)
    dtype: str = "float16"
    last_only: bool = False

    def last_rows(self, rows: list[int]) -> list[int]:
        """The rows of a message to send, of the rows it covers: all of them, or with `last_only` the
        last one (none of none)."""
        return rows[-1:] if self.last_only else rows

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """The layers as indices into 0..num_layers; raises InvalidStateRequestError if one is not there
        or the dtype is not offered."""
        if self.dtype not in WIRE_DTYPES:
            raise InvalidStateRequestError(
                f"hidden states dtype {self.dtype!r} is not offered; choose one of {sorted(WIRE_DTYPES)}")
        if not self.layers:
            raise InvalidStateRequestError("a hidden states request names no layer")
        resolved = []
        for layer in self.layers:
            index = layer + num_layers + 1 if layer < 0 else layer
            if not 0 <= index <= num_layers:
                raise InvalidStateRequestError(
                    f"hidden states layer {layer} does not exist: the target has layers 0 (embeddings) to "
                    f"{num_layers}, or -1 to -{num_layers + 1} counting from the last")
            resolved.append(index)
        if len(set(resolved)) != len(resolved):
            raise InvalidStateRequestError(f"hidden states layers {list(self.layers)} name one layer twice")
        return tuple(resolved)


@dataclass(frozen=True)
class HiddenStates:
    """Rows of hidden states, packed: `data` holds [rows, layers, hidden] values of `dtype`, row-major."""

    data: bytes
    rows: int
    layers: int
    hidden: int
    dtype: str = "float16"

    def __post_init__(self):
        if self.dtype not in WIRE_DTYPES:
            raise InvalidStateRequestError(f"hidden states dtype {self.dtype!r} is unknown")
        if min(self.rows, self.layers, self.hidden) < 0:
            raise InvalidStateRequestError("hidden states have a negative dimension")
        itemsize = torch.empty((), dtype=WIRE_DTYPES[self.dtype]).element_size()
        if len(self.data) != self.rows * self.layers * self.hidden * itemsize:
            raise InvalidStateRequestError(
                f"hidden states carry {len(self.data)} bytes; shape [{self.rows}, {self.layers}, {self.hidden}] "
                f"of {self.dtype} needs {self.rows * self.layers * self.hidden * itemsize}")

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @staticmethod
    def pack(states: torch.Tensor, dtype: str = "float16") -> "HiddenStates":
        """From a tensor [rows, layers, hidden] (any dtype, any device)."""
        if states.dim() != 3:
            raise ValueError(f"hidden states must be [rows, layers, hidden], got shape {tuple(states.shape)}")
        rows, layers, hidden = states.shape
        wire = states.detach().to(device="cpu", dtype=WIRE_DTYPES[dtype]).contiguous()
        data = wire.view(torch.uint8).numpy().tobytes() if wire.numel() else b""
        return HiddenStates(data, rows, layers, hidden, dtype)

    @staticmethod
    def empty(layers: int, hidden: int, dtype: str = "float16") -> "HiddenStates":
        return HiddenStates(b"", 0, layers, hidden, dtype)

    def tensor(self) -> torch.Tensor:
        """The rows as float32 [rows, layers, hidden] on the cpu."""
        if not self.data:
            return torch.zeros(self.rows, self.layers, self.hidden)
        flat = torch.frombuffer(bytearray(self.data), dtype=WIRE_DTYPES[self.dtype])
        return flat.view(self.rows, self.layers, self.hidden).float()

    def concat(self, other: "HiddenStates") -> "HiddenStates":
        """These rows, then other's (same layers, hidden size and dtype)."""
        if (self.layers, self.hidden, self.dtype) != (other.layers, other.hidden, other.dtype):
            raise ValueError("hidden states of different shapes or dtypes cannot be joined")
        return HiddenStates(self.data + other.data, self.rows + other.rows, self.layers, self.hidden, self.dtype)

    def select(self, rows: list[int]) -> "HiddenStates":
        """The given rows, in that order (bytes copied as they are)."""
        size = len(self.data) // self.rows if self.rows else 0
        data = b"".join(self.data[r * size:(r + 1) * size] for r in rows)
        return HiddenStates(data, len(rows), self.layers, self.hidden, self.dtype)
