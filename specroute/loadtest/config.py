"""A load test's settings: the one target address, the load's shape and bounds, the mix of tasks.

`LoadTestConfig` validates on construction (pydantic); its fields, defaults and descriptions are
also the `specroute loadtest` options. `check_target` refuses anything but one HOST:PORT and
`parse_mix` reads `code=3,math=1`.
This module knows nothing about prompts, sending, statistics or reports.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_TARGET = "127.0.0.1:9000"
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


def check_target(address: str) -> str:
    """`address` if it is one plain `host:port` (or `[ipv6]:port`); ValueError otherwise.

    Schemes (`dns:///`, `ipv4:`, `unix:`, `xds:`, `http://`) and address lists are refused: the
    load test sends to exactly one address and never resolves a list or a service config.
    """
    address = address.strip()
    if not address:
        raise ValueError("the target address is empty")
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        ok_host = bool(sep) and bool(re.fullmatch(r"[0-9A-Fa-f:.]+", host)) and ":" in host
    else:
        host, sep, port = address.rpartition(":")
        ok_host = bool(sep) and bool(_HOST.match(host))
    if not ok_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the target must be one HOST:PORT (e.g. {DEFAULT_TARGET}), without a scheme or "
                         f"a list; got {address!r}")
    return address


def parse_mix(text: str) -> dict[str, float]:
    """'code,math' -> {code: 1, math: 1}; 'code=3,math=1' -> {code: 3, math: 1}. ValueError if malformed."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"--mix {text!r}: empty entry (expected TASK[=WEIGHT],...)")
        name, sep, weight_text = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--mix {text!r}: entry {part!r} has no task name")
        if name in mix:
            raise ValueError(f"--mix {text!r}: task {name!r} is given twice")
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(f"--mix {text!r}: weight {weight_text.strip()!r} of {name!r} "
                                 "is not a number") from None
        else:
            weight = 1.0
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"--mix {text!r}: the weight of {name!r} must be a finite number > 0")
        mix[name] = weight
    return mix


class LoadTestConfig(BaseModel):
    """A load test's settings, validated on construction (pydantic). See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(DEFAULT_TARGET, description="The one gRPC address HOST:PORT every request goes to.")
    concurrency: int = Field(4, ge=1, le=256, description="Closed-loop workers (requests in flight), 1-256.")
    duration_s: float = Field(30.0, gt=0, le=3600,
                              description="Seconds during which new requests start, > 0 and <= 3600.")
    max_requests: int = Field(10_000, ge=1, le=1_000_000, description="Hard bound on requests started.")
    max_new_tokens: int = Field(64, ge=1, le=65_536, description="Most tokens generated per request.")
    temperature: float = Field(0.0, ge=0, le=100, description="0 is greedy; > 0 seeds request i with SEED+i.")
    warmup_requests: int = Field(0, ge=0, le=1000, description="Requests sent first and left out of the figures.")
    mix: dict[str, float] | None = Field(None, description="Tasks and optional weights, e.g. code,math or "
                                                            "code=3,math=1; none: every task equally.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the prompt draw.")
    api_key: SecretStr | None = None
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Each request's deadline in seconds.")
    drain_s: float = Field(10.0, ge=0, le=600, description="Grace in seconds for requests running at the end.")
    retries: int = Field(0, ge=0, le=10, description="SDK retries of UNAVAILABLE before the first token.")
    error_pause_s: float = Field(0.1, ge=0, le=10, description="A worker's pause after a failed request.")
    drafter: str | None = Field(None, min_length=1, description="Send every request to this drafter (default: "
                                                                "the router's choice).")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_target(value)

    @field_validator("mix", mode="before")
    @classmethod
    def _mix(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            return parse_mix(value)
        if isinstance(value, Mapping):
            for name, weight in value.items():
                if not str(name).strip():
                    raise ValueError("a task name in the mix is empty")
                if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
                    raise ValueError(f"the weight of {name!r} must be a finite number > 0")
        return value

    def public_dict(self) -> dict:
        """The settings as JSON-able values, the API key masked."""
        data = self.model_dump(mode="json")
        data["api_key"] = "set" if self.api_key is not None else None
        return data
