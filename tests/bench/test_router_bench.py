"""The router benchmark runs end to end on the tiny zoo and writes its results (not a timing test)."""

import json

from bench.router import run_router_bench


def test_router_bench_writes_results(built_zoo, tmp_path):
    results = run_router_bench(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=6, out=tmp_path,
                               check_sampling=False)  # test_common tests the pre-run sampling check
    for name in ("router.md", "router.json", "router.png"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "router.json").read_text())
    assert saved["lossless"] is True
    assert 0 <= saved["accuracy"] <= 1 and -1 <= saved["ari"] <= 1
    assert len(saved["per_task"]) == 6 and results["routing_table"]
    assert set(saved["by_temperature"]) == {"0", "1"} and saved["by_temperature"]["0"]["per_task"] == saved["per_task"]
    for figures in saved["by_temperature"].values():
        assert len(figures["per_task"]) == 6 and 0.0 <= figures["mean_repeat_share"] <= 1.0
        for task in figures["per_task"].values():
            assert min(task[kind]["tau"] for kind in ("routed", "generic", "oracle")) >= 1.0
    assert {"p50", "p99"} <= set(saved["latency_ms"]["4 kB"])
    text = (tmp_path / "router.md").read_text()
    assert "| ARI" in text and "per task, T=0" in text and "per task, T=1" in text
