"""`specroute demo` on the tiny zoo. In process (`--in-process`): every drafter's output is identical
to plain decoding. On the services (Ray Serve, through the SDK): every answer has text, a speedup over
plain decoding through the same system and is identical to it, and a summary line ends the table.
(The services demo's requests are also exercised against the running system in test_system.py.)
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


def test_services_demo_prints_text_speedup_and_a_summary_for_every_prompt(built_zoo, capsys):
    """`specroute demo` itself (Ray Serve, the SDK): every answer has text, its speedup over plain
    decoding through the same system, and is identical to it; a summary line ends the table."""
    import ast
    import re

    from specroute.demo import PROMPTS_PER_TASK, run_demo
    from specroute.zoo.presets import ALL_FAMILIES
    from tests.specroute.systems import RAY_CPUS
    run_demo(zoo=built_zoo, preset="tiny", max_new_tokens=16, num_cpus=RAY_CPUS)
    captured = capsys.readouterr()
    out = captured.out
    texts = [ast.literal_eval(line[len("text:"):].strip()) for line in out.splitlines() if line.startswith("text:")]
    assert len(texts) == len(ALL_FAMILIES) * PROMPTS_PER_TASK, out
    assert all(texts), out  # the tiny target writes little more than whitespace, but never nothing
    speedups = re.findall(r"plain decoding [\d.]+ tok/s: speedup ([\d.]+)x   identical to plain decoding: (yes|no)", out)
    assert len(speedups) == len(texts) and all(same == "yes" for _, same in speedups), out
    assert re.search(rf"^{len(texts)} prompts: mean speedup [\d.]+x over plain decoding .*"
                     r"identical to plain decoding: all$", out, re.M), out
    assert "return forward_call" not in captured.err and "[demo] shut down cleanly" in out
