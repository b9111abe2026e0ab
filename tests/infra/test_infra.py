"""The deployment files under infra/: they parse, Ray accepts them, and they agree with each other.

Fast and offline: no Ray cluster, no Kubernetes. What is checked, with Ray's own code where Ray
has it:
- every YAML file parses;
- the Serve configs pass Ray Serve's `ServeDeploySchema` (what `serve run`/`serve deploy` use),
  with no field Ray would silently ignore; their import paths and gRPC servicer functions import
  (Ray's `import_attr`, as Serve does), and so does the verifier's autoscaling policy;
- the specroute configs their args name validate (`specroute.config`), and the application builds
  from them with Ray's own build step (what `serve build` runs), without starting anything;
- the RayService embeds the same Serve config, runs Redis under the name and port the cluster
  config dials, and has worker groups on which every deployment's replicas fit: the verifier and
  the model drafters on distinct GPU groups, each advertising the custom resource they request;
- the cluster launcher YAML passes Ray's launcher schema, and its node types do the same;
- the image and the launcher put the repository and the models where the configs look.

Model directories: the cluster config names /models/..., and the local one zoo/demo, which do not
exist here, and a model drafter's settings are only valid for an existing model directory. So a
model drafter whose directory is missing is validated (and built) with a tiny model of the same
family from the `tiny_zoo` fixture (tests/conftest.py), and only that field is swapped; the paths
themselves are checked against the mounts instead.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as ray_build_app
from ray.serve.config import gRPCOptions
from ray.serve.deployment import deployment_to_schema
from ray.serve.schema import (
    HTTPOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
    gRPCOptionsSchema,
)

from specroute.app import GRPC_SERVICER, deployment_name
from specroute.config import validate_config
from verifier_service import autoscale

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
SERVE_CONFIGS = {"local": INFRA / "serve" / "local.yaml", "cluster": INFRA / "serve" / "cluster.yaml"}
RAYSERVICE = INFRA / "kuberay" / "rayservice.yaml"
LAUNCHER = INFRA / "cluster" / "ray-cluster.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
APP_ROOT = "/app"  # where the image and the launcher put this repository
LAPTOP_CPUS = 2  # infra/config/local.yaml's autoscaling limits must fit this many cores


@functools.cache
def _parsed(path: Path) -> tuple:
    return tuple(yaml.safe_load_all(path.read_text()))


def _load(path: Path):
    """The file's one YAML document; parsed once per session, a fresh copy per caller."""
    (doc,) = _parsed(path)
    return copy.deepcopy(doc)


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def _app(serve_config: dict) -> dict:
    (app,) = serve_config["applications"]  # specroute is one application
    return app


def _in_repo(path: str) -> Path:
    """A path as a deployment reads it -> this checkout's file: /app/... is the repository (image,
    launcher); a relative path is relative to the repository root (where `serve run` runs)."""
    if path.startswith(APP_ROOT + "/"):
        return REPO / path[len(APP_ROOT) + 1:]
    assert not Path(path).is_absolute(), f"{path}: neither under {APP_ROOT} nor relative to the repository"
    return REPO / path


def _system_config_file(name: str) -> Path:
    return _in_repo(_app(_load(SERVE_CONFIGS[name]))["args"]["config"])


def _kuberay_docs() -> list[dict]:
    return copy.deepcopy(list(_parsed(RAYSERVICE)))


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {RAYSERVICE.name}, found {len(found)}"
    return found[0]


def _max_replicas(schema) -> int:
    auto = schema.autoscaling_config
    if isinstance(auto, dict):
        return auto["max_replicas"]
    if hasattr(auto, "max_replicas"):
        return auto.max_replicas
    return schema.num_replicas if isinstance(schema.num_replicas, int) else 1


def _policy_function(schema) -> str | None:
    auto = schema.autoscaling_config
    policy = auto.get("policy") if isinstance(auto, dict) else getattr(auto, "policy", None)
    if policy is None:
        return None
    function = policy.get("policy_function") if isinstance(policy, dict) else policy.policy_function
    return function if isinstance(function, str) else f"{function.__module__}:{function.__name__}"


# --- the specroute configs, with missing model directories swapped for tiny ones ----------------

def _absolute(data: dict, base: Path) -> dict:
    """The config's path fields made absolute against `base` (as load_config does)."""
    data = copy.deepcopy(data)
    def fix(value):
        return value if Path(value).is_absolute() else str((base / value).resolve())
    data["target"]["path"] = fix(data["target"]["path"])
    for key in ("tasks", "routing"):
        if data["router"].get(key):
            data["router"][key] = fix(data["router"][key])
    for d in data["drafters"]:
        if "path" in d.get("options", {}):
            d["options"]["path"] = fix(d["options"]["path"])
    return data


def _testable(data: dict, tiny_zoo) -> tuple[dict, list[str]]:
    """The config with each missing model drafter directory replaced by the tiny model of its
    family; returns it and the drafters swapped."""
    tiny = {"llama": tiny_zoo.llama_drafter, "gpt2": tiny_zoo.gpt2_drafter}
    data, swapped = copy.deepcopy(data), []
    for d in data["drafters"]:
        path = d.get("options", {}).get("path")
        if d["kind"] == "model" and not (Path(path) / "config.json").is_file():
            assert d.get("family") in tiny, f"drafter {d['name']}: give `family` (llama or gpt2) to test it"
            d["options"]["path"] = str(tiny[d["family"]])
            swapped.append(d["name"])
    return data, swapped


@dataclass
class Deployed:
    """One infra system config: as written, as validated here, and the app Ray builds from it."""

    raw: dict
    config: object
    swapped: list[str]
    deployments: dict = field(default_factory=dict)  # name -> Ray's DeploymentSchema


@pytest.fixture(scope="module")
def deployed(tiny_zoo, tmp_path_factory) -> dict[str, Deployed]:
    out = {}
    for name, serve_file in SERVE_CONFIGS.items():
        path = _system_config_file(name)
        raw = _load(path)
        data, swapped = _testable(_absolute(raw, path.parent), tiny_zoo)
        testable = tmp_path_factory.mktemp(f"infra-{name}") / path.name
        testable.write_text(yaml.safe_dump(data))
        # What Serve does with the config: import the builder, call it with the args (the config
        # file, here the testable copy), build the application's deployments.
        app_config = _app(_load(serve_file))
        builder = import_attr(app_config["import_path"])
        app = call_user_app_builder_with_args_if_necessary(builder, {**app_config["args"], "config": str(testable)})
        built = ray_build_app(app, name=app_config["name"])
        out[name] = Deployed(raw, validate_config(data), swapped,
                             {d.name: deployment_to_schema(d) for d in built.deployments})
    return out


# --- parsing and Ray's Serve schema -------------------------------------------------------------

@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    docs = _parsed(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_the_expected_files_exist():
    for path in (*SERVE_CONFIGS.values(), RAYSERVICE, LAUNCHER, DOCKERFILE, INFRA / "README.md",
                 INFRA / "config" / "cluster.yaml", INFRA / "config" / "local.yaml"):
        assert path.is_file(), path


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_ray_serve_schema_accepts_the_serve_configs(name):
    data = _load(SERVE_CONFIGS[name])
    schema = ServeDeploySchema.model_validate(data)
    # Ray's schemas ignore unknown fields (forward compatibility), so a misspelt key would pass
    # silently: every key must be one Ray knows.
    for where, mapping, model in [("top level", data, ServeDeploySchema),
                                  ("http_options", data.get("http_options", {}), HTTPOptionsSchema),
                                  ("grpc_options", data.get("grpc_options", {}), gRPCOptionsSchema),
                                  *[(f"application {a.get('name')}", a, ServeApplicationSchema)
                                    for a in data["applications"]]]:
        unknown = set(mapping) - set(model.model_fields)
        assert not unknown, f"{name}: {where} has keys Ray Serve does not know: {sorted(unknown)}"
    (app,) = schema.applications
    assert app.import_path == "specroute.app:app_builder"
    assert app.route_prefix == "/"
    assert set(app.args) == {"config"}
    assert schema.grpc_options.grpc_servicer_functions == [GRPC_SERVICER]


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_import_paths_resolve(name):
    schema = ServeDeploySchema.model_validate(_load(SERVE_CONFIGS[name]))
    for app in schema.applications:
        assert callable(import_attr(app.import_path)), app.import_path
    # What Serve's gRPC proxy does with them at start.
    functions = gRPCOptions(**schema.grpc_options.model_dump()).grpc_servicer_func_callable
    assert len(functions) == 1 and all(callable(f) for f in functions)


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_the_verifier_autoscales_on_sessions(name, deployed):
    """A policy named in the config imports; the verifier Ray builds scales on sessions."""
    named = ((deployed[name].raw["verifier"].get("deployment") or {}).get("autoscaling") or {}).get("policy")
    if named:
        assert callable(import_attr(named["policy_function"]))
    verifier = deployed[name].deployments["Verifier"]
    assert _policy_function(verifier) == autoscale.POLICY
    assert import_attr(autoscale.POLICY) is autoscale.scale_on_sessions


# --- the specroute configs ----------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_the_named_system_configs_validate_and_match_the_serve_config(name, deployed):
    d, serve = deployed[name], _load(SERVE_CONFIGS[name])
    config = d.config
    assert config.app_name == _app(serve)["name"]  # specroute.serve looks the app up by this name
    assert config.endpoints.http_port == serve["http_options"]["port"]
    assert config.endpoints.host == serve["http_options"]["host"]
    assert config.endpoints.grpc_port == serve["grpc_options"]["port"]
    assert set(d.swapped) <= {x.name for x in config.drafters if x.kind == "model"}
    # Ray's AutoscalingConfig accepted each one while the config validated.
    for deployment in [config.router.deployment, config.verifier.deployment,
                       *(x.deployment for x in config.drafters)]:
        assert deployment.autoscaling is not None, "every infra deployment autoscales"


def test_the_cluster_config_fits_a_gpu_cluster(deployed):
    config = deployed["cluster"].config
    v = config.verifier
    assert v.host == "0.0.0.0", "drafters on other nodes dial verifier replicas directly"
    assert v.deployment.num_gpus == 1 and v.deployment.resources
    assert v.deployment.autoscaling["min_replicas"] >= 1 and v.deployment.autoscaling["max_replicas"] > 1
    model_drafters = [x for x in config.drafters if x.kind == "model"]
    assert {x.family for x in model_drafters} >= {"llama", "gpt2"}
    assert any(x.kind == "ngram" for x in config.drafters)
    for x in model_drafters:
        assert x.deployment.num_gpus == 1 and x.deployment.resources, x.name
        assert not set(x.deployment.resources) & set(v.deployment.resources), "drafters and verifier share GPUs"
    assert config.redis.url and config.endpoints.host == "0.0.0.0"
    # The routing table's default drafter must be deployed (router.ingress.routing_table_for).
    assert "generic-llama" in {x.name for x in config.drafters}


def test_the_local_config_fits_a_two_core_laptop(deployed):
    d = deployed["local"]
    assert not d.config.verifier.deployment.num_gpus
    demand = sum(_max_replicas(s) * (s.ray_actor_options.num_cpus or 0) for s in d.deployments.values())
    assert demand <= LAPTOP_CPUS, f"at their max_replicas the deployments ask for {demand} CPUs"
    for s in d.deployments.values():
        assert not s.ray_actor_options.num_gpus and not s.ray_actor_options.resources, s.name


def test_the_app_has_one_deployment_per_component(deployed):
    for name, d in deployed.items():
        expected = {"Router", "Verifier", "VerifierDirectory", *(deployment_name(x.name) for x in d.config.drafters)}
        assert set(d.deployments) == expected, name


# --- where replicas can run: KubeRay worker groups and launcher node types ----------------------

@dataclass(frozen=True)
class Pool:
    """A kind of Ray node: what one node advertises and how many there can be."""

    name: str
    cpus: float
    gpus: float
    custom: dict
    max_nodes: int

    def fits(self, schema) -> bool:
        options = schema.ray_actor_options
        return (self.cpus >= (options.num_cpus or 0) and self.gpus >= (options.num_gpus or 0)
                and all(self.custom.get(k, 0) >= v for k, v in (options.resources or {}).items()))


def _quantity(value) -> float:
    """A Kubernetes CPU quantity: 8, "8", "500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _start_resources(params: dict) -> dict:
    """KubeRay's rayStartParams.resources: JSON quoted for the shell, '"{\\"a\\": 1}"'."""
    text = params.get("resources")
    if not text:
        return {}
    inner = json.loads(text) if text.startswith('"') else text
    return json.loads(inner)


def _kuberay_pool(name: str, spec: dict, max_nodes: int) -> Pool:
    params = spec.get("rayStartParams", {})
    (container,) = [c for c in spec["template"]["spec"]["containers"] if c["name"].startswith("ray-")]
    limits = container.get("resources", {}).get("limits", {})
    cpus = _quantity(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return Pool(name, cpus, gpus, _start_resources(params), max_nodes)


def _kuberay_pools() -> list[Pool]:
    cluster = _one(_kuberay_docs(), "RayService")["spec"]["rayClusterConfig"]
    return [_kuberay_pool("head", cluster["headGroupSpec"], 1),
            *(_kuberay_pool(g["groupName"], g, g["maxReplicas"]) for g in cluster["workerGroupSpecs"])]


def _launcher_pools() -> list[Pool]:
    launcher = _load(LAUNCHER)
    pools = []
    for name, node in launcher["available_node_types"].items():
        resources = dict(node.get("resources", {}))
        cpus, gpus = resources.pop("CPU", 0), resources.pop("GPU", 0)
        pools.append(Pool(name, cpus, gpus, resources,
                          1 if name == launcher["head_node_type"] else node["max_workers"]))
    return pools


def _check_placement(deployments: dict, pools: list[Pool], what: str) -> dict[str, set[str]]:
    """Every replica fits somewhere; custom resources, GPUs and CPUs suffice at max_replicas."""
    where = {name: {p.name for p in pools if p.fits(s)} for name, s in deployments.items()}
    for name, fits in where.items():
        assert fits, f"{what}: no node can run a {name} replica ({deployments[name].ray_actor_options})"
    demand: dict[str, float] = {}
    for s in deployments.values():
        o, n = s.ray_actor_options, _max_replicas(s)
        for key, amount in [("CPU", o.num_cpus or 0), ("GPU", o.num_gpus or 0), *(o.resources or {}).items()]:
            demand[key] = demand.get(key, 0) + n * amount
    for key, amount in demand.items():
        supply = sum(p.max_nodes * {"CPU": p.cpus, "GPU": p.gpus}.get(key, p.custom.get(key, 0)) for p in pools)
        assert amount <= supply, f"{what}: {key} {amount:g} asked at max_replicas, {supply:g} at most"
    return where


def _check_gpu_groups(deployed: Deployed, pools: list[Pool], what: str) -> None:
    where = _check_placement(deployed.deployments, pools, what)
    by_name = {p.name: p for p in pools}
    verifier = where["Verifier"]
    drafters = set().union(*(where[deployment_name(x.name)] for x in deployed.config.drafters if x.kind == "model"))
    assert verifier and drafters and not verifier & drafters, \
        f"{what}: the verifier ({verifier}) and the model drafters ({drafters}) need distinct GPU groups"
    for group in verifier | drafters:
        assert by_name[group].gpus >= 1, f"{what}: {group} has no GPU"
    # Each GPU group advertises exactly the custom resources its deployments request.
    asked = lambda names: set().union(*(deployed.deployments[n].ray_actor_options.resources or {} for n in names))
    assert {k for g in verifier for k in by_name[g].custom} == asked(["Verifier"])
    model = [deployment_name(x.name) for x in deployed.config.drafters if x.kind == "model"]
    assert {k for g in drafters for k in by_name[g].custom} == asked(model)
    # CPU-only replicas (router, ngram) stay off GPU groups.
    for name, s in deployed.deployments.items():
        if not s.ray_actor_options.num_gpus and s.ray_actor_options.resources:
            assert not where[name] & (verifier | drafters), f"{what}: {name} can land on a GPU group"


def test_rayservice_embeds_the_serve_config():
    service = _one(_kuberay_docs(), "RayService")
    embedded = service["spec"]["serveConfigV2"]
    assert isinstance(embedded, str), "serveConfigV2 is a block string"
    expected = SERVE_CONFIGS["cluster"].read_text()
    block = "\n".join("    " + line if line else "" for line in expected.splitlines() if not line.startswith("#"))
    assert yaml.safe_load(embedded) == yaml.safe_load(expected), (
        f"spec.serveConfigV2 in {RAYSERVICE.relative_to(REPO)} differs from {SERVE_CONFIGS['cluster'].relative_to(REPO)}"
        f"; paste this under `serveConfigV2: |`:\n{block}")
    assert service["apiVersion"] == "ray.io/v1"


def test_rayservice_places_verifier_and_drafters_on_their_gpu_groups(deployed):
    _check_gpu_groups(deployed["cluster"], _kuberay_pools(), "RayService")
    cluster = _one(_kuberay_docs(), "RayService")["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        for c in group["template"]["spec"]["containers"]:
            limits = c.get("resources", {}).get("limits", {})
            if "nvidia.com/gpu" in limits:  # GPUs are whole in Kubernetes; requests must equal limits
                assert c["resources"]["requests"].get("nvidia.com/gpu") == limits["nvidia.com/gpu"]


def test_rayservice_redis_is_where_the_cluster_config_dials(deployed):
    url = urlparse(deployed["cluster"].config.redis.url)
    docs = _kuberay_docs()
    service = _one(docs, "Service", url.hostname)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == (url.port or 6379)]
    redis = _one(docs, "Deployment", url.hostname)
    pod = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert redis["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    target = port.get("targetPort", port["port"])
    assert (ports.get(target) if isinstance(target, str) else target) in ports.values()


def test_rayservice_exposes_serve_and_mounts_the_models(deployed):
    docs = _kuberay_docs()
    serve = _load(SERVE_CONFIGS["cluster"])
    cluster = _one(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    head_ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert head_ports["serve"] == serve["http_options"]["port"]  # KubeRay's serve Service uses it
    grpc = _one(docs, "Service", "specroute-grpc")
    assert [p["port"] for p in grpc["spec"]["ports"]] == [serve["grpc_options"]["port"]]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    raw = deployed["cluster"].raw  # the paths as written (the validated copy has tiny models swapped in)
    model_paths = [Path(raw["target"]["path"]), Path(raw["router"]["tasks"]),
                   *(Path(x["options"]["path"]) for x in raw["drafters"] if "path" in x.get("options", {}))]
    images = set()
    for group in groups:
        pod = group["template"]["spec"]
        assert grpc["spec"]["selector"].items() - {("ray.io/serve", "true")} <= \
            group["template"]["metadata"]["labels"].items(), "the gRPC Service must select every Ray pod"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            images.add(c["image"])
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            for path in model_paths:  # Serve's build task may run on any node: all need the models
                covering = [m for m in mounts if path.is_relative_to(m)]
                assert covering, f"{path} is not mounted in {c['name']} of {group.get('groupName', 'head')}"
                assert mounts[covering[0]]["persistentVolumeClaim"]["claimName"] in claims
    assert len(images) == 1, f"one image for every Ray pod, got {images}"
    assert cluster["rayVersion"] == ray.__version__, "the tests validate against the Ray the cluster runs"


# --- the cluster launcher -----------------------------------------------------------------------

def test_ray_accepts_the_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config as validate_cluster
    config = prepare_config(copy.deepcopy(_load(LAUNCHER)))  # what `ray up` does before launching
    validate_cluster(config)
    assert config["provider"]["type"] == "aws"


def test_the_launcher_places_verifier_and_drafters_on_their_gpu_node_types(deployed):
    launcher = _load(LAUNCHER)
    _check_gpu_groups(deployed["cluster"], _launcher_pools(), "launcher")
    types = launcher["available_node_types"]
    assert launcher["max_workers"] >= sum(t.get("max_workers", 0) for n, t in types.items()
                                          if n != launcher["head_node_type"])
    assert types[launcher["head_node_type"]]["resources"].get("CPU") == 0, "no replicas on the head"


def test_the_launcher_installs_mounts_and_deploys_like_the_image(deployed):
    launcher = _load(LAUNCHER)
    mounts = launcher["file_mounts"]
    assert Path(mounts[APP_ROOT]) == Path("."), "the repository at /app, like the image"
    raw = deployed["cluster"].raw
    for path in [raw["target"]["path"], raw["router"]["tasks"],
                 *(x["options"]["path"] for x in raw["drafters"] if "path" in x.get("options", {}))]:
        assert any(Path(path).is_relative_to(m) for m in mounts if m != APP_ROOT), f"{path} is not mounted"
    # torch first (the README's order, the pyproject pin), then the project.
    setup = launcher["setup_commands"]
    torch_pin = re.search(r'"(torch==[^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert setup.index(f"pip install {torch_pin}") < next(i for i, c in enumerate(setup) if "-e /app" in c)
    # The head deploys the cluster Serve config, which is in the repository at that path.
    start = " ".join(launcher["head_start_ray_commands"])
    (deploy,) = re.findall(r"serve deploy (\S+)", start)
    assert _in_repo(deploy) == SERVE_CONFIGS["cluster"]
    # Redis takes 6379 on the head (the config's specroute-redis:6379), so Ray's GCS moves, and
    # the workers join at the port the head listens on.
    url = urlparse(deployed["cluster"].config.redis.url)
    (gcs,) = re.findall(r"ray start --head --port=(\d+)", start)
    assert int(gcs) != url.port
    assert f"$RAY_HEAD_IP:{gcs}" in " ".join(launcher["worker_start_ray_commands"])
    assert url.hostname in start and url.hostname in " ".join(launcher["worker_start_ray_commands"])
    assert f"rayproject/ray:{ray.__version__}-" in launcher["docker"]["image"]


def test_the_image_installs_torch_first_and_puts_the_repo_at_app():
    text = DOCKERFILE.read_text()
    torch_pin = re.search(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert f"ARG TORCH_VERSION={torch_pin}" in text
    assert text.index("torch==${TORCH_VERSION}") < text.index("-e /app")
    assert f"COPY . {APP_ROOT}" in text
    ray_version = re.search(r"ARG RAY_VERSION=(\S+)", text).group(1)
    cluster = _one(_kuberay_docs(), "RayService")["spec"]["rayClusterConfig"]
    assert ray_version == cluster["rayVersion"]
    images = {c["image"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]}
    (image,) = images
    assert f"-t {image} " in text, "the manifest runs the image the Dockerfile's build command tags"
