"""The steering benchmark: which methods a manifest gives, its summaries, costs, goal verdicts and
markdown on synthetic tallies, and (on the tiny zoo, which steers its generic Llama drafter) a run
end to end that writes its results (not a timing test)."""

from __future__ import annotations

import json

import pytest

from bench.steering import (OOD, OOD_PROMPTS, TASKS, Method, Tally, goal_verdicts, load_ood_prompts, markdown,
                            run_steering_bench, steering_cost, steering_methods, summarise, wire_bytes)
from core.reports import GenerationReport
from core.states import StateRequest
from specroute.measure import PLAIN


def _bench_manifest() -> dict:
    return {
        "drafters": [{"name": "generic-llama", "path": "generic-llama", "kind": "model", "family": "llama"},
                     {"name": "generic-gpt2", "path": "generic-gpt2", "kind": "model", "family": "gpt2"},
                     {"name": "code-llama", "path": "code-llama", "kind": "model", "family": "llama"}],
        "pretrained_drafters": [
            {"name": "generic-llama-pretrained", "path": "generic-llama-pretrained", "kind": "model",
             "family": "llama", "distilled": "generic-llama"},
            {"name": "generic-gpt2-pretrained", "path": "generic-gpt2-pretrained", "kind": "model",
             "family": "gpt2", "distilled": "generic-gpt2"}],
        "steered_drafters": [
            {"name": f"steered-{base}", "path": f"steered-{base}", "kind": "steered", "family": family,
             "start": start, "base": base, "heldout_kl_before": 1.0, "heldout_kl_after": 0.5}
            for family in ("llama", "gpt2")
            for start, base in (("distilled", f"generic-{family}"), ("pretrained", f"generic-{family}-pretrained"))],
    }


def test_methods_of_the_bench_and_tiny_manifests():
    methods = steering_methods(_bench_manifest())
    assert list(methods) == [PLAIN, "llama/pretrained", "llama/distilled", "llama/steered-pretrained",
                             "llama/steered-distilled", "gpt2/pretrained", "gpt2/distilled",
                             "gpt2/steered-pretrained", "gpt2/steered-distilled"]
    assert methods["llama/steered-pretrained"].base == "llama/pretrained"
    assert methods["gpt2/steered-distilled"].base == "gpt2/distilled"
    assert methods["gpt2/distilled"].entry["path"] == "generic-gpt2"
    tiny = _bench_manifest()
    tiny["pretrained_drafters"] = []
    tiny["steered_drafters"] = [e for e in tiny["steered_drafters"] if e["name"] == "steered-generic-llama"]
    methods = steering_methods(tiny)
    assert list(methods) == [PLAIN, "llama/distilled", "llama/steered-distilled"]
    assert methods["llama/steered-distilled"].base == "llama/distilled"
    assert list(steering_methods({"drafters": tiny["drafters"]})) == [PLAIN]  # a zoo from before steering


def test_ood_prompts_are_a_dozen_short_texts():
    prompts = load_ood_prompts(OOD_PROMPTS)
    assert 10 <= len(prompts) <= 16 and len(set(prompts)) == len(prompts)
    assert all(0 < len(p) < 300 for p in prompts)
    assert not any(p.startswith(("def ", "Convert ", "Context:", "English:")) for p in prompts)


def test_wire_bytes_from_the_request():
    assert wire_bytes(StateRequest(layers=(0, 1, 2), dtype="float16", last_only=True), 64) == 1 * 3 * 64 * 2
    assert wire_bytes(StateRequest(layers=(0, 1, 2), dtype="float32", last_only=True), 64) == 3 * 64 * 4
    assert wire_bytes(StateRequest(layers=(-1,), dtype="float16"), 64, tau=2.5) == 2.5 * 64 * 2


def _tally(tokens: int, rounds: int, seconds: float, draft_s: float, output: list[int]) -> Tally:
    tally = Tally()
    stats = GenerationReport(rounds=rounds, num_emitted=tokens, draft_time_s=draft_s, wall_time_s=seconds)
    tally.add(output, seconds, stats)
    return tally


# tau per (method, scope): plain 1; distilled 2; steered-distilled 2.5 on tasks (a +25% gain), 1.5 on ood.
TAU = {PLAIN: 1.0, "llama/distilled": 2.0, "llama/steered-distilled": 2.5}
TINY_METHODS = {PLAIN: Method(PLAIN, PLAIN),
                "llama/distilled": Method("llama/distilled", "distilled", "llama", {"path": "generic-llama"}),
                "llama/steered-distilled": Method("llama/steered-distilled", "steered-distilled", "llama",
                                                  {"path": "steered-generic-llama"}, base="llama/distilled")}


def _reps(greedy_mismatch: bool = False) -> list[dict]:
    reps = []
    for _ in range(2):
        rep = {}
        for scope in ("code", "math", OOD):
            row = {}
            for m, tau in TAU.items():
                tau = 1.5 if scope == OOD and m != PLAIN else tau
                tokens = 30  # the same output from every method, in fewer rounds the longer tau
                rounds = round(tokens / tau)
                seconds = 0.01 * rounds  # 10 ms a round for everyone
                draft = 0.0 if m == PLAIN else (0.002 if "steered" in m else 0.0019) * rounds
                output = [1] * tokens if not (greedy_mismatch and m == "llama/steered-distilled") else [2] * tokens
                row[m] = _tally(tokens, rounds, seconds, draft, output)
            rep[scope] = row
        reps.append(rep)
    return reps


def test_summaries_costs_goals_and_markdown_on_synthetic_tallies():
    methods = list(TINY_METHODS)
    greedy = summarise(_reps(), methods, greedy=True)
    assert set(greedy) == {"code", "math", TASKS, OOD}
    assert greedy["code"]["llama/steered-distilled"]["tau"] == 2.5
    assert greedy[TASKS]["llama/distilled"]["mean_tau_of_tasks"] == 2.0
    assert greedy[OOD]["llama/distilled"]["tau"] == 1.5
    assert greedy[TASKS][PLAIN]["speedup"] == 1.0
    assert greedy[TASKS]["llama/steered-distilled"]["speedup"] == pytest.approx(2.5)
    assert greedy[TASKS]["llama/distilled"]["round_ms"] == pytest.approx(10.0)
    assert greedy[TASKS]["llama/steered-distilled"]["draft_ms_per_round"] == pytest.approx(2.0)
    assert all(row["lossless"] for rows in greedy.values() for row in rows.values())
    sampled = summarise(_reps(greedy_mismatch=True), methods, greedy=False)
    assert all(row["lossless"] is None for rows in sampled.values() for row in rows.values())
    lossy = summarise(_reps(greedy_mismatch=True), methods, greedy=True)
    assert lossy["code"]["llama/steered-distilled"]["lossless"] is False

    by_t = {"0": greedy, "1": sampled}
    overhead = {"llama/steered-distilled": {"bias_ms": 0.05, "wire_bytes_per_round": 384}}
    cost = steering_cost(by_t, TINY_METHODS, overhead)
    row = cost["0"]["llama/steered-distilled"]
    assert row["base"] == "llama/distilled" and row["extra_draft_ms"] == pytest.approx(0.1)
    assert row["extra_share"] == pytest.approx(0.01) and row["bias_share"] == pytest.approx(0.005)
    goals = goal_verdicts(by_t, cost, TINY_METHODS)
    kinds = {(g["goal"], g["temperature"]): g for g in goals}
    assert kinds[("tau_gain", "0")]["value"] == pytest.approx(0.5)  # accepted per round: 1.0 -> 1.5 and kinds[("tau_gain", "1")]["met"] is True
    assert kinds[("ood", "0")]["met"] is None  # no pretrained drafter to compare with
    assert kinds[("cost", "0")]["met"] is True
    text = markdown({"setup": {"command": "python -m bench steering", "machine": "m", "python": "3.11",
                               "torch": "2", "zoo": "zoo/tiny", "zoo_preset": "tiny", "target_params": 1000,
                               "hidden": 64, "target_layers": 2, "tree": {"top_k": 2}, "prompts_per_task": 2,
                               "ood_prompts": 1, "max_new_tokens": 8, "repeats": 2, "methods": methods,
                               "bias_calls": 5},
                     "by_temperature": by_t, "cost": cost, "goals": goals})
    assert "| mean of tasks | 1.00 | 2.00 | 2.50 |" in text
    assert f"| {OOD} | 1.00 | 1.50 | 1.50 |" in text
    assert "+50.0% | met" in text and "n/a" in text and "yes, every method" in text

    # A steered drafter that gains less than the goal, costs more than it, and loses OOD to the pretrained one.
    methods_p = {**TINY_METHODS, "llama/pretrained": Method("llama/pretrained", "pretrained", "llama", {"path": "p"})}
    for table in by_t.values():
        for scope in table:
            table[scope]["llama/pretrained"] = {**table[scope]["llama/distilled"], "tau": 1.8}
            table[scope]["llama/steered-distilled"]["mean_tau_of_tasks"] = 2.1
    cost["0"]["llama/steered-distilled"]["extra_share"] = 0.2
    kinds = {(g["goal"], g["temperature"]): g for g in goal_verdicts(by_t, cost, methods_p)}
    assert kinds[("tau_gain", "0")]["met"] is False and kinds[("cost", "0")]["met"] is False
    assert kinds[("ood", "0")]["met"] is False and kinds[("ood", "0")]["against"] == "llama/pretrained"


def test_steering_bench_writes_results(built_zoo, tmp_path):
    zoo = built_zoo  # the tiny zoo steers its generic Llama drafter
    ood = tmp_path / "ood.jsonl"
    ood.write_text("\n".join(json.dumps({"prompt": p}) for p in load_ood_prompts()[:2]) + "\n")
    results = run_steering_bench(zoo=zoo, preset="tiny", prompts_per_task=1, max_new_tokens=8, repeats=1,
                                 out=tmp_path / "out", ood_prompts=ood, bias_calls=5)
    for name in ("steering.md", "steering.json", "steering.png"):
        assert (tmp_path / "out" / name).is_file()
    written = json.loads((tmp_path / "out" / "steering.json").read_text())
    methods = written["setup"]["methods"]
    assert {PLAIN, "llama/distilled", "llama/steered-distilled"} <= set(methods), methods
    for key, table in written["by_temperature"].items():
        assert OOD in table and TASKS in table
        for scope, rows in table.items():
            assert set(rows) == set(methods)
            for method, row in rows.items():
                assert row["lossless"] is (True if key == "0" else None), (key, scope, method)
                assert row["tau"] >= 1.0
    cost = results["cost"]["0"]["llama/steered-distilled"]
    assert cost["base"] == "llama/distilled" and cost["bias_ms"] > 0 and cost["round_ms"] > 0
    hidden = written["setup"]["hidden"]
    assert cost["wire_bytes_per_round"] == 1 * 3 * hidden * 2  # one row of three layers in float16
    assert {g["goal"] for g in written["goals"]} >= {"tau_gain", "cost"}
    assert "Steering cost per round" in (tmp_path / "out" / "steering.md").read_text()
