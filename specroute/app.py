"""The Ray Serve application: the router ingress, one deployment per drafter, the verifier.

    build_app(config)            # a SystemConfig -> a bound Serve Application
    specroute.app:app_builder    # the import path for `serve run` / `serve deploy`:
                                 #   serve run specroute.app:app_builder config=specroute.yaml

The graph: `Router` (ingress; gRPC and HTTP) holds a handle to each drafter deployment
(`Drafter-<name>`), each with its own resources (num_gpus per drafter); every drafter and every
`Verifier` replica knows the `VerifierDirectory`, through which drafters find verifier replicas
to dial directly over gRPC.

Ray's gRPC proxy needs the servicer function at Serve start (`GRPC_SERVICER`: in `serve.start`'s
grpc_options, or in a Serve config's `grpc_options.grpc_servicer_functions`).

Each deployment is bound with its own typed slice of the config (`specroute.config` composes the
components' settings models), never the whole config or a dict.

This module wires deployments together; it holds no logic of its own.
"""

from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve import Application

from core.api import DrafterInfo
from core.hf import ModelLoadConfig
from drafter_service.deployment import DrafterDeployment
from router.ingress import IngressSettings, RouterIngress
from router.quota import QuotaConfig
from specroute.config import DeploymentOptions, RouterSettings, SystemConfig, VerifierSettings, load_config, \
    validate_config
from verifier_service import autoscale
from verifier_service.deployment import VerifierDeployment
from verifier_service.directory import VerifierDirectory

GRPC_SERVICER = "router.grpc_api.add_servicer_to_server"


def deployment_name(drafter: str) -> str:
    return f"Drafter-{drafter}"


def verifier_serve_options(options: DeploymentOptions) -> dict:
    """The verifier's Serve options. Drafters bypass Serve handles, so an autoscaling verifier
    scales on the sessions its replicas report (`verifier_service.autoscale`) unless the config
    names a policy of its own."""
    serve_options = options.serve_options()
    autoscaling = serve_options.get("autoscaling_config")
    if autoscaling is not None and "policy" not in autoscaling:
        serve_options["autoscaling_config"] = {**autoscaling, "policy": {"policy_function": autoscale.POLICY}}
    return serve_options


def router_quota(router: RouterSettings, verifier: VerifierSettings) -> QuotaConfig:
    """The per-key limits; with several API keys and no `shared_streams`, the fair share is over
    the verifier sessions at the most replicas the config allows."""
    quota = router.quota
    if quota.shared_streams is None and len(router.api_keys) > 1:
        deployment = verifier.deployment
        replicas = (deployment.autoscaling or {}).get("max_replicas") or deployment.num_replicas
        quota = quota.model_copy(update={"shared_streams": verifier.max_sessions * replicas})
    return quota


def ingress_settings(config: SystemConfig) -> IngressSettings:
    r = config.router
    return IngressSettings(limits=r.limits(), tasks=r.tasks, routing=r.routing_file, policy=r.policy,
                           quota=router_quota(r, config.verifier), redis_url=config.redis.url,
                           redis_prefix=config.redis.prefix, target=str(config.target.path))


def build_app(config: SystemConfig) -> Application:
    directory = serve.deployment(VerifierDirectory, name="VerifierDirectory",
                                 ray_actor_options={"num_cpus": 0}).bind()
    v = config.verifier
    # Not validated here: the target directory need exist only where the replicas run.
    target = ModelLoadConfig.model_construct(**config.target.model_dump())
    verifier = VerifierDeployment.options(**verifier_serve_options(v.deployment)).bind(
        target, v.server(), directory, v.heartbeat_s, v.deployment.torch_threads, v.deployment.cpus, logs=config.logs)
    drafters = {}
    for d in config.drafters:
        drafters[d.name] = DrafterDeployment.options(name=deployment_name(d.name), **d.deployment.serve_options()).bind(
            d.spec(), str(config.target.path), v.client(), directory, d.deployment.max_ongoing_requests,
            d.deployment.torch_threads, d.deployment.cpus, logs=config.logs,
            redis=(config.redis.url, config.redis.prefix) if config.redis.url else None)
    catalog = [DrafterInfo(d.name, d.kind, d.family or "", d.params, d.specialised_for or "") for d in config.drafters]
    # The verifier is bound so that it deploys with the app; nothing calls it through a handle.
    return RouterIngress.options(**config.router.deployment.serve_options()).bind(
        ingress_settings(config), drafters, catalog, directory, verifier, logs=config.logs)


def app_builder(args: dict) -> Application:
    """For `serve run specroute.app:app_builder config=FILE` (or the keys of a config inline)."""
    if "config" in args:
        return build_app(load_config(Path(args["config"])))
    return build_app(validate_config(dict(args)))
