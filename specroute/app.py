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

This module wires deployments together; it holds no logic of its own.
"""

from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve import Application

from drafter_service.deployment import DrafterDeployment
from router.ingress import RouterIngress
from specroute.config import DeploymentOptions, SystemConfig, load_config, validate_config
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


def build_app(config: SystemConfig) -> Application:
    plain = config.model_dump(mode="json")
    plain["router"]["routing"] = str(config.router.routing_file)
    directory = serve.deployment(VerifierDirectory, name="VerifierDirectory",
                                 ray_actor_options={"num_cpus": 0}).bind()
    verifier_opts = config.verifier.deployment
    verifier = VerifierDeployment.options(**verifier_serve_options(verifier_opts)).bind(
        plain["target"], plain["verifier"], directory, verifier_opts.torch_threads, verifier_opts.cpus)
    drafters = {}
    for d in config.drafters:
        drafters[d.name] = DrafterDeployment.options(name=deployment_name(d.name), **d.deployment.serve_options()).bind(
            d.name, d.kind, plain["drafters"][config.drafters.index(d)]["options"], plain["target"]["path"],
            directory, plain["verifier"], d.deployment.max_ongoing_requests, d.deployment.torch_threads,
            d.stream_interval_ms, d.deployment.cpus)
    router_opts = config.router.deployment
    # The verifier is bound so that it deploys with the app; nothing calls it through a handle.
    return RouterIngress.options(**router_opts.serve_options()).bind(plain, drafters, directory, verifier)


def app_builder(args: dict) -> Application:
    """For `serve run specroute.app:app_builder config=FILE` (or the keys of a config inline)."""
    if "config" in args:
        return build_app(load_config(Path(args["config"])))
    return build_app(validate_config(dict(args)))
