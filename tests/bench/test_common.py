"""What every benchmark shares: the sampled-generation check every benchmark runs on its zoo."""

from bench.common import check_sampled_generation
from specroute.zoo.manifest import feature_drafters, load_manifest
from verifier_service.target import TargetModel


def test_every_drafter_samples_on_every_task(built_zoo):
    manifest = load_manifest(built_zoo)
    target = TargetModel.from_dir(built_zoo / manifest["target"]["path"], device="cpu")
    done = check_sampled_generation(built_zoo, manifest, target, prompts_per_task=1, max_new_tokens=12)
    every = len(manifest["drafters"]) + len(feature_drafters(manifest))  # feature drafters sample too
    assert done == len(manifest["corpus"]["families"]) * every
