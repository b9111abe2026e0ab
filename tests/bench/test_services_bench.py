"""`python -m bench services` on the tiny zoo: runs end to end, greedy and seeded T=1, the service's output
equals the engine's; with CPUs to pin to, Ray's processes start on one and only the compute threads run on
the other."""

import json
import os

import pytest


@pytest.mark.integration
def test_services_bench_writes_its_results(built_zoo, tmp_path):
    from bench.services import run_services_bench
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    ray_cpus, compute_cpus = ([cpus[0]], [cpus[-1]]) if len(cpus) >= 2 else (None, None)
    result = run_services_bench(built_zoo, "tiny", prompts_per_task=1, max_new_tokens=8, repeats=1, out=tmp_path,
                                verifier_threads=1, draft_ahead=2, ray_cpus=ray_cpus, compute_cpus=compute_cpus,
                                check_sampling=False)  # test_common tests the pre-run sampling check
    assert result["mismatches"] == 0, "drafting ahead or not, every output is the engine's"
    assert set(result["draft_ahead"].values()) <= {0, 2} and 2 in result["draft_ahead"].values()
    assert result["verifier_threads"] == 1 and "verifier 1," in (tmp_path / "services.md").read_text()
    assert set(result["per_task"]) == set(json.loads((tmp_path / "services.json").read_text())["per_task"])
    for row in result["per_task"].values():
        assert all(row[m]["tokens_per_s"] > 0 and row[m]["ratio"] > 0 for m in ("generate", "stream"))
        faster = max(("engine-1t", "engine-2t"), key=lambda m: row[m]["tokens_per_s"])
        assert row["engine"]["threads"] == {"engine-1t": 1, "engine-2t": 2}[faster]
    assert set(result["goal_met"]) == set(result["overall_ratio"]) == {"generate", "stream"}
    text = (tmp_path / "services.md").read_text()
    assert (tmp_path / "services.png").stat().st_size > 0 and "generate() / engine" in text and "stream() / engine" in text
    # Linux: each round's CPU time and run-queue wait, for the engine and for both replicas of generate().
    for row in result["per_task"].values():
        ms = row["per_round_ms"]
        processes = [ms["engine-1t"]["engine"], ms["generate"]["drafter"], ms["generate"]["verifier"]]
        assert all(p["cpu"] > 0 and p["wait"] >= 0 for p in processes)
    assert "drafter replica: cpu / waiting" in text
    assert "drafted ahead" in text and all(0 <= row["generate"]["drafted_ahead"] <= 1 for row in result["per_task"].values())
    # Greedy and seeded T=1 side by side; the top-level figures are the greedy ones.
    assert result["temperatures"] == [0.0, 1.0] and set(result["by_temperature"]) == {"0", "1"}
    greedy, sampled = result["by_temperature"]["0"], result["by_temperature"]["1"]
    assert greedy["per_task"] == result["per_task"] and greedy["mismatches"] == result["mismatches"] == 0
    assert result["mismatches_t1"] == sampled["mismatches"], "counted, not hidden"
    assert set(sampled["per_task"]) == set(result["per_task"]) and set(sampled["overall_ratio"]) == {"generate", "stream"}
    for t in (greedy, sampled):
        for row in t["per_task"].values():
            assert all(row[m]["tokens_per_s"] > 0 for m in ("engine-1t", "engine-2t", "generate", "stream"))
            assert all(row[m]["ratio"] > 0 for m in ("generate", "stream"))
            assert 0 <= row["repeat_share"] <= 1 and all(0 <= row[m]["repeat_share"] <= 1 for m in ("generate", "stream"))
    assert "T=1" in text and "T=0" in text and "repeat share" in text
    if ray_cpus is not None:
        background, compute = str(ray_cpus[0]), str(compute_cpus[0])
        threads = result["replica_thread_cpus"]
        assert "Verifier" in threads and any(k.startswith("Drafter-") for k in threads)
        for name, counts in threads.items():
            assert set(counts) == {background, compute}, f"{name}: every thread on Ray's CPU but compute's"
            assert counts[compute] == 1 if name == "Verifier" else counts[compute] >= 1
        assert "pinned to" in text
