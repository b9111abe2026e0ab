"""Pretraining checkpoints and resumes mid-run, and a zoo build resumes its target's training."""

import torch

from specroute.zoo.presets import ArchSpec
from specroute.zoo.training import pretrain

TOKENS = [(i * 7 + i // 13) % 97 for i in range(4000)]


def _model():
    return ArchSpec(family="llama", hidden=32, layers=1).build(97, 64, 0, seed=3)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    whole = _model()
    whole_losses = pretrain(whole, TOKENS, 12, 4, 32, 3e-3, seed=1)
    ckpt = tmp_path / "target.ckpt"
    resumed = _model()
    pretrain(resumed, TOKENS, 12, 4, 32, 3e-3, seed=1, checkpoint=ckpt, checkpoint_every=5, until=7)
    assert torch.load(ckpt, weights_only=False)["step"] == 7
    torch.manual_seed(12345)  # another process's random state: the checkpoint restores its own
    again = _model()  # a fresh process would build the model anew
    losses = pretrain(again, TOKENS, 12, 4, 32, 3e-3, seed=1, checkpoint=ckpt, checkpoint_every=5)
    assert losses == whole_losses
    for (name, a), (_, b) in zip(whole.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert not ckpt.with_suffix(".ckpt.partial").exists()


def test_a_zoo_build_resumes_its_targets_training_mid_stage(built_zoo, tmp_path):
    """A build stopped mid-way through the target's training (its checkpoint on disk, the stage
    not done) resumes it, redoes nothing else, and ends with the weights of an uninterrupted build."""
    import json
    import shutil

    from specroute.zoo.build import ZooBuilder
    from specroute.zoo.presets import PRESETS
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    record = json.loads((zoo / ".stages" / "target.json").read_text())
    (zoo / ".stages" / "target.json").unlink()
    shutil.rmtree(zoo / "target")
    preset = PRESETS["tiny"]
    builder = ZooBuilder(preset, zoo)
    model = builder._new_model(preset.target, preset.seed)
    ckpt = zoo / ".stages" / f"target-{record['key']}.ckpt"
    t = preset.target_train
    pretrain(model, builder._stream(builder._splits()["train"]), t.steps, t.batch_size, preset.seq_len, t.lr,
             preset.seed, checkpoint=ckpt, until=t.steps // 2)
    logs = []
    ZooBuilder(preset, zoo, log=logs.append).build()
    assert any(line.startswith("[zoo] stage 3 of ") and ": target ..." in line for line in logs)
    assert sum("skipped" in line for line in logs) == len(list((zoo / ".stages").glob("*.json"))) - 1
    assert not ckpt.exists()
    from safetensors.torch import load_file
    a, b = load_file(built_zoo / "target" / "model.safetensors"), load_file(zoo / "target" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unlikelihood_penalises_the_blocks_earlier_tokens_but_not_the_next():
    from specroute.zoo.training import _lm_loss
    model = _model().eval()
    batch = torch.tensor([[1, 2, 1, 3]])
    with torch.no_grad():
        logits = model(input_ids=batch).logits[0, :-1].float()
        p = torch.softmax(logits, -1)
        mle = torch.nn.functional.cross_entropy(logits, batch[0, 1:])
        candidates = [{1}, {2}, {1, 2}]  # earlier tokens at each position, less the next token
        ul = -sum(torch.log(1 - p[t, c]) for t, cs in enumerate(candidates) for c in cs) / 3
        assert torch.allclose(_lm_loss(model, batch, 0.5), mle + 0.5 * ul, atol=1e-5)
        assert torch.allclose(_lm_loss(model, batch, 0.0), mle, atol=1e-5)
