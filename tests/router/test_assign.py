"""Drafter assignment on the tiny zoo, and the `specroute tasks` commands end to end (detect from
a prompt file or from Redis's query log, assign, route)."""

import json

from router.assign import MODES, PLAIN_DRAFTER, RoutingTable
from router.detect import load_tasks
from router.stats import RequestRecord, RoutingStats
from specroute.offline.assign import assign_drafters, zoo_drafters
from specroute.cli import main


def test_assignment_picks_the_fastest_measured_drafter_per_task_and_mode(built_zoo, tasks_dir, tmp_path):
    tasks = load_tasks(tasks_dir)
    target, drafters, generic = zoo_drafters(built_zoo)
    assert generic == "generic-llama"
    table = assign_drafters(tasks.samples(), target, drafters, generic, tasks.version, prompts_per_task=1,
                            max_new_tokens=6, device="cpu")
    assert set(table.modes) == set(MODES) and table.drafters["plain"] == PLAIN_DRAFTER
    names = {d.name for d in drafters}
    for mode, routes in table.modes.items():
        assert set(routes.table) == set(tasks.names)
        for task, drafter in routes.table.items():
            cells = routes.matrix[task]
            assert set(cells) == names | {"plain"}
            ranked = routes.eligible[task]
            assert ranked[0] == drafter
            # Every drafter faster than plain, best first; plain alone when none is.
            faster = {d for d in names if cells[d]["speedup"] > 1.0}
            assert set(ranked) == (faster or {"plain"}), (mode, task)
            speedups = [cells[d]["speedup"] for d in ranked]
            assert speedups == sorted(speedups, reverse=True)
    table.save(tmp_path / "routing.json")
    assert RoutingTable.load(tmp_path) == table


def test_tasks_commands_end_to_end(built_zoo, tmp_path, capsys, redis_url):
    out = tmp_path / "tasks"
    assert main(["tasks", "detect", "--prompts", str(built_zoo / "corpus" / "train.jsonl"), "--out", str(out),
                 "--k-max", "8"]) == 0
    assert "tasks in" in capsys.readouterr().out
    assert main(["tasks", "assign", "--tasks", str(out), "--zoo", str(built_zoo), "--prompts", "1",
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert (out / "routing.json").is_file()
    capsys.readouterr()
    assert main(["tasks", "route", "--tasks", str(out), "--prompt", "def parse(self, text):",
                 "--redis-url", redis_url]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["source"] in ("classifier", "low-confidence") and decision["drafter"]
    assert main(["tasks", "route", "--tasks", str(out), "--prompt", "x", "--drafter", "nope"]) == 2
    assert "unknown drafter 'nope'" in capsys.readouterr().err

    # Re-detection on served traffic: the query log in Redis.
    stats = RoutingStats(redis_url)
    lines = (built_zoo / "corpus" / "train.jsonl").read_text().splitlines()[:400]
    for line in lines:
        stats.record(RequestRecord("t", "d", 2.0, 10, 5, 0.1, json.loads(line)["prompt"]))
    again = tmp_path / "again"
    assert main(["tasks", "detect", "--from-redis", redis_url, "--out", str(again), "--k-max", "6"]) == 0
    assert load_tasks(again).meta["num_prompts"] == 400


def test_tasks_detect_needs_exactly_one_source(tmp_path, capsys):
    assert main(["tasks", "detect", "--out", str(tmp_path)]) == 2
    assert "exactly one of --prompts" in capsys.readouterr().err


def test_a_steered_drafter_directory_is_measured_and_routable_by_name(built_zoo, tasks_dir, tmp_path, capsys):
    """The zoo's own routing leaves its steered drafters out; a user routes one by naming its directory."""
    out = tmp_path / "routing.json"
    assert main(["tasks", "assign", "--tasks", str(tasks_dir), "--target", str(built_zoo / "target"),
                 "--drafter", f"generic={built_zoo / 'generic-llama'}",
                 "--drafter", f"steered={built_zoo / 'steered-generic-llama'}",
                 "--prompts", "1", "--max-new-tokens", "6", "--device", "cpu", "--out", str(out)]) == 0
    table = RoutingTable.load(out)
    assert table.drafters["steered"]["kind"] == "steered"
    assert all("steered" in cells for routes in table.modes.values() for cells in routes.matrix.values())
