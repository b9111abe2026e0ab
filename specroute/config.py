"""The one configuration of a running system, validated at the edge by pydantic.

    config = load_config("specroute.yaml")   # or SystemConfig.model_validate(dict)

It covers the target, every drafter (its kind and settings, and its deployment's resources), the
router, the verifier, Redis, the endpoints, and each deployment's replicas, resources and
autoscaling. Each component's own settings are defined in the component's package and composed
here, so their defaults are written once: a drafter's `drafter_service.deployment.DrafterSpec`,
the router's `router.frontend.Limits`, `router.router.RouterConfig` and `router.quota.QuotaConfig`,
the verifier's `verifier_service.server.VerifierServerConfig` (and, for drafters,
`verifier_service.client.VerifierClientConfig`). `specroute.app` hands each deployment its slice.
A bad field fails here, before anything starts, with `ConfigError` naming the field:
`drafters.1.deployment.num_gpus: Input should be greater than or equal to 0`. Paths relative to
the config file are resolved against its directory.

This module knows nothing about Ray, gRPC or models; it only describes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from core.logs import LogSettings
from core.tls import TlsFiles
from drafter_service.deployment import DrafterSpec
from router.frontend import Limits
from router.quota import QuotaConfig
from router.router import RouterConfig
from verifier_service.client import VerifierClientConfig
from verifier_service.server import VerifierServerConfig


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _distinct_cpus(cpus: list[int]) -> list[int]:
    if min(cpus) < 0 or len(set(cpus)) != len(cpus):
        raise ValueError(f"CPU indices must be >= 0 and distinct, got {cpus}")
    return cpus


CpuList = Annotated[list[int], Field(min_length=1), AfterValidator(_distinct_cpus)]


class DeploymentOptions(_Strict):
    """Ray Serve deployment settings of one component."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is set).")
    num_cpus: float = Field(0.25, ge=0, description="Logical CPUs per replica (Ray scheduling).")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica: each drafter and the verifier get their own on a cluster.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per replica, e.g. {verifier_gpu: 1} to place the "
                                          "replicas on the worker group that advertises them.")
    max_ongoing_requests: int = Field(16, ge=1)
    autoscaling: dict[str, Any] | None = Field(
        None, description="Ray Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...).")
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per replica; default: Ray's OMP_NUM_THREADS for the replica, "
                                "max(floor(num_cpus), 1) (1 with the local defaults).")
    cpus: CpuList | None = Field(
        None, description="Linux: the CPUs (by index) each replica's compute threads run on: the verifier's "
                          "forward thread, a drafter's drafting threads. Unset: wherever the OS puts them. With "
                          "`ray_cpus`, keeps compute off the cores Ray's own processes use (core/cpus.py "
                          "says when that pays).")

    @field_validator("autoscaling")
    @classmethod
    def _ray_accepts(cls, autoscaling: dict[str, Any] | None) -> dict[str, Any] | None:
        if autoscaling is not None:
            from ray.serve.config import AutoscalingConfig  # Ray's own schema decides
            known = set(getattr(AutoscalingConfig, "model_fields", None) or AutoscalingConfig.__fields__)
            unknown = sorted(set(autoscaling) - known)
            if unknown:
                raise ValueError(f"unknown autoscaling field(s) {unknown}; Ray Serve's are {sorted(known)}")
            AutoscalingConfig(**autoscaling)
        return autoscaling

    def starting_cpus(self) -> float:
        """Logical CPUs its replicas ask for when the app starts (autoscaling: its initial or minimum count)."""
        replicas = self.num_replicas
        if self.autoscaling is not None:
            replicas = self.autoscaling.get("initial_replicas") or self.autoscaling.get("min_replicas", 1)
        return self.num_cpus * max(1, replicas)

    def serve_options(self) -> dict:
        """Keyword arguments for `Deployment.options`."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            actor["resources"] = dict(self.resources)
        options: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": actor}
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling
        else:
            options["num_replicas"] = self.num_replicas
        return options


def _deployment_of(num_cpus: float):
    """A component's `deployment` field whose `num_cpus` defaults to the component's own, also when a
    config sets only some of the other deployment fields (e.g. just `torch_threads`)."""
    def with_own_cpus(value: Any) -> Any:
        return {"num_cpus": num_cpus, **value} if isinstance(value, dict) else value
    return Annotated[DeploymentOptions, BeforeValidator(with_own_cpus),
                     Field(default_factory=lambda: DeploymentOptions(num_cpus=num_cpus))]


RouterDeployment = _deployment_of(0.1)
VerifierDeployment = _deployment_of(0.5)


class TargetSettings(_Strict):
    path: Path = Field(description="The target model directory (save_pretrained: config, weights, tokenizer).")
    device: str = "auto"
    dtype: str = "float32"


class DrafterSettings(DrafterSpec):
    """A drafter (`DrafterSpec`: name, kind, options, stream_interval_ms) and what the config adds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specialised_for: str | None = Field(None, description="The zoo task it was distilled on (informational).")
    family: str | None = None
    params: int = 0
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)

    def spec(self) -> DrafterSpec:
        """The drafter deployment's own settings."""
        return DrafterSpec(**{name: getattr(self, name) for name in DrafterSpec.model_fields})


class RouterSettings(Limits):
    """The router: its request limits (`Limits`), tasks, routing table, policy and per-key quota."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: Path = Field(description="Task artifact directory (`specroute tasks detect`).")
    routing: Path | None = Field(None, description="Routing table (`specroute tasks assign`); default: tasks/routing.json.")
    policy: RouterConfig = Field(default_factory=RouterConfig)
    quota: QuotaConfig = Field(default_factory=QuotaConfig, description="Per API key (per router replica): a request "
                               "rate and a cap on open generations, so one key cannot take every verifier session.")
    deployment: RouterDeployment

    @model_validator(mode="after")
    def _no_compute(self) -> "RouterSettings":
        if self.deployment.cpus is not None:
            raise ValueError("deployment.cpus pins compute threads, and the router has none: set it on the drafters "
                             "and the verifier")
        return self

    def limits(self) -> Limits:
        return Limits(**{name: getattr(self, name) for name in Limits.model_fields})

    @property
    def routing_file(self) -> Path:
        return self.routing or self.tasks / "routing.json"


class VerifierSettings(VerifierServerConfig):
    failover_timeout_s: float = Field(60.0, gt=0, description="How long a drafter looks for a live verifier "
                                                              "replica before failing a request as UNAVAILABLE.")
    heartbeat_s: float = Field(1.0, gt=0, description="How often replicas report to the directory.")
    deployment: VerifierDeployment

    def server(self) -> VerifierServerConfig:
        """A replica's own server settings."""
        return VerifierServerConfig(**{name: getattr(self, name) for name in VerifierServerConfig.model_fields})

    def client(self) -> VerifierClientConfig:
        """How drafters reach the replicas: they rediscover them as often as replicas report."""
        return VerifierClientConfig(refresh_s=self.heartbeat_s, max_message_bytes=self.max_message_bytes,
                                    failover_timeout_s=self.failover_timeout_s, tls=self.tls)


class RedisSettings(_Strict):
    url: str | None = Field(None, description="redis://... ; None: `specroute serve` starts the embedded server.")
    prefix: str = "specroute"


class EndpointSettings(_Strict):
    host: str = Field("127.0.0.1", description="HTTP host; 0.0.0.0 to serve beyond this machine.")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(9000, ge=1, le=65535)
    tls: TlsFiles | None = Field(None, description="Serve HTTPS on http_port and gRPC over TLS on grpc_tls_port "
                                                   "(mutual TLS with `ca`).")
    grpc_tls_port: int | None = Field(None, ge=1, le=65535, description="The public gRPC API over TLS (needs `tls`); "
                                      "Ray Serve's proxy still serves plaintext gRPC on grpc_port.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Where a Ray started by `specroute serve` "
                                     "exports Prometheus metrics (every replica's); None: a free port, printed at "
                                     "start. A cluster's Ray sets its own (KubeRay: 8080).")

    @model_validator(mode="after")
    def _tls_port_needs_tls(self) -> "EndpointSettings":
        if self.grpc_tls_port is not None and self.tls is None:
            raise ValueError("grpc_tls_port needs `tls` (cert and key)")
        return self


class SystemConfig(_Strict):
    app_name: str = Field("specroute", pattern=r"^[A-Za-z0-9_-]+$")
    target: TargetSettings
    drafters: list[DrafterSettings] = Field(min_length=1)
    router: RouterSettings
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    endpoints: EndpointSettings = Field(default_factory=EndpointSettings)
    logs: LogSettings = Field(default_factory=LogSettings, description="Every replica's log lines: format (text or "
                              "json, each line with its request's id) and where they go (stderr or a directory).")
    ray_cpus: CpuList | None = Field(
        None, description="Linux, a Ray started by `specroute serve` itself (no --address): the CPUs its processes "
                          "start on (its daemons, Serve's proxy and controller, every replica). Compute threads "
                          "with their own `deployment.cpus` move off them.")

    @model_validator(mode="after")
    def _unique_drafters(self) -> "SystemConfig":
        names = [d.name for d in self.drafters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"drafter names must be unique: {repeated}")
        return self

    def drafter(self, name: str) -> DrafterSettings:
        return next(d for d in self.drafters if d.name == name)

    def starting_cpus(self) -> float:
        """Logical CPUs every deployment's replicas ask for when the app starts."""
        parts = [self.router.deployment, self.verifier.deployment, *(d.deployment for d in self.drafters)]
        return sum(options.starting_cpus() for options in parts)


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def validate_config(data: dict, base_dir: Path | None = None) -> SystemConfig:
    """Validates a config dict; relative paths are taken against base_dir (default: cwd)."""
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration: the top level must be a mapping")
    if base_dir is not None:
        data = _resolve_paths(data, Path(base_dir))
    try:
        return SystemConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def load_config(path: str | Path) -> SystemConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return validate_config(data, path.resolve().parent)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Absolutises the config's path fields (target.path, router.tasks/routing, drafters' path and datastore,
    the TLS files)."""
    def absolute(value):
        return str(value if Path(value).is_absolute() else (base / value).resolve())
    data = {**data}
    if isinstance(data.get("target"), dict) and "path" in data["target"]:
        data["target"] = {**data["target"], "path": absolute(data["target"]["path"])}
    if isinstance(data.get("router"), dict):
        data["router"] = {**data["router"], **{k: absolute(v) for k, v in data["router"].items()
                                               if k in ("tasks", "routing") and v}}
    for section in ("verifier", "endpoints"):
        tls = data.get(section, {}).get("tls") if isinstance(data.get(section), dict) else None
        if isinstance(tls, dict):
            data[section] = {**data[section], "tls": {k: absolute(v) if v else v for k, v in tls.items()}}
    if isinstance(data.get("drafters"), list):
        data["drafters"] = [{**d, "options": {k: absolute(v) if k in ("path", "datastore") and v else v
                                              for k, v in d["options"].items()}}
                            if isinstance(d, dict) and isinstance(d.get("options"), dict) else d
                            for d in data["drafters"]]
    return data
