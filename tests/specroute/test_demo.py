"""`specroute demo --in-process` on the tiny zoo: every drafter's output is identical to plain decoding.

(The services demo's requests are exercised against the running system in test_system.py.)
"""

from specroute.demo import run_engine_demo


def test_demo_runs_and_every_drafter_is_lossless(built_zoo, capsys):
    run_engine_demo(zoo=built_zoo, preset="tiny", max_new_tokens=12)
    out = capsys.readouterr().out
    from specroute.zoo.presets import ALL_FAMILIES
    rows = [line for line in out.splitlines() if line.startswith(tuple(f"{task} " for task in ALL_FAMILIES))]
    drafters = {row.split()[1] for row in rows}
    assert {"none", "ngram", "generic-llama", "generic-gpt2", "prose-gpt2"} <= drafters
    assert any(name.startswith("code-") for name in drafters)  # sized: its name says which candidate won
    assert all(row.split()[-1] == "True" for row in rows), out
    assert "Every output identical to plain target decoding: True" in out
