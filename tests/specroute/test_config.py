"""The system config: validated at the edge, with errors that name the bad field."""

from __future__ import annotations

import re

import pytest
import yaml

from specroute.config import ConfigError, load_config, validate_config


@pytest.fixture()
def config_dict(built_zoo):
    return {"target": {"path": str(built_zoo / "target")},
            "drafters": [{"name": "g", "kind": "model", "options": {"path": str(built_zoo / "generic-llama")}},
                         {"name": "n", "kind": "ngram", "deployment": {"num_gpus": 0, "num_cpus": 0.1}}],
            "router": {"tasks": str(built_zoo / "tasks")}}


def test_a_valid_config_and_relative_paths(tmp_path, built_zoo, config_dict):
    config_dict["target"]["path"] = "zoo/target"
    config_dict["drafters"][0]["options"]["path"] = "zoo/generic-llama"
    (tmp_path / "zoo").symlink_to(built_zoo)
    path = tmp_path / "specroute.yaml"
    path.write_text(yaml.safe_dump(config_dict))
    config = load_config(path)
    assert config.target.path == (tmp_path / "zoo/target").resolve()
    assert config.router.routing_file == config.router.tasks / "routing.json"
    assert config.drafter("n").deployment.serve_options() == {
        "max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0}, "num_replicas": 1}


def test_a_hybrid_drafters_datastore_resolves_like_its_path(tmp_path, built_zoo, config_dict):
    config_dict["drafters"][0] |= {"kind": "hybrid", "options": {"path": "zoo/generic-llama",
                                                                  "datastore": "zoo/datastores/code.npz"}}
    (tmp_path / "zoo").symlink_to(built_zoo)
    path = tmp_path / "specroute.yaml"
    path.write_text(yaml.safe_dump(config_dict))
    options = load_config(path).drafter("g").options
    assert options["datastore"] == str((tmp_path / "zoo/datastores/code.npz").resolve())
    config_dict["drafters"][0]["options"]["datastore"] = str(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="drafters.0.*datastore .*missing.npz does not exist"):
        validate_config(config_dict)


def test_a_steered_drafter_is_configured_like_any_drafter_directory(tmp_path, built_zoo, config_dict):
    config_dict["drafters"][0] |= {"kind": "steered", "options": {"path": "zoo/steered-generic-llama", "top_k": 2}}
    (tmp_path / "zoo").symlink_to(built_zoo)
    path = tmp_path / "specroute.yaml"
    path.write_text(yaml.safe_dump(config_dict))
    spec = load_config(path).drafter("g").spec()
    assert spec.kind == "steered" and spec.options["path"] == str((tmp_path / "zoo/steered-generic-llama").resolve())
    config_dict["drafters"][0]["kind"] = "model"
    path.write_text(yaml.safe_dump(config_dict))
    with pytest.raises(ConfigError, match="drafters.0.*load it as kind 'steered'"):
        load_config(path)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["drafters"][1]["deployment"].update(num_gpus=-1), "drafters.1.deployment.num_gpus"),
    (lambda c: c["drafters"][0].update(kind="bogus"), "unknown drafter kind 'bogus'"),
    (lambda c: c["drafters"][0]["options"].update(top_k=0), "top_k"),
    (lambda c: c["drafters"][0]["options"].update(path="/nonexistent"), "no config.json"),
    (lambda c: c["drafters"].append(dict(c["drafters"][1])), "unique"),
    (lambda c: c["router"].update(max_new_tokens_limit=0), "router.max_new_tokens_limit"),
    (lambda c: c["router"].update(colour="red"), "router.colour: Extra inputs are not permitted"),
    (lambda c: c.update(verifier={"max_sessions": 0}), "verifier.max_sessions"),
    (lambda c: c.update(endpoints={"grpc_port": 70000}), "endpoints.grpc_port"),
    (lambda c: c.pop("target"), "target: Field required"),
    (lambda c: c.update(drafters=[]), "drafters"),
    (lambda c: c["drafters"][1]["deployment"].update(autoscaling={"max_replica": 2}),
     "drafters.1.deployment.autoscaling: Value error, unknown autoscaling field(s) ['max_replica']"),
    (lambda c: c["drafters"][1]["deployment"].update(autoscaling={"min_replicas": 3, "max_replicas": 2}),
     "max_replicas (2) must be greater than or equal to min_replicas (3)"),
    (lambda c: c.update(verifier={"max_batch_tokens": 0}), "verifier.max_batch_tokens"),
    (lambda c: c["drafters"][1]["deployment"].update(cpus=[1, 1]),
     "drafters.1.deployment.cpus: Value error, CPU indices must be >= 0 and distinct, got [1, 1]"),
    (lambda c: c.update(verifier={"deployment": {"cpus": []}}), "verifier.deployment.cpus: List should have at least 1"),
    (lambda c: c.update(ray_cpus=[-1]), "ray_cpus: Value error, CPU indices must be >= 0 and distinct, got [-1]"),
    (lambda c: c["router"].update(deployment={"cpus": [1]}), "router: Value error, deployment.cpus pins compute threads"),
])
def test_bad_fields_are_named(config_dict, edit, words):
    edit(config_dict)
    with pytest.raises(ConfigError, match=re.escape(words)):
        validate_config(config_dict)


def test_cpu_pinning_is_off_unless_asked_for(config_dict):
    config = validate_config(config_dict)
    assert config.ray_cpus is None and config.verifier.deployment.cpus is None
    config_dict["ray_cpus"], config_dict["verifier"] = [0], {"deployment": {"cpus": [1]}}
    config = validate_config(config_dict)
    assert (config.ray_cpus, config.verifier.deployment.cpus, config.verifier.deployment.num_cpus) == ([0], [1], 0.5)


def test_a_partial_deployment_keeps_the_components_own_cpus(config_dict):
    config_dict["verifier"] = {"deployment": {"torch_threads": 2}}
    config_dict["router"]["deployment"] = {"num_replicas": 2}
    config = validate_config(config_dict)
    assert (config.verifier.deployment.num_cpus, config.verifier.deployment.torch_threads) == (0.5, 2)
    assert (config.router.deployment.num_cpus, config.router.deployment.num_replicas) == (0.1, 2)
    assert validate_config({**config_dict, "verifier": {}}).verifier.deployment.num_cpus == 0.5
    config_dict["verifier"]["deployment"]["num_cpus"] = 1.0
    assert validate_config(config_dict).verifier.deployment.num_cpus == 1.0


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("target: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_the_app_builder_import_path_builds_the_graph(config_dict):
    from ray.serve import Application

    from specroute.app import app_builder, build_app
    config_dict["router"]["deployment"] = {"autoscaling": {"min_replicas": 1, "max_replicas": 3}}
    assert isinstance(build_app(validate_config(config_dict)), Application)
    assert isinstance(app_builder(config_dict), Application)


def test_the_example_config_is_valid_once_the_demo_zoo_exists(tmp_path, built_zoo):
    from pathlib import Path
    example = yaml.safe_load((Path(__file__).parents[2] / "infra/config/demo.yaml").read_text())
    example["target"]["path"] = str(built_zoo / "target")
    example["drafters"][0]["options"]["path"] = str(built_zoo / "generic-llama")
    example["router"]["tasks"] = str(built_zoo / "tasks")
    config = validate_config(example)
    assert config.router.deployment.serve_options()["autoscaling_config"]["max_replicas"] == 2


def test_resources_and_the_verifier_autoscaling_policy():
    from specroute.app import verifier_serve_options
    from specroute.config import DeploymentOptions
    from verifier_service.autoscale import POLICY
    options = DeploymentOptions(num_gpus=1, resources={"verifier_gpu": 1},
                                autoscaling={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8})
    serve_options = verifier_serve_options(options)
    assert serve_options["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 1, "resources": {"verifier_gpu": 1}}
    assert serve_options["autoscaling_config"]["policy"] == {"policy_function": POLICY}
    assert "num_replicas" not in serve_options
    theirs = {"policy_function": "ray.serve.autoscaling_policy:replica_queue_length_autoscaling_policy"}
    own = DeploymentOptions(autoscaling={"max_replicas": 2, "policy": theirs})
    assert verifier_serve_options(own)["autoscaling_config"]["policy"] == theirs
